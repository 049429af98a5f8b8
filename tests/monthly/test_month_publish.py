"""Publishing against a real Azurite: atomic replacement, the summary, other months, empty months."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from pathlib import Path

import pytest
from monthly_testdata import upload_names, write_results

from include.monthly.layout import OutputPaths, parse_month, run_key
from include.monthly.merge import merge_shards
from include.monthly.publish import (
    PublishedMismatchError,
    commit_blocks,
    load_published,
    publish,
    save_published,
    stage_file_blocks,
)
from include.monthly.schema import PREDICTION_COLUMNS
from include.monthly.staging import stage_month
from include.monthly.summary import build_summary

JANUARY = parse_month("2024-01")
FEBRUARY = parse_month("2024-02")


def make_file(path: Path, marker: str, lines: int) -> Path:
    """A CSV whose every line names `marker`, so a mixed download would show."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(PREDICTION_COLUMNS) + "\n")
        for n in range(lines):
            handle.write(f"202401/{marker}-{n:06d}.jpg,empty,,,,,,,,640,480,\n")
    return path


def test_publish_writes_csv_then_summary_that_describes_it(containers, tmp_path) -> None:
    local = make_file(tmp_path / "p.csv", "new", 50)

    written = publish(containers.output, JANUARY, local, {"month": "2024-01", "images": 50})

    published = load_published(containers.output, JANUARY)
    assert published.predictions == local.read_bytes()
    assert published.summary == written
    assert written["images"] == 50 and written["published_at"]
    assert written["predictions"] == {
        "blob": "202401/predictions.csv",
        "bytes": local.stat().st_size,
        "sha256": hashlib.sha256(local.read_bytes()).hexdigest(),
    }
    props = containers.output.get_blob_client("202401/predictions.csv").get_blob_properties()
    assert props.content_settings.content_type.startswith("text/csv")
    summary_props = containers.output.get_blob_client("202401/summary.json").get_blob_properties()
    assert summary_props.last_modified >= props.last_modified  # summary comes after the CSV
    assert sorted(b.name for b in containers.output.list_blobs()) == [
        "202401/predictions.csv", "202401/predictions.parquet", "202401/report.html", "202401/summary.json"]
    parquet_props = containers.output.get_blob_client("202401/predictions.parquet").get_blob_properties()
    assert summary_props.last_modified >= parquet_props.last_modified
    assert written["predictions_parquet"]["sha256"] == hashlib.sha256(published.parquet).hexdigest()


def test_staged_blocks_are_invisible_until_committed(containers, tmp_path) -> None:
    old = make_file(tmp_path / "old.csv", "old", 200)
    new = make_file(tmp_path / "new.csv", "new", 400)
    publish(containers.output, JANUARY, old, {"images": 200})
    blob = containers.output.get_blob_client(OutputPaths(JANUARY).predictions)

    upload = stage_file_blocks(blob, new, block_size=1024)

    assert len(upload.block_ids) > 5
    assert len({len(block_id) for block_id in upload.block_ids}) == 1  # Azure needs equal-length ids
    assert blob.download_blob().readall() == old.read_bytes()  # a reader still sees the old file whole
    commit_blocks(blob, upload, "text/csv")
    assert blob.download_blob().readall() == new.read_bytes()


def test_concurrent_reader_sees_old_or_new_file_never_a_mix(containers, tmp_path) -> None:
    old = make_file(tmp_path / "old.csv", "old", 3000)
    new = make_file(tmp_path / "new.csv", "new", 5000)
    publish(containers.output, JANUARY, old, {"images": 3000})
    blob = containers.output.get_blob_client(OutputPaths(JANUARY).predictions)
    seen: list[bytes] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.append(blob.download_blob().readall())
        seen.append(blob.download_blob().readall())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        publish(containers.output, JANUARY, new, {"images": 5000}, block_size=4096)
    finally:
        done.set()
        thread.join()

    allowed = {old.read_bytes(), new.read_bytes()}
    assert seen and all(content in allowed for content in seen)
    assert seen[-1] == new.read_bytes()


def test_failed_publish_leaves_the_previous_outputs_untouched(containers, tmp_path) -> None:
    publish(containers.output, JANUARY, make_file(tmp_path / "old.csv", "old", 10), {"images": 10})
    before = {b.name: b.etag for b in containers.output.list_blobs()}

    with pytest.raises(TypeError):
        publish(containers.output, JANUARY, make_file(tmp_path / "new.csv", "new", 20), {"when": object()})
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        publish(containers.output, JANUARY, tmp_path / "missing.csv", {"images": 1})

    assert {b.name: b.etag for b in containers.output.list_blobs()} == before
    assert load_published(containers.output, JANUARY).summary["images"] == 10


