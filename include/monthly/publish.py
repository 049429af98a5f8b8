"""Publish: replace a month's predictions.csv and .parquet atomically, then its report and summary.json.

Order, and what a reader can rely on:

1. The summary is serialised first, so bad summary data fails before anything changes;
   the Parquet copy of the CSV is written locally (same rows, typed columns).
2. The CSV and the Parquet file are uploaded as uncommitted blocks (`stage_block`).
   Until they are committed, readers keep seeing the previous complete files (or none).
3. The old `summary.json` is deleted, then each block list is committed: each
   new file replaces the old one in a single step, never half-written.
4. `report.html` is written (built from the CSV and the summary), then the new
   `summary.json`. It records both files' sizes and SHA-256, so `summary.json`
   present (and matching) means the files beside it are complete and are the
   ones it describes. A run that fails between 3 and 4 leaves files with no
   summary, which never looks like a finished publish.

Only `YYYYMM/predictions.csv`, `predictions.parquet`, `report.html` and
`summary.json` of the given month are written or deleted; other months are never touched. Uncommitted blocks of a
failed upload are discarded by the service (after a week at most) and are never
visible to readers. Each upload uses its own block id prefix, so two publishers
of the same month cannot mix their blocks.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient, ContentSettings

from include.monthly.config import PUBLISH_BLOCK_SIZE
from include.monthly.layout import Month, OutputPaths

log = logging.getLogger(__name__)


class PublishedMismatchError(Exception):
    """The published CSV does not match its summary (a publish is in progress or failed)."""


@dataclass(frozen=True)
class StagedUpload:
    """A file uploaded as uncommitted blocks, ready to be committed in one step."""

    block_ids: list[str]
    size: int
    sha256: str


def stage_file_blocks(blob: BlobClient, path: Path, block_size: int = PUBLISH_BLOCK_SIZE) -> StagedUpload:
    """Upload a local file as uncommitted blocks; readers of `blob` see no change yet."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size!r}")
    upload_id = uuid.uuid4().hex[:16]  # block ids: fixed length, unique to this upload
    block_ids: list[str] = []
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(block_size):
            block_id = f"{upload_id}-{len(block_ids):08d}"
            blob.stage_block(block_id, chunk, length=len(chunk))
            block_ids.append(block_id)
            digest.update(chunk)
            size += len(chunk)
    return StagedUpload(block_ids, size, digest.hexdigest())


def commit_blocks(blob: BlobClient, upload: StagedUpload, content_type: str) -> None:
    """Make the staged blocks the blob's content, replacing the old content in one step."""
    blob.commit_block_list(
        [BlobBlock(block_id=block_id) for block_id in upload.block_ids],
        content_settings=ContentSettings(content_type=content_type),
        metadata={"sha256": upload.sha256},
    )


