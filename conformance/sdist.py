"""Fetch the pinned azure-batch source distribution from the package index and extract its test suite.

Only the suite's own files are extracted (into .local/, never committed): the tests, their async helpers
and decorators, and their conftest. Its `batch_preparers.py` (ARM) is replaced by conformance/standin.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

SUITE_FILES = ("tests/test_batch.py", "tests/async_wrapper.py", "tests/decorators.py", "tests/conftest.py")


def installed_version() -> str:
    from importlib.metadata import version

    return version("azure-batch")


def fetch(cache: Path, version: str) -> Path:
    """The sdist for `version` in `cache`, downloaded with pip when it is not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"azure_batch-{version}.tar.gz")) + sorted(cache.glob(f"azure-batch-{version}.tar.gz"))
    if found:
        return found[0]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"azure-batch=={version}", "--dest", str(cache)], check=True)
    found = sorted(cache.glob(f"azure[_-]batch-{version}.tar.gz"))
    if not found:
        raise FileNotFoundError(f"pip did not leave an azure-batch {version} sdist in {cache}")
    return found[0]


def extract_suite(sdist: Path, dest: Path) -> Path:
    """Write the suite's files, unchanged, to dest; returns the path of test_batch.py."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            relative = member.name.split("/", 1)[-1]
            if relative in SUITE_FILES:
                (dest / Path(relative).name).write_bytes(archive.extractfile(member).read())
    missing = [name for name in SUITE_FILES if not (dest / Path(name).name).exists()]
    if missing:
        raise FileNotFoundError(f"{sdist.name} has no {', '.join(missing)}")
    return dest / "test_batch.py"
