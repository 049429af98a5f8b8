"""Test data for the monthly library: blobs of a month folder and scorer-shaped result CSVs.

The result CSVs are what the scoring tasks upload to `results/shard-NNNNN.csv`,
in the scoring schema; tests build them from the staged manifests so nothing
is hard-coded.
"""
from __future__ import annotations

import csv
import io
from typing import Iterable

from azure.storage.blob import ContainerClient

from include.monthly.schema import PREDICTION_COLUMNS
from include.monthly.staging import StageResult, read_manifest

CLASSES = ["person", "bus", "car", "dog"]


def upload_names(container: ContainerClient, names: Iterable[str], body: bytes = b"\xff\xd8\xff\xe0 not decoded here") -> None:
    for name in names:
        container.upload_blob(name, body, overwrite=True)


def rows_for_image(image: str, index: int) -> list[list[str]]:
    """The scorer's rows for one image: some detections, or one empty row, or one error row."""
    kind = index % 5
    if kind == 3:
        return [[image, "empty", "", "", "", "", "", "", "", "640", "480", ""]]
    if kind == 4:
        return [[image, "error", "", "", "", "", "", "", "", "", "", "cannot identify image file"]]
    detections = []
    for n in range(kind + 1):
        class_id = (index + n) % len(CLASSES)
        detections.append(
            [image, "ok", str(class_id), CLASSES[class_id], f"0.{50 + n}", "1.5", "2.5", "100.0", "200.0", "640", "480", ""]
        )
    return detections


def csv_bytes(rows: Iterable[list[str]], header: Iterable[str] = PREDICTION_COLUMNS) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def write_results(work: ContainerClient, stage: StageResult, skip: Iterable[str] = ()) -> dict[str, list[list[str]]]:
    """Upload a result CSV for every staged shard (except `skip`); returns the rows per shard."""
    written: dict[str, list[list[str]]] = {}
    counter = 0
    for shard in stage.shards:
        rows: list[list[str]] = []
        for image in read_manifest(work, shard.manifest):
            rows.extend(rows_for_image(image, counter))
            counter += 1
        written[shard.id] = rows
        if shard.id not in skip:
            work.upload_blob(stage.paths.result(shard.id), csv_bytes(rows), overwrite=True)
    return written
