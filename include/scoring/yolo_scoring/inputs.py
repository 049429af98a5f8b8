"""What to score: ``Item``s from a folder, a manifest (streamed) or the files Azure ML hands to ``run()``.

A manifest line that is absolute or escapes the root becomes an error row and
is never opened; with a URL root each line is a blob name under it.
"""
from __future__ import annotations

import io
import os
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .contract import is_image_name
from .errors import ScoringError


@dataclass(frozen=True)
class Item:
    """One input: its name in the ``image`` column and where to read it from."""

    name: str
    path: Path | None = None
    url: str | None = None
    error: str | None = None  # known bad before reading (e.g. escapes the root)


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def unsafe_name_reason(name: str) -> str | None:
    """Why a manifest line may not be opened, or None when it is a plain relative path."""
    if "\x00" in name:
        return "invalid path (NUL byte)"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path not allowed (must be relative to the root)"
    if ".." in name.replace("\\", "/").split("/"):
        return "path escapes the root ('..' not allowed)"
    return None


def blob_url(root_url: str, name: str) -> str:
    """The URL of a blob name under a container/folder URL, each segment URL-quoted."""
    quoted = "/".join(urllib.parse.quote(part, safe="") for part in name.split("/"))
    return root_url.rstrip("/") + "/" + quoted


def item_for_name(name: str, root: str) -> Item:
    """An Item for a manifest line relative to a local folder or a blob URL."""
    reason = unsafe_name_reason(name)
    if reason:
        return Item(name, error=reason)
    if is_url(root):
        return Item(name, url=blob_url(root, name))
    return Item(name, path=Path(root) / name)


def iter_directory(directory: Path, root: Path | None = None) -> Iterator[Item]:
    """Image files under directory, recursively, in sorted (deterministic) order."""
    base = root or directory
    for current, dirs, files in os.walk(directory):
        dirs.sort()
        for filename in sorted(files):
            if is_image_name(filename):
                path = Path(current) / filename
                yield Item(path.relative_to(base).as_posix(), path=path)


def open_manifest(manifest: Path) -> io.TextIOWrapper:
    """Open a manifest for streaming, failing early with a message that names it."""
    try:
        return open(manifest, encoding="utf-8-sig", newline=None)  # noqa: SIM115 - streamed by caller
    except OSError as exc:
        raise ScoringError(f"cannot read manifest {manifest}: {exc.strerror or exc}") from None


def iter_manifest(lines: Iterable[str], root: str, source: str = "manifest") -> Iterator[Item]:
    """Items for manifest lines (streamed), skipping blank lines."""
    try:
        for line in lines:
            name = line.rstrip("\r\n")
            if name.strip():
                yield item_for_name(name, root)
    except UnicodeDecodeError:
        raise ScoringError(f"cannot read {source}: it is not UTF-8 text") from None
    except OSError as exc:
        raise ScoringError(f"cannot read {source}: {exc.strerror or exc}") from None


def item_for_aml_file(path: str | os.PathLike[str], root: str | None) -> Item:
    """An Item for a file Azure ML hands to run(): named relative to root when under it."""
    file = Path(path)
    if root and not is_url(root):
        try:
            return Item(file.relative_to(root).as_posix(), path=file)
        except ValueError:
            pass
    return Item(file.name, path=file)
