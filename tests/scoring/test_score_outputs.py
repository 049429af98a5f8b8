"""What a user reads in predictions.csv: schema, real detections, one accounted row set per file.

The zoo is scored once through the command-line entry point (in process, so
the model loads once per run) and every test reads that CSV.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image
from scoring_helpers import BAD_FILES, GOOD_FORMATS, box, iou, read_csv, rows_by_image

ISSUE_COLUMNS = [
    "image", "status", "class_id", "class_name", "confidence",
    "x1", "y1", "x2", "y2", "image_width", "image_height", "error",
]


@pytest.fixture(scope="module")
def zoo_csv(score: ModuleType, zoo: Path, weights_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo-out") / "predictions.csv"
    status = score.main([
        "--images", str(zoo), "--output", str(out), "--weights", str(weights_path),
        "--device", "cpu", "--batch-size", "4", "--workers", "2",
    ])
    assert status == 0
    return out


@pytest.fixture(scope="module")
def zoo_rows(zoo_csv: Path) -> dict[str, list[dict[str, str]]]:
    return rows_by_image(read_csv(zoo_csv)[1])


def expected_zoo_images(zoo: Path) -> list[str]:
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
    return sorted(p.relative_to(zoo).as_posix() for p in zoo.rglob("*") if p.suffix.lower() in suffixes)


def test_header_is_exactly_the_issue_schema(score: ModuleType, zoo_csv: Path) -> None:
    assert list(score.COLUMNS) == ISSUE_COLUMNS
    first_line = zoo_csv.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == ",".join(ISSUE_COLUMNS)
    assert zoo_csv.read_text(encoding="utf-8").count(first_line) == 1


def test_every_image_file_appears_once_and_nothing_else(zoo: Path, zoo_rows: dict) -> None:
    assert sorted(zoo_rows) == expected_zoo_images(zoo)
    assert "notes.txt" not in zoo_rows


def test_rows_appear_in_sorted_walk_order(zoo_csv: Path) -> None:
    names = [row["image"] for row in read_csv(zoo_csv)[1]]
    order = list(dict.fromkeys(names))
    # Directories are walked in sorted order, files sorted within each directory.
    assert order.index("bad/bomb.png") < order.index("formats/cmyk.jpg") < order.index("odd/large.jpg")
    assert order.index("odd/large.jpg") < order.index("odd/rotated.jpg") < order.index("odd/deeper/blank.png")
    assert order.index("photos/bus.jpg") < order.index("photos/zidane.jpg")


def test_each_image_is_ok_rows_or_one_empty_or_one_error(zoo_rows: dict) -> None:
    for name, rows in zoo_rows.items():
        statuses = {row["status"] for row in rows}
        assert statuses in ({"ok"}, {"empty"}, {"error"}), name
        if statuses != {"ok"}:
            assert len(rows) == 1, name


def test_bus_has_a_bus_and_persons_with_plausible_boxes(zoo_rows: dict) -> None:
    rows = zoo_rows["photos/bus.jpg"]
    classes = [row["class_name"] for row in rows]
    assert "bus" in classes and classes.count("person") >= 3
    for row in rows:
        assert (row["image_width"], row["image_height"]) == ("810", "1080")
        x1, y1, x2, y2 = box(row)
        assert 0 <= x1 < x2 <= 810 and 0 <= y1 < y2 <= 1080
        assert 0.25 <= float(row["confidence"]) <= 1.0
        assert row["class_id"] == {"person": "0", "bus": "5"}.get(row["class_name"], row["class_id"])
        assert row["error"] == ""
    bus = next(row for row in rows if row["class_name"] == "bus")
    x1, y1, x2, y2 = box(bus)
    assert x2 - x1 > 0.6 * 810  # the bus spans most of the photo's width


def test_zidane_has_persons_and_a_tie(zoo_rows: dict) -> None:
    rows = zoo_rows["photos/zidane.jpg"]
    classes = [row["class_name"] for row in rows]
    assert classes.count("person") >= 2 and "tie" in classes
    for row in rows:
        x1, y1, x2, y2 = box(row)
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720


@pytest.mark.parametrize("name", sorted(GOOD_FORMATS))
def test_odd_pixel_formats_score_like_the_photo(name: str, zoo: Path, zoo_rows: dict) -> None:
    with Image.open(zoo / name) as image:
        assert image.mode == GOOD_FORMATS[name]  # the file really is in the odd format
    rows = zoo_rows[name]
    assert {row["status"] for row in rows} == {"ok"}
    assert "person" in [row["class_name"] for row in rows]
    assert (rows[0]["image_width"], rows[0]["image_height"]) == ("810", "1080")
    reference = [box(r) for r in zoo_rows["photos/bus.jpg"] if r["class_name"] == "person"]
    for row in rows:
        if row["class_name"] == "person" and float(row["confidence"]) > 0.8:
            assert max(iou(box(row), ref) for ref in reference) > 0.7


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_error_rows_that_say_why(name: str, zoo_rows: dict) -> None:
    [row] = zoo_rows[name]
    assert row["status"] == "error"
    assert BAD_FILES[name] in row["error"]
    assert row["class_name"] == row["x1"] == row["image_width"] == ""


def test_exif_rotated_photo_is_scored_upright(zoo: Path, zoo_rows: dict) -> None:
    with Image.open(zoo / "odd" / "rotated.jpg") as stored:
        assert stored.size == (1080, 810)  # pixels are stored sideways
    rows = zoo_rows["odd/rotated.jpg"]
    assert (rows[0]["image_width"], rows[0]["image_height"]) == ("810", "1080")
    for row in rows:
        x1, y1, x2, y2 = box(row)
        assert 0 <= x1 < x2 <= 810 and 0 <= y1 < y2 <= 1080
    bus = next(r for r in rows if r["class_name"] == "bus")
    reference = next(r for r in zoo_rows["photos/bus.jpg"] if r["class_name"] == "bus")
    assert iou(box(bus), box(reference)) > 0.8  # same place as in the upright original


def test_very_large_photo_boxes_are_in_its_own_pixels(zoo_rows: dict) -> None:
    rows = zoo_rows["odd/large.jpg"]
    assert (rows[0]["image_width"], rows[0]["image_height"]) == ("4050", "5400")
    bus = next(r for r in rows if r["class_name"] == "bus")
    reference = next(r for r in zoo_rows["photos/bus.jpg"] if r["class_name"] == "bus")
    scaled = tuple(v * 5 for v in box(reference))
    assert iou(box(bus), scaled) > 0.8


def test_image_without_objects_is_one_empty_row_with_its_size(zoo_rows: dict) -> None:
    [row] = zoo_rows["odd/deeper/blank.png"]
    assert row["status"] == "empty"
    assert (row["image_width"], row["image_height"]) == ("320", "240")
    assert row["class_name"] == row["confidence"] == row["error"] == ""


def test_batch_size_does_not_change_detections(
    score: ModuleType, zoo: Path, weights_path: Path, zoo_rows: dict, tmp_path: Path
) -> None:
    manifest = tmp_path / "list.txt"
    names = ["photos/bus.jpg", "bad/corrupt.png", "photos/zidane.jpg", "odd/rotated.jpg", "formats/cmyk.jpg"]
    manifest.write_text("\n".join(names) + "\n")
    out = tmp_path / "b1.csv"
    assert score.main([
        "--images", str(manifest), "--root", str(zoo), "--output", str(out),
        "--weights", str(weights_path), "--device", "cpu", "--batch-size", "1", "--workers", "1",
    ]) == 0
    single = rows_by_image(read_csv(out)[1])
    assert list(single) == names
    for name in names:
        one = sorted(single[name], key=lambda r: (r["class_name"], float(r["x1"] or 0)))
        four = sorted(zoo_rows[name], key=lambda r: (r["class_name"], float(r["x1"] or 0)))
        assert {r["status"] for r in one} == {r["status"] for r in four}, name
        assert [r["class_name"] for r in one] == [r["class_name"] for r in four], name
        for a, b in zip(one, four):
            assert abs(float(a["confidence"] or 0) - float(b["confidence"] or 0)) < 0.01
            if a["status"] == "ok":
                assert max(abs(x - y) for x, y in zip(box(a), box(b))) < 2.0
