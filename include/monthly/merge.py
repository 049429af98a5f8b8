"""Merge: stream the shards' result CSVs into one predictions.csv and reconcile them.

Each shard's CSV is downloaded in chunks and copied row by row to the local
output. Downloads run ahead in a few threads (the next shards' first result
chunks are fetched while the current shard is written), so the merge is not
one storage round trip after another. Memory stays bounded whatever the size
of the month: at most `MERGE_PREFETCH_SHARDS` shards ahead, each holding its
first download chunk (the SDK's `max_single_get_size`, 32 MiB by default); the
rest of a large result streams chunk by chunk. Every row is checked:

- the header is the scoring schema;
- an image's rows are contiguous and share one status; `empty` and `error`
  images have exactly one row (a repeated image would be a duplicate);
- the shard's images are exactly those of its manifest. Staging records the
  manifest's digest, and a result lists its images in manifest order, so
  hashing the result's images settles this without downloading the manifest.
  Only when the digests differ (or a shard has no recorded digest) is the
  manifest read, to name the foreign image (an error) or the missing ones
  (`MissingImagesError`); a result holding the same images in another order
  is accepted.

A shard the caller lists as failed contributes one `error` row per image of its
manifest, carrying the failure reason; its result file, if any, is ignored as
incomplete. A shard whose result is missing but is not listed as failed is an
error: nothing is dropped silently. The output appears at `out_path` only when
the whole merge succeeded (written to a temporary file, then renamed).
"""
from __future__ import annotations

import codecs
import csv
import logging
import os
import tempfile
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient, StorageStreamDownloader

from include.monthly.config import MAX_LISTED_NAMES, MERGE_DOWNLOAD_THREADS, MERGE_PREFETCH_SHARDS
from include.monthly.schema import (
    CLASS_NAME_COLUMN,
    IMAGE_COLUMN,
    PREDICTION_COLUMNS,
    STATUS_COLUMN,
    STATUS_ERROR,
    STATUS_OK,
    STATUSES,
    error_row,
    redact,
)
from include.monthly.staging import Shard, StageResult, manifest_bytes, manifest_digest, read_manifest

log = logging.getLogger(__name__)


class MergeError(Exception):
    """A shard's results cannot be reconciled with what was staged."""

    def __init__(self, shard: str, message: str) -> None:
        super().__init__(f"shard {shard}: {message}")
        self.shard = shard


class ShardResultError(MergeError):
    """A shard's result file is missing, has the wrong header, or a row that does not belong."""


class MissingImagesError(MergeError):
    """Images staged in a shard have no row in its result."""

    def __init__(self, shard: str, missing: list[str], missing_count: int) -> None:
        more = f" and {missing_count - len(missing)} more" if missing_count > len(missing) else ""
        super().__init__(
            shard,
            f"{missing_count} staged image(s) have no row in the result: "
            + ", ".join(repr(name) for name in missing) + more,
        )
        self.missing = missing
        self.missing_count = missing_count


@dataclass
class MergeReport:
    """What the merged predictions.csv holds."""

    images: int = 0
    rows: int = 0
    detections_per_class: dict[str, int] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)  # images per status
    shards: int = 0
    failed_shards: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def blob_lines(blob: BlobClient) -> Iterator[str]:
    """The text lines of a UTF-8 blob (ends kept), downloaded chunk by chunk."""
    return _downloaded_lines(blob.download_blob(max_concurrency=1))


