"""Turn Azure ML's one appended predictions file into the per-shard results the merge reads.

The Azure ML backend scores the month folder with a parallel job whose
mini-batches are Azure ML's own, and ``append_row_to`` leaves one file of rows
in whatever order the mini-batches finished. The parallel run driver writes that
file itself: each worker process appends ``run()``'s DataFrame with
``to_csv(sep=" ", header=None, index=None)`` to its own temp file and the files are
concatenated — space-separated, no header, pandas' minimal quoting (a field with a
space, a quote or a line break is quoted, quotes doubled; empty and NA values are
empty fields). `appended_rows` reads exactly that.

A worker appends before its mini-batch is marked done, so a mini-batch whose worker
died after appending (a pre-empted low-priority node, an expired lease) runs again
and its images' rows appear twice. An image's rows from one ``run()`` are one
contiguous block; `split_into_shards` keeps each image's first block and leaves out
any later one (and a block that is an exact repetition of itself, when both runs
landed back to back in one process's file), so each image is counted once.

To give both backends the same merge — the same reconciliation, the same schema,
every image exactly once — this module routes those rows to the shards that
staging defined, as if each shard had been a Batch task:

- image paths, relative to the month folder in Azure ML, get the month prefix
  back (``camera-0/a.jpg`` → ``202401/camera-0/a.jpg``) so that both backends
  name images alike;
- a staged image with no row (its mini-batch failed within the job's error
  threshold) gets one ``error`` row saying so, never silently dropped;
- rows for files that staging skipped (not images) are left out, as with Batch;
- a row for any other file that was not staged is an error naming it.

Memory is bounded: rows are buffered up to ``flush_rows`` and appended to
per-shard temporary files; only the staged names are held (one dict entry per
image).
"""
from __future__ import annotations

import csv
import logging
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient, ContainerClient

from include.monthly.merge import blob_lines
from include.monthly.schema import IMAGE_COLUMN, PREDICTION_COLUMNS, error_row
from include.monthly.staging import StageResult, read_manifest, skip_reason

NOT_IN_OUTPUT = "not in the Azure ML output: its mini-batch failed within the job's error threshold"
#: The driver's append_row format (DataFrame.to_csv(sep=" ", header=None, index=None)).
DRIVER_DELIMITER = " "

log = logging.getLogger(__name__)


class UnexpectedImageError(ValueError):
    """The Azure ML output has rows for an image that staging never listed."""


@dataclass
class SplitReport:
    """What `split_into_shards` wrote: rows per shard, and the rows of re-run mini-batches it left out."""

    rows_per_shard: dict[str, int] = field(default_factory=dict)
    duplicate_rows: int = 0
    duplicate_images: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.rows_per_shard.values())


def image_blocks(rows: Iterable[list[str]]) -> Iterator[tuple[str, list[list[str]]]]:
    """Consecutive rows of one image, as (image, rows); blank lines and header lines carry no row."""
    current: str | None = None
    block: list[list[str]] = []
    for row in rows:
        if not row or tuple(row) == PREDICTION_COLUMNS:
            continue
        if len(row) != len(PREDICTION_COLUMNS):
            raise ValueError(f"Azure ML output row has {len(row)} fields, expected {len(PREDICTION_COLUMNS)}: {row[:3]}")
        if row[IMAGE_COLUMN] != current and block:
            yield current, block  # type: ignore[misc]
            block = []
        current = row[IMAGE_COLUMN]
        block.append(row)
    if block:
        yield current, block  # type: ignore[misc]


def _once(block: list[list[str]]) -> list[list[str]]:
    """A block that is one run's rows repeated back to back (same process, run twice) -> one run's rows."""
    for times in range(len(block), 1, -1):
        if len(block) % times == 0:
            size = len(block) // times
            first = block[:size]
            if all(block[i * size:(i + 1) * size] == first for i in range(1, times)):
                return first
    return block