def publish(
    output_container: ContainerClient,
    month: Month,
    predictions_path: Path | str,
    summary: dict[str, Any],
    *,
    block_size: int = PUBLISH_BLOCK_SIZE,
) -> dict[str, Any]:
    """Publish the month's predictions.csv, .parquet, report.html and summary.json (see the module doc).

    Returns the summary as written: `summary` plus `published_at`, `predictions`
    and `predictions_parquet` (blob name, bytes, sha256) and `report` (blob name).
    """
    from include.monthly.parquet import csv_to_parquet
    from include.monthly.report import render_report

    predictions_path = Path(predictions_path)
    if not predictions_path.is_file():
        raise FileNotFoundError(f"predictions file {str(predictions_path)!r} does not exist")
    json.dumps(summary)  # fail on unserialisable data before changing anything
    if not output_container.exists():
        raise LookupError(f"output container {output_container.container_name!r} does not exist")
    paths = OutputPaths(month)
    csv_blob = output_container.get_blob_client(paths.predictions)
    parquet_blob = output_container.get_blob_client(paths.parquet)
    summary_blob = output_container.get_blob_client(paths.summary)
    parquet_path = predictions_path.with_name(predictions_path.stem + ".publish.parquet")
    parquet_rows = csv_to_parquet(predictions_path, parquet_path)

    upload = stage_file_blocks(csv_blob, predictions_path, block_size)
    parquet_upload = stage_file_blocks(parquet_blob, parquet_path, block_size)
    try:
        summary_blob.delete_blob()
    except ResourceNotFoundError:
        pass
    commit_blocks(csv_blob, upload, "text/csv; charset=utf-8")
    commit_blocks(parquet_blob, parquet_upload, "application/vnd.apache.parquet")
    parquet_path.unlink(missing_ok=True)

    written = {
        **summary,
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "predictions": {"blob": paths.predictions, "bytes": upload.size, "sha256": upload.sha256},
        "predictions_parquet": {"blob": paths.parquet, "bytes": parquet_upload.size,
                                "sha256": parquet_upload.sha256, "rows": parquet_rows},
        "report": {"blob": paths.report, "url": output_container.get_blob_client(paths.report).url.split("?")[0]},
    }
    output_container.get_blob_client(paths.report).upload_blob(
        render_report(written, predictions_path).encode("utf-8"),
        overwrite=True,
        content_settings=ContentSettings(content_type="text/html; charset=utf-8"),
    )
    summary_blob.upload_blob(
        json.dumps(written, indent=2, ensure_ascii=False).encode("utf-8"),
        overwrite=True,
        content_settings=ContentSettings(content_type="application/json"),
    )
    log.info(
        "Published %s/%s (%d bytes) and %s",
        output_container.container_name, paths.predictions, upload.size, paths.summary,
    )
    return written


@dataclass(frozen=True)
class PublishedMonth:
    """A month's published outputs, checked against each other."""

    predictions: bytes
    summary: dict[str, Any]
    parquet: bytes | None = None
    report: bytes | None = None


def load_published(output_container: ContainerClient, month: Month) -> PublishedMonth:
    """Download a month's predictions.csv and summary.json; raise if they do not match.

    Reads the whole CSV into memory: meant for tests, demos and small months.
    """
    paths = OutputPaths(month)
    try:
        summary = json.loads(output_container.get_blob_client(paths.summary).download_blob().readall())
    except ResourceNotFoundError as error:
        raise LookupError(f"{month} is not published: no {paths.summary!r}") from error
    predictions = output_container.get_blob_client(paths.predictions).download_blob().readall()
    expected = summary.get("predictions", {})
    if hashlib.sha256(predictions).hexdigest() != expected.get("sha256"):
        raise PublishedMismatchError(
            f"{paths.predictions!r} does not match {paths.summary!r} (a publish of {month} "
            "is in progress or failed)"
        )
    parquet = report = None
    if "predictions_parquet" in summary:
        parquet = output_container.get_blob_client(paths.parquet).download_blob().readall()
        if hashlib.sha256(parquet).hexdigest() != summary["predictions_parquet"].get("sha256"):
            raise PublishedMismatchError(f"{paths.parquet!r} does not match {paths.summary!r}")
    if "report" in summary:
        report = output_container.get_blob_client(paths.report).download_blob().readall()
    return PublishedMonth(predictions, summary, parquet, report)


def save_published(output_container: ContainerClient, month: Month, dest_dir: Path | str) -> Path:
    """Save a month's published outputs to `dest_dir/YYYYMM/` (e.g. demo-output/); returns that folder."""
    published = load_published(output_container, month)
    folder = Path(dest_dir) / month.key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.csv").write_bytes(published.predictions)
    if published.parquet is not None:
        (folder / "predictions.parquet").write_bytes(published.parquet)
    if published.report is not None:
        (folder / "report.html").write_bytes(published.report)
    (folder / "summary.json").write_text(json.dumps(published.summary, indent=2, ensure_ascii=False) + "\n")
    return folder
