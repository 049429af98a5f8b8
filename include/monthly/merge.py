"""Merge: stream the shards' result CSVs into one predictions.csv and reconcile them.

Each shard's CSV is downloaded in chunks and copied row by row to the local
output, so memory is bounded by the SDK's download chunk size plus one shard's
manifest (`shard_size` names), whatever the size of the month. While copying,
every row is checked against the shard's manifest:

- the header is the scoring schema;
- every row names an image of the manifest (a foreign image is an error);
- an image's rows are contiguous and share one status; `empty` and `error`
  images have exactly one row (a repeated image would be a duplicate);
- every image of the manifest appears (else `MissingImagesError` names them).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from include.monthly.layout import MAX_LISTED_NAMES
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
from include.monthly.staging import Shard, StageResult, read_manifest

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
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    for chunk in blob.download_blob(max_concurrency=1).chunks():
        lines = (pending + decoder.decode(chunk)).split("\n")
        pending = lines.pop()
        for line in lines:
            yield line + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


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
    detections: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    handle, temp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(PREDICTION_COLUMNS)
            for shard in stage.shards:
                try:
                    manifest = read_manifest(work_container, shard.manifest)
                except ResourceNotFoundError:
                    raise ShardResultError(shard.id, f"manifest {shard.manifest!r} is missing") from None
                if len(manifest) != shard.image_count:
                    raise ShardResultError(
                        shard.id,
                        f"manifest {shard.manifest!r} lists {len(manifest)} image(s), "
                        f"staging recorded {shard.image_count}",
                    )
                if shard.id in failed:
                    rows = _failed_shard_rows(shard, manifest, failed[shard.id], statuses)
                else:
                    blob = work_container.get_blob_client(stage.paths.result(shard.id))
                    rows = _reconciled_rows(shard, manifest, blob, statuses)
                for row in rows:
                    writer.writerow(row)
                    report.rows += 1
                    if row[STATUS_COLUMN] == STATUS_OK:
                        detections[row[CLASS_NAME_COLUMN]] += 1
                report.images += len(manifest)
        os.replace(temp_name, out_path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    report.detections_per_class = dict(sorted(detections.items()))
    report.status_counts = dict(sorted(statuses.items()))
    log.info(
        "Merged %d image(s), %d row(s) from %d shard(s) (%d failed) into %s",
        report.images, report.rows, report.shards, len(failed), out_path,
    )
    return report


def _failed_shard_rows(
    shard: Shard, manifest: list[str], reason: str, statuses: Counter[str]
) -> Iterator[list[str]]:
    """One `error` row per image of a failed shard, so none is dropped."""
    log.warning("Shard %s failed (%s): its %d image(s) become error rows",
                shard.id, redact(reason), len(manifest))
    for image in manifest:
        statuses[STATUS_ERROR] += 1
        yield error_row(image, f"shard {shard.id} failed: {reason}")


def _reconciled_rows(
    shard: Shard, manifest: list[str], blob: BlobClient, statuses: Counter[str]
) -> Iterator[list[str]]:
    """The rows of a shard's result CSV, checked against its manifest (see module doc)."""
    expected = set(manifest)
    seen: set[str] = set()
    current: str | None = None
    current_status = ""
    try:
        reader = csv.reader(blob_lines(blob))
        header = next(reader, None)
    except ResourceNotFoundError:
        raise ShardResultError(
            shard.id, f"result {blob.blob_name!r} is missing and the shard is not listed as failed"
        ) from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise ShardResultError(shard.id, f"result {blob.blob_name!r} is not valid UTF-8 CSV: {error}") from error
    if header is None or tuple(header) != PREDICTION_COLUMNS:
        raise ShardResultError(
            shard.id,
            f"result {blob.blob_name!r} has header {header!r}; expected {list(PREDICTION_COLUMNS)!r}",
        )
    for row in _checked(reader, shard, blob):
        where = f"result {blob.blob_name!r} line {reader.line_num}"
        if not row:
            continue  # a blank line carries no row
        if len(row) != len(PREDICTION_COLUMNS):
            raise ShardResultError(
                shard.id, f"{where} has {len(row)} field(s), expected {len(PREDICTION_COLUMNS)}"
            )
        image, status = row[IMAGE_COLUMN], row[STATUS_COLUMN]
        if status not in STATUSES:
            raise ShardResultError(shard.id, f"{where} has unknown status {status!r} for {image!r}")
        if image != current:
            if image not in expected:
                raise ShardResultError(shard.id, f"{where} is for {image!r}, which is not in its manifest")
            if image in seen:
                raise ShardResultError(
                    shard.id, f"{where}: rows for {image!r} appear twice (not contiguous); a duplicate"
                )
            seen.add(image)
            statuses[status] += 1
            current, current_status = image, status
        elif status != current_status or current_status != STATUS_OK:
            raise ShardResultError(
                shard.id,
                f"{where}: {image!r} has a {status!r} row after a {current_status!r} row; "
                "an image is either detections (ok) or one empty/error row",
            )
        yield row
    if len(seen) != len(expected):
        missing = [name for name in manifest if name not in seen]
        raise MissingImagesError(shard.id, missing[:MAX_LISTED_NAMES], len(missing))


def _checked(reader: Iterator[list[str]], shard: Shard, blob: BlobClient) -> Iterator[list[str]]:
    """The reader's rows; undecodable or malformed CSV becomes an error naming the shard."""
    try:
        yield from reader
    except (csv.Error, UnicodeDecodeError) as error:
        raise ShardResultError(shard.id, f"result {blob.blob_name!r} is not valid UTF-8 CSV: {error}") from error