def _downloaded_lines(download: StorageStreamDownloader) -> Iterator[str]:
    """The text lines of a started download (ends kept); later chunks are fetched as they are read."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    for chunk in download.chunks():
        lines = (pending + decoder.decode(chunk)).split("\n")
        pending = lines.pop()
        for line in lines:
            yield line + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


@dataclass
class _Fetched:
    """What the download threads got for a shard (a manifest only where one is needed)."""

    manifest: list[str] | None = None
    result: StorageStreamDownloader | None = None  # started: its first chunk is in memory
    missing: str | None = None  # "manifest" or "result"


def _fetch(work_container: ContainerClient, stage: StageResult, shard: Shard, failed: bool) -> _Fetched:
    """Runs in a download thread: the manifest of a failed or undigested shard, else the result's first chunk."""
    manifest = None
    if failed or shard.sha256 is None:
        try:
            manifest = read_manifest(work_container, shard.manifest)
        except ResourceNotFoundError:
            return _Fetched(missing="manifest")
    if failed:
        return _Fetched(manifest=manifest)
    try:
        download = work_container.get_blob_client(stage.paths.result(shard.id)).download_blob(max_concurrency=1)
    except ResourceNotFoundError:
        return _Fetched(manifest=manifest, missing="result")
    return _Fetched(manifest=manifest, result=download)


def _prefetched(
    work_container: ContainerClient, stage: StageResult, failed: Mapping[str, str]
) -> Iterator[tuple[Shard, _Fetched]]:
    """Every shard with what `_fetch` got for it, in shard order, fetched up to MERGE_PREFETCH_SHARDS ahead."""
    shards = iter(stage.shards)
    ahead: list[tuple[Shard, Future[_Fetched]]] = []
    with ThreadPoolExecutor(MERGE_DOWNLOAD_THREADS, thread_name_prefix="merge-download") as pool:
        try:
            while True:
                for shard in shards:
                    ahead.append((shard, pool.submit(_fetch, work_container, stage, shard, shard.id in failed)))
                    if len(ahead) >= MERGE_PREFETCH_SHARDS:
                        break
                if not ahead:
                    return
                shard, future = ahead.pop(0)
                yield shard, future.result()
        finally:
            for _, future in ahead:
                future.cancel()


@dataclass
class _Tally:
    """Counts kept while rows stream to the output."""

    rows: int = 0
    detections: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # images per status


