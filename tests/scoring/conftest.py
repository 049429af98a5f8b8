"""Fixtures for the scoring script: the module, one loaded model, and a zoo of test images.

Every image is generated with Pillow from the bus/zidane photos that the
ultralytics wheel ships, so the detections are real.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from scoring_helpers import png_header_only


@pytest.fixture(scope="session")
def score() -> ModuleType:
    """The scoring script, imported as a module."""
    from include.scoring import score as module

    return module


@pytest.fixture(scope="session")
def detector(score: ModuleType, weights_path: Path):
    """One loaded YOLO model for the whole session (loading is the slow part)."""
    return score.load_model(weights_path, "cpu")


@pytest.fixture(scope="session")
def dynamic_openvino_weights(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Path:
    """The shipped yolov8n.pt exported the way the README tells CPU users to (OpenVINO, dynamic input), offline."""
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("export")
    shutil.copy(weights_path, folder / weights_path.name)
    return Path(YOLO(str(folder / weights_path.name)).export(format="openvino", imgsz=640, dynamic=True))


def rotated_with_exif(source: Image.Image) -> Image.Image:
    """Pixels stored turned 90 degrees counter-clockwise; EXIF orientation 6 says to turn them back."""
    return source.transpose(Image.Transpose.ROTATE_90)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory, assets_dir: Path) -> Path:
    """A folder of good, odd and bad images (plus a .txt that the directory scan must skip)."""
    root = tmp_path_factory.mktemp("zoo")
    bus = Image.open(assets_dir / "bus.jpg").convert("RGB")
    for sub in ("photos", "formats", "bad", "odd/deeper"):
        (root / sub).mkdir(parents=True)
    shutil.copy(assets_dir / "bus.jpg", root / "photos" / "bus.jpg")
    shutil.copy(assets_dir / "zidane.jpg", root / "photos" / "zidane.jpg")

    bus.convert("L").save(root / "formats" / "gray.png")
    gray16 = np.asarray(bus.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray16).save(root / "formats" / "gray16.png")
    bus.convert("CMYK").save(root / "formats" / "cmyk.jpg", quality=92)
    rgba = bus.copy()
    rgba.putalpha(255)
    rgba.save(root / "formats" / "rgba.png")
    bus.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(root / "formats" / "palette.png")
    bus.save(root / "formats" / "photo.webp", quality=90)
    bus.save(root / "formats" / "photo.tif")
    bus.save(root / "formats" / "UPPER CASE.JPEG", quality=92)

    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_with_exif(bus).save(root / "odd" / "rotated.jpg", quality=92, exif=exif.tobytes())
    bus.resize((bus.width * 5, bus.height * 5), Image.Resampling.BILINEAR).save(
        root / "odd" / "large.jpg", quality=85
    )
    Image.new("RGB", (320, 240), (127, 127, 127)).save(root / "odd" / "deeper" / "blank.png")

    good = (assets_dir / "bus.jpg").read_bytes()
    (root / "bad" / "random-bytes.jpg").write_bytes(os.urandom(4096))
    png = io.BytesIO()
    bus.convert("L").resize((200, 150)).save(png, format="PNG")
    broken = bytearray(png.getvalue())
    start = broken.index(b"IDAT") + 200
    broken[start:start + 50] = b"\xff" * 50  # damage the compressed pixel data
    (root / "bad" / "corrupt.png").write_bytes(bytes(broken))
    (root / "bad" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "bad" / "empty.jpg").write_bytes(b"")
    (root / "bad" / "list-of-paths.png").write_text("../photos/bus.jpg\n/etc/passwd\nphotos/zidane.jpg\n")
    (root / "bad" / "bomb.png").write_bytes(png_header_only(30_000, 30_000))
    os.mkfifo(root / "bad" / "pipe.jpg")  # reading it would block forever
    (root / "notes.txt").write_text("photos/bus.jpg\n")  # not an image suffix: never scanned
    return root


