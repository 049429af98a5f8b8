"""The PyTorch runtime of score.py on a CPU: each image alone, at Ultralytics' default letterbox.

A CPU gains nothing from batching, so score.py runs a CPU batch image by image,
each at its own minimal letterbox; these tests hold it to Ultralytics' own
predictor for one image and to the detections documented with the shipped weights.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from scoring_helpers import read_csv, rows_by_image, run_cli

# ../shared/models/README.md: yolov8n.pt detections (default letterbox, conf=0.25, CPU), those above 0.5.
DOCUMENTED_CONFIDENT = {
    "bus.jpg": [("bus", 0.90), ("person", 0.88), ("person", 0.87), ("person", 0.85)],
    "zidane.jpg": [("person", 0.84), ("person", 0.83)],
}


def test_a_cpu_batch_gives_what_ultralytics_gives_each_image_alone(
    score: ModuleType, detector, weights_path: Path, zoo: Path
) -> None:
    from ultralytics import YOLO

    names = ["photos/bus.jpg", "photos/zidane.jpg", "formats/gray.png", "odd/rotated.jpg", "odd/large.jpg"]
    arrays = [score.decode((zoo / name).read_bytes(), 640, 10**8).pixels for name in names]
    ours = detector.detect(arrays, 0.25)  # one mixed batch
    model = YOLO(str(weights_path), task="detect")
    assert sum(len(boxes.conf) for boxes in ours) > 10
    for name, array, mine in zip(names, arrays, ours):
        alone = model.predict(array, imgsz=640, conf=0.25, device="cpu", verbose=False)[0]
        assert mine.cls.tolist() == alone.boxes.cls.int().tolist(), name
        assert mine.conf == pytest.approx(alone.boxes.conf.numpy(), abs=1e-4), name
        assert mine.xyxy == pytest.approx(alone.boxes.xyxy.numpy(), abs=0.05), name


def test_cli_on_a_cpu_gives_the_documented_detections(tmp_path: Path, assets_dir: Path, weights_path: Path) -> None:
    result = run_cli("--images", str(assets_dir), "--output", "out.csv", "--weights", str(weights_path),
                     "--device", "cpu", "--batch-size", "8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = rows_by_image(read_csv(tmp_path / "out.csv")[1])
    assert sorted(found) == sorted(DOCUMENTED_CONFIDENT)
    for image, expected in DOCUMENTED_CONFIDENT.items():
        got = sorted(((row["class_name"], float(row["confidence"])) for row in found[image]
                      if float(row["confidence"]) > 0.5), key=lambda pair: (pair[0], -pair[1]))
        assert [name for name, _ in got] == [name for name, _ in expected], image
        for (_, conf), (_, documented) in zip(got, expected):
            assert conf == pytest.approx(documented, abs=0.03), (image, got)
