"""Helpers shared by the scoring tests: expected zoo contents, CSV readers, the CLI runner."""
from __future__ import annotations

import csv
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT_ROOT / "include" / "scoring" / "score.py"

# Files of the zoo that must score with detections, and those that must be error rows.
GOOD_FORMATS = {
    "formats/gray.png": "L",
    "formats/gray16.png": "I;16",
    "formats/cmyk.jpg": "CMYK",
    "formats/rgba.png": "RGBA",
    "formats/palette.png": "P",
    "formats/photo.webp": "RGB",
    "formats/photo.tif": "RGB",
    "formats/UPPER CASE.JPEG": "RGB",
}
BAD_FILES = {
    "bad/random-bytes.jpg": "not an image",
    "bad/corrupt.png": "corrupt",
    "bad/truncated.jpg": "truncated",
    "bad/empty.jpg": "empty file",
    "bad/list-of-paths.png": "not an image",
    "bad/bomb.png": "too large",
    "bad/pipe.jpg": "not a regular file",
}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds almost no data (a decompression bomb)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of an output CSV, read as plain text (no type guessing)."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def rows_by_image(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row["image"], []).append(row)
    return grouped


def box(row: dict[str, str]) -> tuple[float, float, float, float]:
    return tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))  # type: ignore[return-value]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run score.py as its own process, frugally (one torch thread)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300,
    )
