"""Seed sample months into Blob storage: real photos and variants of them.

The demo and the end-to-end tests need a month folder that looks like a real
one: dozens of images in nested folders, several formats and sizes, one file
that is not an image and one that is corrupt. Images come from the two photos
the ``ultralytics`` wheel ships (``bus.jpg``, ``zidane.jpg``), varied by a
deterministic per-month recipe so every month differs.

    python -m local_stack.demo.seed --months 2024-01 2024-02 --images 40
"""
from __future__ import annotations

import argparse
import calendar
import io
import os
import random
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from include.monthly.layout import Month, parse_month


def _assets() -> list[Image.Image]:
    from ultralytics.utils import ASSETS

    return [Image.open(Path(ASSETS) / name).convert("RGB") for name in ("bus.jpg", "zidane.jpg")]


def month_images(month: Month, count: int) -> list[tuple[str, bytes]]:
    """``count`` image blobs (name, bytes) for a month, plus one corrupt image and one text file.

    Each image sits in a folder named by its capture day (``camera-1/2024-01-17/``), as
    camera uploads often do, so the report can count images per day.
    """
    rng = random.Random(month.key)
    day_rng = random.Random(month.key + "/days")  # its own stream: the images stay as they were
    last_day = calendar.monthrange(month.year, month.month)[1]
    bases = _assets()
    blobs: list[tuple[str, bytes]] = []
    for i in range(count):
        img = bases[i % len(bases)]
        scale = rng.uniform(0.5, 1.0)
        img = img.resize((max(64, int(img.width * scale)), max(64, int(img.height * scale))))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
        if i % 7 == 3:
            img = ImageOps.grayscale(img)
        fmt, ext = {4: ("PNG", "png"), 9: ("WEBP", "webp")}.get(i % 10, ("JPEG", "jpg"))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        day = f"{month.year:04d}-{month.month:02d}-{day_rng.randint(1, last_day):02d}"
        blobs.append((f"{month.prefix}camera-{i % 4}/{day}/frame {i:03d}.{ext}", buf.getvalue()))
    blobs.append((f"{month.prefix}camera-0/corrupt.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"))
    blobs.append((f"{month.prefix}notes.txt", b"not an image: skipped and counted\n"))
    return blobs


def seed_month(service, container: str, month: Month, count: int) -> int:
    """Upload one month's sample folder (replacing it); returns the number of blobs."""
    client = service.get_container_client(container)
    if not client.exists():
        client.create_container()
    for blob in client.list_blobs(name_starts_with=month.prefix):
        client.delete_blob(blob.name)
    blobs = month_images(month, count)
    for name, data in blobs:
        client.upload_blob(name, data, overwrite=True)
    return len(blobs)


def main(argv: list[str] | None = None) -> None:
    from azure.storage.blob import BlobServiceClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", nargs="+", required=True, help="months as YYYY-MM")
    parser.add_argument("--images", type=int, default=40, help="images per month")
    parser.add_argument("--container", default="images")
    args = parser.parse_args(argv)
    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    for text in args.months:
        month = parse_month(text)
        n = seed_month(service, args.container, month, args.images)
        print(f"seeded {n} blobs under {args.container}/{month.prefix}")


if __name__ == "__main__":
    main()
