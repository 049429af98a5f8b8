"""The predictions CSV schema shared by the scorer's shard files and the merged output.

The scoring script (include/scoring/score.py) is shipped alone to the nodes, so it
carries its own copy of these columns; tests check the two agree.
"""
from __future__ import annotations

import re

from include.monthly.layout import MAX_ERROR_REASON_CHARS

PREDICTION_COLUMNS: tuple[str, ...] = (
    "image",
    "status",
    "class_id",
    "class_name",
    "confidence",
    "x1",
    "y1",
    "x2",
    "y2",
    "image_width",
    "image_height",
    "error",
)
STATUS_OK = "ok"          # one row per detection
STATUS_EMPTY = "empty"    # one row: the image was scored, nothing detected
STATUS_ERROR = "error"    # one row: the image could not be scored; `error` says why
STATUSES: frozenset[str] = frozenset({STATUS_OK, STATUS_EMPTY, STATUS_ERROR})

IMAGE_COLUMN = PREDICTION_COLUMNS.index("image")
STATUS_COLUMN = PREDICTION_COLUMNS.index("status")
CLASS_NAME_COLUMN = PREDICTION_COLUMNS.index("class_name")

# SAS signatures and account keys must never be copied from a stderr tail into the CSV.
_SECRET_RE = re.compile(r"(?i)\b(sig|accountkey|sharedaccesssignature)=([^&;\s\"']+)")


def redact(text: str) -> str:
    """Mask SAS signatures and account keys that a failure message may quote."""
    return _SECRET_RE.sub(lambda m: f"{m.group(1)}=***", text)


def error_row(image: str, reason: str) -> list[str]:
    """The row standing for an image whose shard failed: status `error`, reason kept."""
    row = [""] * len(PREDICTION_COLUMNS)
    row[IMAGE_COLUMN] = image
    row[STATUS_COLUMN] = STATUS_ERROR
    row[-1] = redact(reason)[:MAX_ERROR_REASON_CHARS]
    return row
