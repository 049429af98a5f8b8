"""The scoring code as one file for a node: a zipapp (``score.pyz``) of the ``yolo_scoring`` package.

A Batch task gets its code as one resource file and runs ``python3 score.pyz
...`` with the arguments of ``score.py``. The archive is built in memory from
the package's sources, deterministically (sorted names, fixed timestamps and
permissions), so the same code always gives the same bytes and digest.
Standard library only: the Airflow side and the image build call it.
"""
from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

SCORING_DIR = Path(__file__).resolve().parent
PACKAGE = SCORING_DIR / "yolo_scoring"
ARTIFACT_NAME = "score.pyz"
_SHEBANG = b"#!/usr/bin/env python3\n"
_STAMP = (1980, 1, 1, 0, 0, 0)  # the oldest time a zip can hold: builds do not differ by clock
_MAIN = "from yolo_scoring.cli import main\nimport sys\n\nsys.exit(main())\n"


def sources() -> list[Path]:
    """The package's Python files, in a stable order."""
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def build() -> bytes:
    """The zipapp's bytes: ``__main__.py`` runs the command line, the package sits beside it."""
    buffer = io.BytesIO()
    buffer.write(_SHEBANG)
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(_entry("__main__.py"), _MAIN)
        for path in sources():
            archive.writestr(_entry(path.relative_to(SCORING_DIR).as_posix()), path.read_bytes())
    return buffer.getvalue()


def digest() -> str:
    """sha256 of the artifact: what a run's code is, in one value."""
    return hashlib.sha256(build()).hexdigest()


def write(target: Path) -> Path:
    """Write the artifact to `target` (a file, or a folder to hold ``score.pyz``) and return its path."""
    path = target / ARTIFACT_NAME if target.is_dir() else target
    path.write_bytes(build())
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
