"""The predictions CSV schema on the merge side: the scoring contract's definitions, plus redaction.

The columns, statuses and error-row shape live in one place,
``include/scoring/yolo_scoring/contract.py`` (stdlib only, shipped to the
nodes with the scoring code); this module gives them the merge's names and
adds what only the merge does: masking secrets and bounding reasons.
"""
from __future__ import annotations

import re

from include.monthly.config import MAX_ERROR_REASON_CHARS
from include.scoring.yolo_scoring import contract
from include.scoring.yolo_scoring.contract import (  # noqa: F401 - the merge's names for the contract's
    CLASS_NAME_COLUMN,
    IMAGE_COLUMN,
    IMAGE_SUFFIXES,
    STATUS_COLUMN,
    STATUS_EMPTY,
    STATUS_ERROR,
    STATUS_OK,
    STATUSES,
)

PREDICTION_COLUMNS: tuple[str, ...] = contract.COLUMNS

# SAS signatures and account keys must never be copied from a stderr tail into the CSV.
_SECRET_RE = re.compile(r"(?i)\b(sig|accountkey|sharedaccesssignature)=([^&;\s\"']+)")


def redact(text: str) -> str:
    """Mask SAS signatures and account keys that a failure message may quote."""
    return _SECRET_RE.sub(lambda m: f"{m.group(1)}=***", text)


def error_row(image: str, reason: str) -> list[str]:
    """The row standing for an image whose shard failed: status `error`, reason kept (redacted, bounded)."""
    return list(contract.error_row(image, redact(reason)[:MAX_ERROR_REASON_CHARS], blank=""))
