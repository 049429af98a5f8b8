"""JPEG decode cost per core: full-size decode versus score.py's reduced-size (draft) decode.

On a GPU node the network is fast and decoding is what the CPUs spend their
time on, so this is the figure that sizes the decode threads. Measured in this
process on one thread, for the 200 benchmark images and for 12-megapixel
(4032x3024) photos, the size a phone camera writes.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.config import PROJECT_ROOT, SCORING_IMGSZ

LARGE_SIZE = (4032, 3024)
LARGE_COUNT = 10


def make_large_images(folder: Path, count: int = LARGE_COUNT) -> list[Path]:
    """12-megapixel JPEGs (quality 90) upscaled from the wheel's sample photos."""
    from ultralytics.utils import ASSETS

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        source = Image.open(Path(ASSETS) / ("bus.jpg", "zidane.jpg")[index % 2]).convert("RGB")
        size = LARGE_SIZE if source.width >= source.height else LARGE_SIZE[::-1]
        path = folder / f"large_{index:02d}.jpg"
        source.resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def _rate(paths: list[Path], decode, passes: int = 3) -> dict[str, float]:
    """Best of `passes` over the files (bytes already in memory)."""
    blobs = [path.read_bytes() for path in paths]
    seconds, megapixels = float("inf"), 0.0
    for _ in range(passes):
        started = time.perf_counter()
        megapixels = sum(decode(data) for data in blobs) / 1e6
        seconds = min(seconds, time.perf_counter() - started)
    return {"images_per_s": round(len(blobs) / seconds, 1), "megapixels_per_s": round(megapixels / seconds, 1)}


def run(images: list[Path], work_dir: Path) -> dict[str, Any]:
    """Images/s per core: full-size decode then resize to the model size, versus score.py's decode."""
    import io

    sys.path.insert(0, str(PROJECT_ROOT / "include" / "scoring"))
    import score

    def full(data: bytes) -> int:
        image = Image.open(io.BytesIO(data))
        image.load()
        ratio = SCORING_IMGSZ / max(image.size)
        if ratio < 1:
            image.resize((round(image.width * ratio), round(image.height * ratio)), Image.Resampling.BILINEAR)
        return image.width * image.height

    def ours(data: bytes) -> int:
        decoded = score.decode(data, SCORING_IMGSZ, 100_000_000)
        return decoded.width * decoded.height

    large = make_large_images(work_dir / "large")
    return {"decode_context": {
        "threads": 1,
        "benchmark_images": {"full": _rate(images, full), "score_py": _rate(images, ours)},
        "12_megapixel": {"full": _rate(large, full), "score_py": _rate(large, ours)},
        "note": "best of 3 passes; megapixels are of the original image; 'full' decodes at full size and "
                "resizes to the model size, score.py decodes large JPEGs at 1/2..1/8 scale (draft) first",
    }}
