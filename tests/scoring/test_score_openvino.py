"""The OpenVINO runtime of score.py: the int8 export runs on OpenVINO directly, on the CPU.

score.py letterboxes and post-processes itself for this runtime (so the model
takes uint8 images and several infer requests run at once); these tests hold it
to what Ultralytics' own predictor gives for the same export, and to the
detections documented with the shipped weights.
"""
from __future__ import annotations

import sys
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from scoring_helpers import read_csv, rows_by_image, run_cli

# ../shared/models/README.md: int8 OpenVINO detections (conf=0.25, CPU) on the wheel's images.
DOCUMENTED = {
    "bus.jpg": [("bus", 0.87), ("person", 0.89), ("person", 0.88), ("person", 0.88), ("person", 0.35)],
    "zidane.jpg": [("person", 0.83), ("person", 0.82), ("person", 0.30), ("tie", 0.30)],
}


@pytest.fixture(scope="module")
def ov_detector(score: ModuleType, openvino_weights_path: Path):
    return score.load_model(openvino_weights_path, "cpu")


@pytest.fixture(scope="module")
def dynamic_detector(score: ModuleType, dynamic_openvino_weights: Path):
    return score.load_model(dynamic_openvino_weights, "cpu")


def test_cli_with_openvino_weights_gives_the_documented_detections(
    tmp_path: Path, assets_dir: Path, openvino_weights_path: Path
) -> None:
    result = run_cli("--images", str(assets_dir), "--output", "out.csv", "--weights", str(openvino_weights_path),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, rows = read_csv(tmp_path / "out.csv")
    found = rows_by_image(rows)
    assert sorted(found) == sorted(DOCUMENTED)
    for image, expected in DOCUMENTED.items():
        got = sorted(((row["class_name"], float(row["confidence"])) for row in found[image]),
                     key=lambda pair: (pair[0], -pair[1]))
        assert [name for name, _ in got] == [name for name, _ in expected], image
        for (_, conf), (_, documented) in zip(got, expected):
            assert conf == pytest.approx(documented, abs=0.04), (image, got)


def test_openvino_runner_matches_ultralytics_predictor_on_a_mixed_batch(
    score: ModuleType, ov_detector, openvino_weights_path: Path, zoo: Path
) -> None:
    """Same letterbox, NMS and box scaling as YOLO(folder).predict(rect=False), images of different sizes in one batch."""
    from ultralytics import YOLO

    names = ["photos/bus.jpg", "photos/zidane.jpg", "formats/gray.png", "odd/rotated.jpg", "odd/large.jpg",
             "odd/deeper/blank.png"]
    arrays = [score.decode((zoo / name).read_bytes(), 640, 10**8).pixels for name in names]
    assert len({array.shape for array in arrays}) > 2
    ours = ov_detector.detect(arrays, 0.25)
    theirs = YOLO(str(openvino_weights_path), task="detect").predict(
        arrays, imgsz=640, conf=0.25, rect=False, device="cpu", verbose=False)
    assert sum(len(boxes.conf) for boxes in ours) > 10
    for name, mine, result in zip(names, ours, theirs):
        assert mine.cls.tolist() == result.boxes.cls.int().tolist(), name
        assert mine.conf == pytest.approx(result.boxes.conf.numpy(), abs=1e-4), name
        assert mine.xyxy == pytest.approx(result.boxes.xyxy.numpy(), abs=0.05), name


def test_a_dynamic_export_scores_each_image_at_its_own_minimal_letterbox(
    score: ModuleType, dynamic_detector, dynamic_openvino_weights: Path, zoo: Path
) -> None:
    """What Ultralytics' predictor gives for one image at a time with rect=True, not the 640x640 square."""
    from ultralytics import YOLO

    assert dynamic_detector.per_image_letterbox
    names = ["photos/bus.jpg", "photos/zidane.jpg", "formats/gray.png", "odd/rotated.jpg", "odd/large.jpg"]
    arrays = [score.decode((zoo / name).read_bytes(), 640, 10**8).pixels for name in names]
    ours = dynamic_detector.detect(arrays, 0.25)  # one call: a mixed batch changes nothing
    model = YOLO(str(dynamic_openvino_weights), task="detect")
    assert sum(len(boxes.conf) for boxes in ours) > 10
    for name, array, mine in zip(names, arrays, ours):
        result = model.predict(array, imgsz=640, conf=0.25, rect=True, device="cpu", verbose=False)[0]
        # Within bf16 rounding: OpenVINO's CPU plugin runs these exports in bf16 where the CPU has it.
        assert mine.cls.tolist() == result.boxes.cls.int().tolist(), name
        assert mine.conf == pytest.approx(result.boxes.conf.numpy(), abs=0.01), name
        assert mine.xyxy == pytest.approx(result.boxes.xyxy.numpy(), abs=2.0), name


@pytest.mark.parametrize("export", ["static int8", "dynamic"])
def test_openvino_rows_do_not_depend_on_batch_size(
    score: ModuleType, ov_detector, dynamic_detector, zoo: Path, export: str
) -> None:
    detector = ov_detector if export == "static int8" else dynamic_detector
    paths = sorted((zoo / "photos").glob("*.jpg")) + sorted((zoo / "formats").glob("*"))
    one = list(score.score_paths(detector, paths, score.Settings(batch_size=1), root=zoo))
    eight = list(score.score_paths(detector, paths, score.Settings(batch_size=8), root=zoo))
    assert one == eight
    assert {row[1] for row in one} == {"ok"}


def test_openvino_uses_the_users_thread_count(
    score: ModuleType, openvino_weights_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules["yolo_scoring.runtime"], "USER_THREADS", "1")
    assert score.load_model(openvino_weights_path, "cpu").threads == 1
    monkeypatch.setattr(sys.modules["yolo_scoring.runtime"], "USER_THREADS", None)
    assert score.load_model(openvino_weights_path, "cpu").threads == score._cpu_count()
    monkeypatch.setattr(sys.modules["yolo_scoring.runtime"], "USER_THREADS", "two")
    with pytest.raises(score.ScoringError, match="OMP_NUM_THREADS='two'"):
        score.load_model(openvino_weights_path, "cpu")


def test_openvino_weights_refuse_a_gpu_a_wrong_size_and_a_bare_folder(
    score: ModuleType, openvino_weights_path: Path, tmp_path: Path, assets_dir: Path
) -> None:
    with pytest.raises(score.ScoringError, match="run on the CPU"):
        score.load_model(openvino_weights_path, "cuda:0")
    result = run_cli("--images", str(assets_dir), "--output", "out.csv", "--weights", str(openvino_weights_path),
                     "--imgsz", "320", cwd=tmp_path)
    assert result.returncode == 1
    assert "--imgsz 320 does not fit" in result.stderr and "640x640" in result.stderr
    assert not (tmp_path / "out.csv").exists()
    bare = tmp_path / "bare_openvino_model"
    shutil.copytree(openvino_weights_path, bare)
    (bare / "metadata.yaml").unlink()
    with pytest.raises(score.ScoringError, match="not an Ultralytics OpenVINO export"):
        score.load_model(bare, "cpu")
