"""Turn Azure ML's one appended predictions file into the per-shard results the merge reads.

The Azure ML backend scores the month folder with a parallel job whose
mini-batches are Azure ML's own, and ``append_row_to`` leaves one file of rows
in whatever order the mini-batches finished. To give both backends the same
merge — the same reconciliation, the same schema, every image exactly once —
this module routes those rows to the shards that staging defined, as if each
shard had been a Batch task:

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
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from azure.storage.blob import ContainerClient

from include.monthly.merge import blob_lines
from include.monthly.schema import IMAGE_COLUMN, PREDICTION_COLUMNS, error_row
from include.monthly.staging import StageResult, read_manifest, skip_reason

NOT_IN_OUTPUT = "not in the Azure ML output: its mini-batch failed within the job's error threshold"


class UnexpectedImageError(ValueError):
    """The Azure ML output has rows for an image that staging never listed."""


def split_into_shards(
    work_container: ContainerClient,
    stage: StageResult,
    rows: Iterable[list[str]],
    flush_rows: int = 10_000,
) -> dict[str, int]:
    """Write ``results/shard-*.csv`` for every staged shard from Azure ML's rows; returns rows per shard."""
    shard_of: dict[str, str] = {}
    for shard in stage.shards:
        for name in read_manifest(work_container, shard.manifest):
            shard_of[name] = shard.id
    seen: set[str] = set()
    counts: dict[str, int] = defaultdict(int)
    with tempfile.TemporaryDirectory() as tmp:
        files = {shard.id: Path(tmp) / f"{shard.id}.csv" for shard in stage.shards}
        for path in files.values():
            with open(path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(PREDICTION_COLUMNS)
        buffered: dict[str, list[list[str]]] = defaultdict(list)
        pending = 0
        for row in rows:
            if not row or tuple(row) == PREDICTION_COLUMNS:
                continue  # blank lines and (repeated) headers carry no row
            if len(row) != len(PREDICTION_COLUMNS):
                raise ValueError(f"Azure ML output row has {len(row)} fields, expected {len(PREDICTION_COLUMNS)}: {row[:3]}")
            name = stage.source_prefix + row[IMAGE_COLUMN].lstrip("/")
            shard_id = shard_of.get(name)
            if shard_id is None and skip_reason(name) is not None:
                continue  # a file staging skipped (e.g. notes.txt); the summary counts it as skipped
            if shard_id is None:
                raise UnexpectedImageError(f"Azure ML output has rows for {name!r}, which was not staged")
            row[IMAGE_COLUMN] = name
            seen.add(name)
            buffered[shard_id].append(row)
            pending += 1
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
    return dict(counts)


def _flush(files: dict[str, Path], buffered: dict[str, list[list[str]]], counts: dict[str, int]) -> None:
    for shard_id, rows in buffered.items():
        with open(files[shard_id], "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
        counts[shard_id] += len(rows)
    buffered.clear()


def appended_rows(container: ContainerClient, blob_name: str) -> Iterable[list[str]]:
    """The rows of Azure ML's appended output file, streamed from Blob storage."""
    return csv.reader(blob_lines(container.get_blob_client(blob_name)))
