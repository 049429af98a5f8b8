"""Where rows go: a CSV renamed into place only when complete, and the counts for the closing summary."""
from __future__ import annotations

import csv
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .contract import COLUMNS, STATUS_EMPTY, STATUS_ERROR, STATUS_OK, Row
from .errors import ScoringError


class CsvOutput:
    """A CSV written to a temp file beside the target and renamed into place when complete."""

    def __init__(self, target: Path) -> None:
        self.target = target
        try:
            if target.is_dir():
                raise IsADirectoryError(21, "is a directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in commit/abort
                "w", encoding="utf-8", newline="", dir=target.parent, prefix=f".{target.name}.", suffix=".partial",
                delete=False,
            )
        except OSError as exc:
            raise ScoringError(f"cannot write output {target}: {exc.strerror or exc}") from None
        self._handle = handle
        self._writer = csv.writer(handle, lineterminator="\n")
        self._writer.writerow(COLUMNS)

    def write(self, rows: Iterable[Row]) -> None:
        self._writer.writerows(rows)

    def commit(self) -> None:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.chmod(self._handle.name, 0o644)
            os.replace(self._handle.name, self.target)
        except OSError as exc:
            self.abort()
            raise ScoringError(f"cannot write output {self.target}: {exc.strerror or exc}") from None

    def abort(self) -> None:
        self._handle.close()
        Path(self._handle.name).unlink(missing_ok=True)


@dataclass
class RunStats:
    """Counts for the closing summary line and the per-class summary."""

    images: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # ok / empty / error images
    classes: Counter[str] = field(default_factory=Counter)  # detections per class name

    def add(self, rows: Sequence[Row]) -> None:
        self.images += 1
        self.statuses[rows[0][1]] += 1
        if rows[0][1] == STATUS_OK:
            self.classes.update(row[3] for row in rows)

    def line(self) -> str:
        ok, empty, error = (self.statuses[k] for k in (STATUS_OK, STATUS_EMPTY, STATUS_ERROR))
        return f"{self.images} images ({ok} ok, {empty} empty, {error} error), {self.classes.total()} detections"
