"""The 200 benchmark images: deterministic crops and rescales of the wheel's bus.jpg and zidane.jpg."""
from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from bench.config import IMAGE_LONG_SIDES, IMAGE_SEED, SCORING_IMAGES


def make_images(folder: Path, count: int = SCORING_IMAGES, seed: int = IMAGE_SEED) -> list[Path]:
    """Write `count` JPEGs into folder; the same seed always gives the same files.

    Each image is a random crop (60-100 % of each side) of one of the two sample
    photos, resized so its long side is one of IMAGE_LONG_SIDES, saved at quality 90.
    """
    from ultralytics.utils import ASSETS

    sources = [Image.open(Path(ASSETS) / name).convert("RGB") for name in ("bus.jpg", "zidane.jpg")]
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        width, height = source.size
        crop_w, crop_h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
        left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        image = source.crop((left, top, left + crop_w, top + crop_h))
        long_side = IMAGE_LONG_SIDES[index % len(IMAGE_LONG_SIDES)]
        ratio = long_side / max(image.size)
        image = image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                             Image.Resampling.BICUBIC)
        path = folder / f"img_{index:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def describe_images(paths: list[Path]) -> dict[str, object]:
    """Sizes of the generated set, for the results' context."""
    sizes = [Image.open(path).size for path in paths]
    pixels = [w * h for w, h in sizes]
    return {
        "count": len(paths),
        "long_sides_px": sorted({max(size) for size in sizes}),
        "min_size": list(min(sizes, key=lambda s: s[0] * s[1])),
        "max_size": list(max(sizes, key=lambda s: s[0] * s[1])),
        "mean_megapixels": round(sum(pixels) / len(pixels) / 1e6, 3),
        "total_bytes": sum(path.stat().st_size for path in paths),
    }
