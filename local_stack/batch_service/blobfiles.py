"""Task resource files (download) and output files (upload) against Blob storage.

Works with Azurite: SAS URLs are used as given (no account key needed), and
`autoStorageContainerName` uses the service's storage connection string.
Messages never include a URL's query string, so SAS tokens stay out of
task records and logs.
"""
from __future__ import annotations

import glob
import os
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient


class TransferError(Exception):
    """A failed download or upload, with an Azure failure code and a SAS-free message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def redact(url: str) -> str:
    """The URL without its query string (which may hold a SAS token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def safe_relative_path(text: str) -> bool:
    """True when a relative path cannot leave the folder it is resolved in."""
    path = Path(text)
    return bool(text) and not path.is_absolute() and ".." not in path.parts


def _inside(base: Path, relative: str) -> Path:
    target = (base / relative).resolve()
    if base.resolve() not in (target, *target.parents):
        raise TransferError("ResourceFilePathInvalid", f"'{relative}' is outside the task working directory")
    return target


def download_resource_files(resource_files: list[dict], working_dir: Path, storage_connection_string: str | None) -> None:
    """Fetch every resource file into working_dir; raise TransferError on the first failure."""
    for spec in resource_files or []:
        file_path = spec.get("filePath") or ""
        try:
            if spec.get("httpUrl"):
                target = _inside(working_dir, file_path)
                target.parent.mkdir(parents=True, exist_ok=True)
                with urllib.request.urlopen(spec["httpUrl"], timeout=60) as response, open(target, "wb") as out:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                _apply_mode(target, spec.get("fileMode"))
                continue
            if spec.get("storageContainerUrl"):
                container = ContainerClient.from_container_url(spec["storageContainerUrl"])
                source = redact(spec["storageContainerUrl"])
            elif spec.get("autoStorageContainerName"):
                if not storage_connection_string:
                    raise TransferError("AutoStorageNotConfigured", "this service was started without --storage-connection-string")
                service = BlobServiceClient.from_connection_string(storage_connection_string)
                container = service.get_container_client(spec["autoStorageContainerName"])
                source = spec["autoStorageContainerName"]
            else:
                raise TransferError("ResourceFileSourceMissing", "a resource file needs httpUrl, storageContainerUrl or autoStorageContainerName")
            base = _inside(working_dir, file_path) if file_path else working_dir.resolve()
            for blob in container.list_blobs(name_starts_with=spec.get("blobPrefix") or None):
                target = _inside(base, blob.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    container.download_blob(blob.name).readinto(out)
                _apply_mode(target, spec.get("fileMode"))
        except TransferError:
            raise
        except Exception as exc:  # any network or storage failure becomes the task's failure
            url = spec.get("httpUrl") or spec.get("storageContainerUrl") or spec.get("autoStorageContainerName") or ""
            status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
            code = {403: "BlobAccessDenied", 404: "BlobNotFound"}.get(status, "BlobDownloadMiscError")
            raise TransferError(code, f"downloading {redact(url)} failed: {type(exc).__name__} {status or ''}".strip()) from None


def _apply_mode(path: Path, mode: str | None) -> None:
    if mode:
        os.chmod(path, int(mode, 8))


def _pattern_base(pattern: str) -> str:
    """The leading folders of a pattern that hold no wildcard (files keep paths relative to it)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else ""


def matching_files(working_dir: Path, pattern: str) -> list[tuple[Path, str]]:
    """(file, blob-relative name) pairs for an Azure filePattern, relative to the working dir."""
    has_wildcard = any(c in pattern for c in "*?[")
    matches = sorted(glob.glob(str(working_dir / pattern), recursive=True))
    files = [Path(m) for m in matches if Path(m).is_file()]
    if not has_wildcard:
        return [(f, "") for f in files]
    base = (working_dir / _pattern_base(pattern)).resolve()
    return [(f, os.path.relpath(f.resolve(), base)) for f in files]


def upload_output_files(output_files: list[dict], working_dir: Path, succeeded: bool) -> None:
    """Upload every output file whose uploadCondition holds; raise TransferError on the first failure."""
    for spec in output_files or []:
        condition = ((spec.get("uploadOptions") or {}).get("uploadCondition") or "tasksuccess").lower()
        if condition == "tasksuccess" and not succeeded or condition == "taskfailure" and succeeded:
            continue
        container = ((spec.get("destination") or {}).get("container") or {})
        container_url = container.get("containerUrl")
        if not container_url:
            raise TransferError("FileUploadError", "an output file has no destination.container.containerUrl")
        path = container.get("path") or ""
        for file, relative in matching_files(working_dir, spec.get("filePattern") or ""):
            if relative:
                blob_name = f"{path.rstrip('/')}/{relative}" if path else relative
            else:
                blob_name = path or file.name
            parts = urlsplit(container_url)
            blob_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + quote(blob_name), parts.query, ""))
            headers = container.get("uploadHeaders") or []
            content_type = next((h.get("value") for h in headers if (h.get("name") or "").lower() == "content-type"), None)
            try:
                with open(file, "rb") as data:
                    BlobClient.from_blob_url(blob_url).upload_blob(data, overwrite=True, **({"content_settings": _content(content_type)} if content_type else {}))
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                raise TransferError("FileUploadError", f"uploading {file.name} to {redact(blob_url)} failed: {type(exc).__name__} {status or ''}".strip()) from None


def _content(content_type: str):
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type=content_type)
