"""Merging shard results against a real Azurite: order, reconciliation, failed shards, memory."""
from __future__ import annotations

import csv
import filecmp
from collections import Counter
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient
from monthly_testdata import CLASSES, csv_bytes, upload_names, write_results

from include.monthly.layout import parse_month, run_key
from include.monthly.merge import MissingImagesError, ShardResultError, merge_shards
from include.monthly.schema import PREDICTION_COLUMNS
from include.monthly.staging import StageResult, read_manifest, stage_month

MONTH = parse_month("2024-01")
IMAGES = [f"202401/cam{c}/img {i:03d}.jpg" for c in range(2) for i in range(11)] + ["202401/q\"uote;$(x).png"]


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def staged(containers) -> StageResult:
    upload_names(containers.input, IMAGES + ["202401/notes.txt"])
    return stage_month(containers.input, containers.work, MONTH, run_key("merge-run"), shard_size=5)


def test_merge_concatenates_shards_in_order_with_one_header(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    out = tmp_path / "predictions.csv"

    report = merge_shards(containers.work, staged, out)

    rows = read_csv(out)
    assert rows[0] == list(PREDICTION_COLUMNS)
    expected_rows = [row for shard in staged.shard_ids for row in written[shard]]
    assert rows[1:] == expected_rows
    assert sorted({row[0] for row in rows[1:]}) == sorted(IMAGES)
    assert report.images == len(IMAGES) == staged.image_count
    assert report.rows == len(expected_rows)
    assert report.shards == 5 and report.failed_shards == {}
    assert report.detections_per_class == dict(Counter(r[3] for r in expected_rows if r[1] == "ok"))
    first_status = {}
    for row in expected_rows:
        first_status.setdefault(row[0], row[1])
    assert report.status_counts == dict(Counter(first_status.values()))
    assert sum(report.status_counts.values()) == len(IMAGES)


def test_failed_shard_becomes_error_rows_for_each_of_its_images(containers, staged, tmp_path, caplog) -> None:
    write_results(containers.work, staged, skip={"shard-00001"})
    reason = "exit code 3: CUDA error; url=https://acct.blob/x?sv=2024&sig=SECRETSIG123&se=1"
    out = tmp_path / "predictions.csv"
    caplog.set_level("INFO")

    report = merge_shards(containers.work, staged, out, failed_shards={"shard-00001": reason})

    failed_images = read_manifest(containers.work, staged.shards[1].manifest)
    error_rows = [row for row in read_csv(out)[1:] if row[0] in failed_images]
    assert [row[0] for row in error_rows] == failed_images
    for row in error_rows:
        assert row[1] == "error"
        assert "shard-00001" in row[-1] and "exit code 3: CUDA error" in row[-1]
        assert "SECRETSIG123" not in row[-1]
    assert "SECRETSIG123" not in str(report.failed_shards)
    assert "shard-00001" in caplog.text and "SECRETSIG123" not in caplog.text
    assert report.images == len(IMAGES)
    assert report.status_counts["error"] >= len(failed_images)


def test_failed_shard_ignores_its_partial_result(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    partial = written["shard-00002"][:1]
    containers.work.upload_blob(staged.paths.result("shard-00002"), csv_bytes(partial), overwrite=True)

    merge_shards(containers.work, staged, tmp_path / "p.csv", failed_shards={"shard-00002": "evicted"})

    shard_images = read_manifest(containers.work, staged.shards[2].manifest)
    rows = [row for row in read_csv(tmp_path / "p.csv")[1:] if row[0] in shard_images]
    assert [row[1] for row in rows] == ["error"] * len(shard_images)


def test_missing_image_fails_naming_image_and_shard(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    shard = staged.shards[3]
    dropped = written[shard.id][0][0]
    kept = [row for row in written[shard.id] if row[0] != dropped]
    containers.work.upload_blob(staged.paths.result(shard.id), csv_bytes(kept), overwrite=True)
    out = tmp_path / "predictions.csv"

    with pytest.raises(MissingImagesError) as caught:
        merge_shards(containers.work, staged, out)

    assert caught.value.shard == shard.id and caught.value.missing == [dropped]
    assert repr(dropped) in str(caught.value) and shard.id in str(caught.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left behind


def test_missing_result_of_a_shard_not_listed_as_failed_is_an_error(containers, staged, tmp_path) -> None:
    write_results(containers.work, staged, skip={"shard-00004"})
    with pytest.raises(ShardResultError, match="shard-00004.*missing"):
        merge_shards(containers.work, staged, tmp_path / "p.csv")


def test_wrong_header_is_an_error_naming_the_shard(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    header = ["image", "status", "class", "confidence"]
    bad = [row[:4] for row in written["shard-00002"]]
    containers.work.upload_blob(staged.paths.result("shard-00002"), csv_bytes(bad, header), overwrite=True)
    with pytest.raises(ShardResultError, match="shard-00002.*header"):
        merge_shards(containers.work, staged, tmp_path / "p.csv")


def test_rows_for_an_image_outside_the_manifest_are_an_error(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    foreign = read_manifest(containers.work, staged.shards[0].manifest)[0]  # belongs to shard 0
    rows = written["shard-00001"] + [[foreign, "empty", "", "", "", "", "", "", "", "1", "1", ""]]
    containers.work.upload_blob(staged.paths.result("shard-00001"), csv_bytes(rows), overwrite=True)
    with pytest.raises(ShardResultError, match=r"shard-00001.*not in its manifest") as caught:
        merge_shards(containers.work, staged, tmp_path / "p.csv")
    assert repr(foreign) in str(caught.value)


def test_an_image_scored_twice_is_an_error(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    rows = written["shard-00000"] + written["shard-00000"][:1]
    containers.work.upload_blob(staged.paths.result("shard-00000"), csv_bytes(rows), overwrite=True)
    with pytest.raises(ShardResultError, match="shard-00000.*twice"):
        merge_shards(containers.work, staged, tmp_path / "p.csv")


def test_unknown_status_is_an_error(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    rows = [list(row) for row in written["shard-00000"]]
    rows[0][1] = "maybe"
    containers.work.upload_blob(staged.paths.result("shard-00000"), csv_bytes(rows), overwrite=True)
    with pytest.raises(ShardResultError, match="unknown status 'maybe'"):
        merge_shards(containers.work, staged, tmp_path / "p.csv")


def test_failed_shards_must_be_staged_shards(containers, staged, tmp_path) -> None:
    with pytest.raises(ValueError, match="shard-00099"):
        merge_shards(containers.work, staged, tmp_path / "p.csv", failed_shards={"shard-00099": "x"})


def test_empty_month_gives_a_header_only_file(containers, tmp_path) -> None:
    stage = stage_month(containers.input, containers.work, MONTH, run_key("empty"), shard_size=5)
    out = tmp_path / "predictions.csv"
    report = merge_shards(containers.work, stage, out)
    assert read_csv(out) == [list(PREDICTION_COLUMNS)]
    assert (report.images, report.rows, report.shards) == (0, 0, 0)


def test_merge_streams_a_large_shard_chunk_by_chunk(azurite, containers, tmp_path) -> None:
    """A ~9 MiB result is written out while it is still being downloaded, 1 MiB at a time.

    Each ranged GET of the result is observed with a response hook, together
    with how much of the output was written by then: rows must already be on
    disk before the last chunk arrives, i.e. the merge never holds the whole
    result (memory is bounded by the download chunk size, not the month).
    """
    images = [f"202401/big/{i:05d}.jpg" for i in range(300)]
    upload_names(containers.input, images, body=b"x")
    stage = stage_month(containers.input, containers.work, MONTH, run_key("big"), shard_size=len(images))
    source = tmp_path / "shard.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        for image in images:
            for n in range(400):
                writer.writerow([image, "ok", n % 4, CLASSES[n % 4], "0.87654321", "10.25", "20.5",
                                 "300.75", "400.125", "1920", "1080", ""])
    size = source.stat().st_size
    assert size > 8 * 1024 * 1024
    with open(source, "rb") as handle:
        containers.work.upload_blob(stage.paths.result("shard-00000"), handle)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    written_at_each_get: list[int] = []

    def on_response(response) -> None:
        if response.http_request.method == "GET" and "results/shard-00000.csv" in response.http_request.url:
            written_at_each_get.append(sum(p.stat().st_size for p in out_dir.iterdir()))

    work = ContainerClient.from_connection_string(
        azurite.connection_string,
        containers.work.container_name,
        max_single_get_size=1024 * 1024,
        max_chunk_get_size=1024 * 1024,
        raw_response_hook=on_response,
    )

    report = merge_shards(work, stage, out_dir / "predictions.csv")

    assert report.rows == len(images) * 400 and report.images == len(images)
    assert filecmp.cmp(source, out_dir / "predictions.csv", shallow=False)
    assert len(written_at_each_get) == -(-size // (1024 * 1024))  # one GET per 1 MiB chunk
    assert written_at_each_get == sorted(written_at_each_get)
    assert written_at_each_get[-1] > size // 2  # most rows were out before the last chunk came in


def test_matching_results_are_verified_without_downloading_manifests(azurite, containers, staged, tmp_path) -> None:
    """Staging's digest settles a result that lists the manifest's images in order: one GET per shard."""
    write_results(containers.work, staged)
    gets: list[str] = []
    work = ContainerClient.from_connection_string(
        azurite.connection_string, containers.work.container_name,
        raw_response_hook=lambda response: gets.append(response.http_request.url.split("?")[0]),
    )
    report = merge_shards(work, staged, tmp_path / "p.csv")
    assert report.images == len(IMAGES)
    assert sorted(url.rsplit("/", 1)[-1] for url in gets) == sorted(f"{s.id}.csv" for s in staged.shards)


def test_results_in_another_order_are_checked_against_the_manifest(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    shuffled = list(reversed(written["shard-00002"]))  # e.g. Azure ML appends rows as mini-batches finish
    containers.work.upload_blob(staged.paths.result("shard-00002"), csv_bytes(shuffled), overwrite=True)
    report = merge_shards(containers.work, staged, tmp_path / "p.csv")
    assert report.images == len(IMAGES)
    assert read_csv(tmp_path / "p.csv")[1:] == [row for shard in staged.shards
                                               for row in (shuffled if shard.id == "shard-00002" else written[shard.id])]


def test_a_manifest_needed_but_missing_is_an_error_naming_the_shard(containers, staged, tmp_path) -> None:
    """A failed shard's manifest names its error rows; a mismatching result's manifest names what is wrong."""
    written = write_results(containers.work, staged)
    containers.work.delete_blob(staged.shards[1].manifest)
    with pytest.raises(ShardResultError, match="shard-00001.*manifest.*missing"):
        merge_shards(containers.work, staged, tmp_path / "p.csv", failed_shards={"shard-00001": "evicted"})
    containers.work.upload_blob(staged.paths.result("shard-00001"), csv_bytes(written["shard-00001"][1:]),
                                overwrite=True)
    with pytest.raises(ShardResultError, match="shard-00001.*manifest.*missing"):
        merge_shards(containers.work, staged, tmp_path / "p.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_rewritten_after_staging_is_an_error(containers, staged, tmp_path) -> None:
    written = write_results(containers.work, staged)
    shard = staged.shards[0]
    images = read_manifest(containers.work, shard.manifest)
    rows = [row for row in written[shard.id] if row[0] != images[0]] + [[
        "202401/elsewhere.jpg", "empty", "", "", "", "", "", "", "", "1", "1", ""]]
    containers.work.upload_blob(staged.paths.result(shard.id), csv_bytes(rows), overwrite=True)
    containers.work.upload_blob(shard.manifest, "".join(f"{n}\n" for n in images[1:] + ["202401/elsewhere.jpg"]),
                                overwrite=True)
    with pytest.raises(ShardResultError, match="shard-00000.*changed after staging"):
        merge_shards(containers.work, staged, tmp_path / "p.csv")
