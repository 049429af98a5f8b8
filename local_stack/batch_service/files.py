"""Serving files of a node folder: the list documents and the download/properties answer.

Task files (`/jobs/{job}/tasks/{task}/files`) and node files (`/pools/{pool}/nodes/{node}/files`) answer
alike (REST spec: File_ListFromTask / File_ListFromComputeNode, File_GetFromTask / File_GetFromComputeNode):
list entries {name, url, isDirectory, properties}, downloads with `ocp-range`, HEAD with the
`ocp-batch-file-*` headers.
"""
from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

from local_stack.batch_service.errors import BatchServiceError, not_found
from local_stack.batch_service.formats import rfc1123


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entries(root: Path, recursive: bool) -> list[tuple[str, Path]]:
    """(name relative to root, path) of the folder's files, sorted; [] when the folder does not exist."""
    if not root.exists():
        return []
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted((str(p.relative_to(root)), p) for p in found)


def list_docs(root: Path, base_url: str, recursive: bool) -> list[dict]:
    docs = []
    for name, path in entries(root, recursive):
        doc = {"name": name, "url": f"{base_url}/{name}", "isDirectory": path.is_dir()}
        if not path.is_dir():
            stat = path.stat()
            doc["properties"] = {"lastModified": iso(stat.st_mtime), "contentLength": stat.st_size,
                                 "contentType": "application/octet-stream", "fileMode": format(stat.st_mode, "o")}
        docs.append(doc)
    return docs


def resolve(root: Path | None, name: str) -> Path:
    """The file `name` under root; FileNotFound for anything outside it or missing."""
    if root is None or not name or name.startswith("/"):
        raise not_found("File", name)
    path = (root / name).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise not_found("File", name)
    if not path.exists():
        raise not_found("File", name)
    return path


def answer(method: str, headers_in, path: Path, url: str) -> web.Response:
    """GET (content, honouring ocp-range) or HEAD (properties only) of one file."""
    stat = path.stat()
    headers = {
        "Last-Modified": rfc1123(iso(stat.st_mtime)),
        "ocp-creation-time": rfc1123(iso(stat.st_ctime)),
        "ocp-batch-file-isdirectory": "true" if path.is_dir() else "false",
        "ocp-batch-file-url": url,
        "ocp-batch-file-mode": format(stat.st_mode, "o"),
        "Content-Type": "application/octet-stream",
    }
    if method == "HEAD" or path.is_dir():
        headers["Content-Length"] = str(0 if path.is_dir() else stat.st_size)
        return web.Response(status=200, headers=headers)
    data = path.read_bytes()
    byte_range = headers_in.get("ocp-range")
    if byte_range:
        found = re.match(r"bytes=(\d+)-(\d*)$", byte_range)
        if not found:
            raise BatchServiceError(400, "InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct format.",
                                    {"HeaderName": "ocp-range"})
        start, end = int(found.group(1)), int(found.group(2)) if found.group(2) else len(data) - 1
        data = data[start : end + 1]
    return web.Response(status=200, body=data, headers=headers)


def delete(path: Path, recursive: bool) -> None:
    """File_DeleteFromTask / File_DeleteFromComputeNode: a folder needs recursive=true (else 409)."""
    if path.is_dir():
        if not recursive and any(path.iterdir()):
            # the code Azure uses here is not documented; OperationInvalidForCurrentState is the generic 409
            raise BatchServiceError(409, "OperationInvalidForCurrentState",
                                    "The specified directory is not empty; use recursive=true to delete it.")
        shutil.rmtree(path)
    else:
        path.unlink()