def merge_shards(
    work_container: ContainerClient,
    stage: StageResult,
    out_path: Path | str,
    failed_shards: Mapping[str, str] | None = None,
) -> MergeReport:
    """Write every shard's rows, in shard order, to `out_path`, and report what it holds.

    `failed_shards` maps shard id -> reason (e.g. "exit code 3: <stderr tail>")
    for shards the caller accepted as failed within its error threshold.
    """
    failed = dict(failed_shards or {})
    unknown = sorted(failed.keys() - set(stage.shard_ids))
    if unknown:
        raise ValueError(f"failed_shards names shard(s) that were not staged: {unknown}")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = MergeReport(
        shards=len(stage.shards),
        failed_shards={shard: redact(reason) for shard, reason in sorted(failed.items())},
    )
    tally = _Tally()
    handle, temp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(PREDICTION_COLUMNS)
            for shard, fetched in _prefetched(work_container, stage, failed):
                if fetched.missing == "manifest":
                    raise ShardResultError(shard.id, f"manifest {shard.manifest!r} is missing")
                if fetched.manifest is not None:
                    _check_manifest_size(shard, fetched.manifest)
                if shard.id in failed:
                    writer.writerows(_failed_shard_rows(shard, fetched.manifest or [], failed[shard.id], tally))
                elif fetched.result is None:
                    raise ShardResultError(
                        shard.id, f"result {stage.paths.result(shard.id)!r} is missing "
                        "and the shard is not listed as failed",
                    )
                else:
                    seen = {}
                    writer.writerows(_checked_rows(shard, stage.paths.result(shard.id), fetched.result, seen, tally))
                    _reconcile(work_container, shard, fetched.manifest, seen)
                report.images += shard.image_count
        os.replace(temp_name, out_path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    report.rows = tally.rows
    report.detections_per_class = dict(sorted(tally.detections.items()))
    report.status_counts = dict(sorted(tally.statuses.items()))
    log.info(
        "Merged %d image(s), %d row(s) from %d shard(s) (%d failed) into %s",
        report.images, report.rows, report.shards, len(failed), out_path,
    )
    return report


def _failed_shard_rows(shard: Shard, manifest: list[str], reason: str, tally: _Tally) -> Iterator[list[str]]:
    """One `error` row per image of a failed shard, so none is dropped."""
    log.warning("Shard %s failed (%s): its %d image(s) become error rows",
                shard.id, redact(reason), len(manifest))
    for image in manifest:
        tally.statuses[STATUS_ERROR] += 1
        tally.rows += 1
        yield error_row(image, f"shard {shard.id} failed: {reason}")


def _check_manifest_size(shard: Shard, manifest: list[str]) -> None:
    if len(manifest) != shard.image_count:
        raise ShardResultError(
            shard.id,
            f"manifest {shard.manifest!r} lists {len(manifest)} image(s), staging recorded {shard.image_count}",
        )


def _checked_rows(
    shard: Shard, name: str, download: StorageStreamDownloader, seen: dict[str, int], tally: _Tally
) -> Iterator[list[str]]:
    """The rows of a shard's result CSV, each checked on its own (see module doc).

    Fills `seen` with each image and the line it first appears on, in order of
    appearance, for `_reconcile` to compare with the manifest afterwards.
    """
    current: str | None = None
    current_status = ""
    columns = len(PREDICTION_COLUMNS)
    detections, statuses = tally.detections, tally.statuses
    try:
        reader = csv.reader(_downloaded_lines(download))
        header = next(reader, None)
        if header is None or tuple(header) != PREDICTION_COLUMNS:
            raise ShardResultError(
                shard.id, f"result {name!r} has header {header!r}; expected {list(PREDICTION_COLUMNS)!r}",
            )
        for row in reader:
            if not row:
                continue  # a blank line carries no row
            if len(row) != columns:
                raise ShardResultError(
                    shard.id, f"result {name!r} line {reader.line_num} has {len(row)} field(s), expected {columns}"
                )
            image, status = row[IMAGE_COLUMN], row[STATUS_COLUMN]
            if image != current:
                if status not in STATUSES:
                    raise ShardResultError(
                        shard.id, f"result {name!r} line {reader.line_num} has unknown status {status!r} for {image!r}"
                    )
                if image in seen:
                    raise ShardResultError(
                        shard.id,
                        f"result {name!r} line {reader.line_num}: rows for {image!r} appear twice "
                        "(not contiguous); a duplicate",
                    )
                seen[image] = reader.line_num
                statuses[status] += 1
                current, current_status = image, status
            elif status != current_status or current_status != STATUS_OK:
                raise ShardResultError(
                    shard.id,
                    f"result {name!r} line {reader.line_num}: {image!r} has a {status!r} row after a "
                    f"{current_status!r} row; an image is either detections (ok) or one empty/error row",
                )
            if status == STATUS_OK:
                detections[row[CLASS_NAME_COLUMN]] += 1
            tally.rows += 1
            yield row
    except (csv.Error, UnicodeDecodeError) as error:
        raise ShardResultError(shard.id, f"result {name!r} is not valid UTF-8 CSV: {error}") from error


def _reconcile(
    work_container: ContainerClient, shard: Shard, manifest: list[str] | None, seen: dict[str, int]
) -> None:
    """Raise unless the images of a shard's result are exactly those of its manifest."""
    if shard.sha256 is not None and manifest_digest(manifest_bytes(seen)) == shard.sha256:
        return  # the same names in the same order as the manifest staging wrote
    if manifest is None:
        try:
            manifest = read_manifest(work_container, shard.manifest)
        except ResourceNotFoundError:
            raise ShardResultError(shard.id, f"manifest {shard.manifest!r} is missing") from None
        _check_manifest_size(shard, manifest)
        if manifest_digest(manifest_bytes(manifest)) != shard.sha256:
            raise ShardResultError(shard.id, f"manifest {shard.manifest!r} changed after staging")
    expected = set(manifest)
    foreign = next((image for image in seen if image not in expected), None)
    if foreign is not None:
        raise ShardResultError(shard.id, f"result line {seen[foreign]} is for {foreign!r}, which is not in its manifest")
    if len(seen) != len(expected):
        missing = [image for image in manifest if image not in seen]
        raise MissingImagesError(shard.id, missing[:MAX_LISTED_NAMES], len(missing))