def split_into_shards(
    work_container: ContainerClient,
    stage: StageResult,
    rows: Iterable[list[str]],
    flush_rows: int = 10_000,
) -> SplitReport:
    """Write ``results/shard-*.csv`` for every staged shard from Azure ML's rows, each image's rows once."""
    shard_of: dict[str, str] = {}
    for shard in stage.shards:
        for name in read_manifest(work_container, shard.manifest):
            shard_of[name] = shard.id
    seen: set[str] = set()
    counts: dict[str, int] = defaultdict(int)
    report = SplitReport()
    with tempfile.TemporaryDirectory() as tmp:
        files = {shard.id: Path(tmp) / f"{shard.id}.csv" for shard in stage.shards}
        for path in files.values():
            with open(path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(PREDICTION_COLUMNS)
        buffered: dict[str, list[list[str]]] = defaultdict(list)
        pending = 0
        for image, block in image_blocks(rows):
            name = stage.source_prefix + image.lstrip("/")
            shard_id = shard_of.get(name)
            if shard_id is None and skip_reason(name) is not None:
                continue  # a file staging skipped (e.g. notes.txt); the summary counts it as skipped
            if shard_id is None:
                raise UnexpectedImageError(f"Azure ML output has rows for {name!r}, which was not staged")
            kept = [] if name in seen else _once(block)
            if len(kept) < len(block):
                report.duplicate_rows += len(block) - len(kept)
                if len(report.duplicate_images) < 10:
                    report.duplicate_images.append(name)
            if not kept:
                continue
            seen.add(name)
            for row in kept:
                row[IMAGE_COLUMN] = name
            buffered[shard_id].extend(kept)
            pending += len(kept)
            if pending >= flush_rows:
                _flush(files, buffered, counts)
                pending = 0
        for name, shard_id in shard_of.items():
            if name not in seen:
                buffered[shard_id].append(error_row(name, NOT_IN_OUTPUT))
        _flush(files, buffered, counts)
        for shard_id, path in files.items():
            with open(path, "rb") as fh:
                work_container.upload_blob(stage.paths.result(shard_id), fh, overwrite=True)
    if report.duplicate_rows:
        log.warning("Left out %d row(s) of re-run mini-batches (e.g. %s): each image is counted once",
                    report.duplicate_rows, ", ".join(report.duplicate_images[:3]))
    report.rows_per_shard = dict(counts)
    return report


def _flush(files: dict[str, Path], buffered: dict[str, list[list[str]]], counts: dict[str, int]) -> None:
    for shard_id, rows in buffered.items():
        with open(files[shard_id], "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
        counts[shard_id] += len(rows)
    buffered.clear()


def appended_rows(container: ContainerClient, blob_name: str) -> Iterable[list[str]]:
    """The rows of Azure ML's appended output file (the driver's format), streamed from Blob storage."""
    return csv.reader(blob_lines(container.get_blob_client(blob_name)), delimiter=DRIVER_DELIMITER,
                      quotechar='"', doublequote=True, strict=True)


def output_container(location: dict[str, str], wasb: BlobServiceClient, aml_hook: Any) -> ContainerClient:
    """The container of the output file, on the account its datastore points at.

    The wasb connection's account when it is the same one; otherwise a client for the
    datastore's account with the datastore's own credentials (account key or SAS), or
    the default Azure credential for an identity-based datastore.
    """
    account = location.get("account_name") or ""
    if not account or account == wasb.account_name:
        return wasb.get_container_client(location["container"])
    store = aml_hook.get_datastore(location["datastore"], include_secrets=True)
    url = f"{getattr(store, 'protocol', None) or 'https'}://{account}.blob.{getattr(store, 'endpoint', None) or 'core.windows.net'}"
    credentials = getattr(store, "credentials", None)
    secret = getattr(credentials, "account_key", None) or getattr(credentials, "sas_token", None)
    if secret is None:
        from azure.identity import DefaultAzureCredential

        secret = DefaultAzureCredential()
    log.info("Reading the Azure ML output from account %s (datastore %s), not the wasb connection's %s",
             account, location["datastore"], wasb.account_name)
    return BlobServiceClient(url, credential=secret).get_container_client(location["container"])