def test_a_csv_that_does_not_match_its_summary_is_detected(containers, tmp_path) -> None:
    publish(containers.output, JANUARY, make_file(tmp_path / "old.csv", "old", 10), {"images": 10})
    blob = containers.output.get_blob_client(OutputPaths(JANUARY).predictions)
    commit_blocks(blob, stage_file_blocks(blob, make_file(tmp_path / "other.csv", "other", 5)), "text/csv")
    with pytest.raises(PublishedMismatchError, match="202401/predictions.csv"):
        load_published(containers.output, JANUARY)


def test_publishing_a_month_never_touches_another(containers, tmp_path) -> None:
    publish(containers.output, FEBRUARY, make_file(tmp_path / "feb.csv", "feb", 10), {"month": "2024-02"})
    february = {b.name: b.etag for b in containers.output.list_blobs(name_starts_with="202402/")}

    publish(containers.output, JANUARY, make_file(tmp_path / "jan.csv", "jan", 10), {"month": "2024-01"})
    publish(containers.output, JANUARY, make_file(tmp_path / "jan2.csv", "jan2", 12), {"month": "2024-01"})

    assert {b.name: b.etag for b in containers.output.list_blobs(name_starts_with="202402/")} == february
    assert load_published(containers.output, FEBRUARY).summary["month"] == "2024-02"
    assert b"jan2-000011" in load_published(containers.output, JANUARY).predictions


def test_unpublished_month_is_a_clear_error(containers) -> None:
    with pytest.raises(LookupError, match="2024-01 is not published"):
        load_published(containers.output, JANUARY)


def test_stage_merge_publish_summary(containers, tmp_path) -> None:
    images = [f"202401/cam/{i:02d}.jpg" for i in range(12)]
    upload_names(containers.input, images + ["202401/readme.md"])
    stage = stage_month(containers.input, containers.work, JANUARY, run_key("run-1"), shard_size=4)
    written_rows = write_results(containers.work, stage, skip={"shard-00002"})
    report = merge_shards(containers.work, stage, tmp_path / "p.csv", failed_shards={"shard-00002": "exit code 1: boom"})

    summary = build_summary(stage, report, run_id="run-1", node_time_seconds=12.5, wall_time_seconds=30.25)
    published = publish(containers.output, JANUARY, tmp_path / "p.csv", summary)
    folder = save_published(containers.output, JANUARY, tmp_path / "demo-output")

    rows = list(csv.DictReader(io.StringIO((folder / "predictions.csv").read_text(encoding="utf-8"))))
    assert {row["image"] for row in rows} == set(images)
    assert json.loads((folder / "summary.json").read_text()) == published
    assert published["images"] == 12 and published["rows"] == len(rows)
    assert published["outcome"] == "complete-with-errors"
    assert published["shards"] == 3 and published["failed_shards"] == {"shard-00002": "exit code 1: boom"}
    ok_rows = [r for shard in ("shard-00000", "shard-00001") for r in written_rows[shard] if r[1] == "ok"]
    assert published["detections"] == len(ok_rows) == sum(published["detections_per_class"].values())
    assert published["errors"] == published["status_counts"]["error"] == sum(1 for r in rows if r["status"] == "error")
    assert published["skipped"]["count"] == 1 and published["skipped"]["first"][0]["name"] == "202401/readme.md"
    assert published["source"] == {"container": containers.input.container_name, "prefix": "202401/"}
    assert (published["run_id"], published["node_time_seconds"], published["wall_time_seconds"]) == ("run-1", 12.5, 30.25)


def test_empty_month_publishes_a_header_only_csv_and_says_so(containers, tmp_path) -> None:
    upload_names(containers.input, ["202402/not-this-month.jpg"])
    stage = stage_month(containers.input, containers.work, JANUARY, run_key("empty"), shard_size=4)
    report = merge_shards(containers.work, stage, tmp_path / "p.csv")
    summary = build_summary(stage, report, run_id="empty", node_time_seconds=0, wall_time_seconds=1)

    publish(containers.output, JANUARY, tmp_path / "p.csv", summary)

    published = load_published(containers.output, JANUARY)
    assert published.predictions.decode() == ",".join(PREDICTION_COLUMNS) + "\n"
    assert published.summary["images"] == 0 and published.summary["outcome"] == "no-images"
    assert published.summary["shards"] == 0 and published.summary["detections"] == 0


def test_missing_output_container_is_named(blob_service, tmp_path) -> None:
    missing = blob_service.get_container_client("no-such-predictions")
    with pytest.raises(LookupError, match="no-such-predictions"):
        publish(missing, JANUARY, make_file(tmp_path / "p.csv", "x", 1), {"images": 1})
