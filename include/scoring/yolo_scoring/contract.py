"""What the scoring script and the merge agree on: CSV columns, statuses, image files, error rows, weights kinds.

Standard library only: it ships to the nodes inside the scoring artifact and is
imported by the Airflow side (``include.monthly.schema``, ``include.monthly.weights``),
so both read the same definitions instead of keeping copies that tests compare.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS: tuple[str, ...] = (
    "image", "status", "class_id", "class_name", "confidence",
    "x1", "y1", "x2", "y2", "image_width", "image_height", "error",
)
STATUS_OK = "ok"          # one row per detection
STATUS_EMPTY = "empty"    # one row: the image was scored, nothing detected
STATUS_ERROR = "error"    # one row: the image could not be scored; `error` says why
STATUSES: frozenset[str] = frozenset({STATUS_OK, STATUS_EMPTY, STATUS_ERROR})

IMAGE_COLUMN = COLUMNS.index("image")
STATUS_COLUMN = COLUMNS.index("status")
CLASS_NAME_COLUMN = COLUMNS.index("class_name")
ERROR_COLUMN = COLUMNS.index("error")

# Files scored in a folder (any letter case); staging lists the same ones from Blob.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# An Ultralytics OpenVINO export is a folder named like this, holding a .xml, a .bin and metadata.yaml.
OPENVINO_SUFFIX = "_openvino_model"
OPENVINO_METADATA = "metadata.yaml"

Row = tuple[Any, ...]


def is_image_name(name: str) -> bool:
    """Whether a file or blob name has one of the image suffixes (any letter case)."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def has_openvino_files(path: Path) -> bool:
    """Whether a folder holds an export's metadata.yaml and a .xml (whatever the folder is called)."""
    return path.is_dir() and (path / OPENVINO_METADATA).is_file() and any(path.glob("*.xml"))


def is_openvino_export(path: Path) -> bool:
    """A *_openvino_model folder, or any folder holding an export's files (an Azure ML input folder)."""
    return path.is_dir() and (path.name.endswith(OPENVINO_SUFFIX) or has_openvino_files(path))


def error_row(image: str, reason: str, blank: Any = None) -> Row:
    """The row standing for an image that could not be scored: status ``error``, the reason last."""
    row = [blank] * len(COLUMNS)
    row[IMAGE_COLUMN], row[STATUS_COLUMN], row[ERROR_COLUMN] = image, STATUS_ERROR, reason
    return tuple(row)
