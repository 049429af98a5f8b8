"""Decode on the model's device (SCORING_DECODE_ON_DEVICE): batched torchvision decode, per-image fallback.

On a GPU node this is nvJPEG; here the same code runs torchvision's CPU decoder, which
tests everything but the chip: which files take the device path, the EXIF orientation applied
after decode, the shrink, the fallback when a JPEG fails (the whole batch call fails, then image
by image, then the CPU path), and that the detections agree with score.py's own decode.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from scoring_helpers import BAD_FILES, GOOD_FORMATS

# Boxes from the two decoders may differ by a few pixels (full decode + area shrink on the device versus
# reduced-scale draft decode + OpenCV's area filter); a detection agrees when it has the same class and
# IoU >= 0.85 with one of the other path's, and its confidence is within 0.05.
MIN_IOU, MAX_CONF_GAP = 0.85, 0.05
MIN_AGREEING_SHARE = 0.9


def _items(score: ModuleType, zoo: Path, names: list[str]):
    return [score.item_for_aml_file(zoo / name, str(zoo)) for name in names]


def test_plain_jpegs_wait_for_the_device_and_everything_else_is_decoded_in_the_thread(score, zoo):
    loaded = {}
    for name in ["photos/bus.jpg", "odd/rotated.jpg", "formats/cmyk.jpg", "formats/gray.png", "formats/photo.webp"]:
        loaded[name] = score.load_item_for_device(score.item_for_aml_file(zoo / name, str(zoo)), 640, 100_000_000)
    assert isinstance(loaded["photos/bus.jpg"], score.EncodedJpeg)
    assert isinstance(loaded["odd/rotated.jpg"], score.EncodedJpeg) and loaded["odd/rotated.jpg"].orientation == 6
    for name in ("formats/cmyk.jpg", "formats/gray.png", "formats/photo.webp"):
        assert isinstance(loaded[name], score.Decoded), name  # CMYK JPEGs and other formats stay on the CPU path
    with pytest.raises(score.ImageError, match="not an image"):
        score.load_item_for_device(score.item_for_aml_file(zoo / "bad/random-bytes.jpg", str(zoo)), 640, 100_000_000)
    with pytest.raises(score.ImageError, match="empty file"):
        score.load_item_for_device(score.item_for_aml_file(zoo / "bad/empty.jpg", str(zoo)), 640, 100_000_000)


def test_device_decode_gives_the_cpu_decode_sizes_orientation_and_pixels(score, zoo):
    names = ["photos/bus.jpg", "photos/zidane.jpg", "odd/rotated.jpg", "odd/large.jpg", "formats/UPPER CASE.JPEG"]
    jpegs = [score.EncodedJpeg((zoo / name).read_bytes(), 1) for name in names]
    jpegs[2] = score.EncodedJpeg(jpegs[2].data, 6)
    on_device = score.decode_jpegs_on_device(jpegs, 640, 100_000_000, "cpu")
    for name, got in zip(names, on_device):
        expected = score.decode((zoo / name).read_bytes(), 640, 100_000_000)
        assert isinstance(got, score.Decoded), (name, got)
        assert (got.width, got.height) == (expected.width, expected.height), name
        # The CPU path shrinks from the reduced-scale draft, so a side may round one pixel apart.
        assert got.pixels.dtype == np.uint8 and got.pixels.shape[2] == 3, name
        assert all(abs(a - b) <= 1 for a, b in zip(got.pixels.shape[:2], expected.pixels.shape[:2])), name
        same_size = cv2.resize(got.pixels, expected.pixels.shape[1::-1], interpolation=cv2.INTER_AREA)
        # Same picture, same way up, same channel order (BGR): small differences of filter and IDCT only.
        gap = np.abs(same_size.astype(np.int16) - expected.pixels.astype(np.int16)).mean()
        assert gap < 6, (name, gap)


def test_a_bad_jpeg_fails_alone_and_takes_the_cpu_path_with_its_reason(score, zoo, assets_dir):
    good = (assets_dir / "bus.jpg").read_bytes()
    truncated = (zoo / "bad/truncated.jpg").read_bytes()
    garbage = b"\xff\xd8\xff" + bytes(4000)
    results = score.decode_jpegs_on_device(
        [score.EncodedJpeg(good, 1), score.EncodedJpeg(garbage, 1), score.EncodedJpeg(truncated, 1)],
        640, 100_000_000, "cpu")
    assert isinstance(results[0], score.Decoded)  # the good image of the failed call is still decoded
    assert isinstance(results[1], str) and "image" in results[1]  # the CPU path's reason
    # torchvision may decode a truncated JPEG (libjpeg fills the rest in grey) or refuse it; either way nothing is lost.
    assert isinstance(results[2], (score.Decoded, str))


def _detections(rows) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for row in rows:
        entries = found.setdefault(row[0], [])
        if row[1] == "ok":
            entries.append((row[2], row[4], tuple(row[5:9])))
    return found


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def test_scoring_with_device_decode_agrees_with_cpu_decode_and_keeps_every_row(score, detector, zoo):
    names = sorted(["photos/bus.jpg", "photos/zidane.jpg", "odd/rotated.jpg", "odd/large.jpg",
                    *GOOD_FORMATS, *[name for name in BAD_FILES if name != "bad/pipe.jpg"]])
    settings = score.Settings(device="cpu", batch_size=4, workers=2)
    cpu = [row for rows in score.score_items(detector, _items(score, zoo, names), settings) for row in rows]
    device = [row for rows in score.score_items(detector, _items(score, zoo, names),
                                                dataclasses.replace(settings, decode_on_device=True))
              for row in rows]
    # Every input keeps its place and its status; bad files keep the CPU path's reasons.
    def statuses(rows):
        return {(row[0], row[1] if row[1] != "ok" else "ok", row[11]) for row in rows}
    assert statuses(device) == statuses(cpu)
    # The sizes written are the original, oriented ones.
    assert {(r[0], r[9], r[10]) for r in device if r[1] != "error"} == {(r[0], r[9], r[10]) for r in cpu if r[1] != "error"}
    ours, theirs = _detections(device), _detections(cpu)
    agree = total = 0
    for image, wanted in theirs.items():
        free = list(ours.get(image, []))
        for cls, conf, box in wanted:
            total += 1
            best = max((d for d in free if d[0] == cls), key=lambda d: _iou(d[2], box), default=None)
            if best is not None and _iou(best[2], box) >= MIN_IOU and abs(best[1] - conf) <= MAX_CONF_GAP:
                free.remove(best)
                agree += 1
    assert total > 20 and agree / total >= MIN_AGREEING_SHARE, (agree, total)


def test_the_setting_reads_from_the_environment_and_a_bad_value_is_named(score):
    parser = score.build_parser({"SCORING_DECODE_ON_DEVICE": "1"})
    assert score.settings_from_args(parser.parse_args(["--images", "x", "--output", "y"])).decode_on_device
    parser = score.build_parser({})
    assert not score.settings_from_args(parser.parse_args(["--images", "x", "--output", "y"])).decode_on_device
    with pytest.raises(score.ScoringError, match="SCORING_DECODE_ON_DEVICE='maybe'"):
        score.build_parser({"SCORING_DECODE_ON_DEVICE": "maybe"})
