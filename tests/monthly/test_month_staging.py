"""Staging against a real Azurite: which blobs become images, the manifests, and re-staging."""
from __future__ import annotations

import json

import pytest
from monthly_testdata import upload_names, write_results

from include.monthly.layout import parse_month, run_key
from include.monthly.staging import StageResult, list_names, load_stage, load_staged, read_manifest, stage_month

MONTH = parse_month("2024-01")
ODD_IMAGES = [
    "202401/plain.jpg",
    "202401/with space.JPG",
    "202401/quote's \"double\".png",
    "202401/semi;colon.jpeg",
    "202401/$(touch pwned).jpg",
    "202401/`backtick`.webp",
    "202401/-leading-dash.jpg",
    "202401/--help.bmp",
    "202401/ünïcødé 画像.tif",
    "202401/nested/deeper/still.TIFF",
    "202401/nested/x.jpg",
    "202401/%2F encoded.png",
]
NOT_IMAGES = ["202401/readme.txt", "202401/nested/data.json", "202401/noext", "202401/archive.jpg.zip"]
LINE_BREAK_IMAGES = ["202401/two\nlines.jpg", "202401/carriage\rreturn.jpg", "202401/sep\u2028arator.jpg"]
OTHER_MONTHS = ["202402/feb.jpg", "2024011/not-january.jpg", "202312/dec.jpg", "x202401/y.jpg"]


def test_stage_lists_images_and_records_every_other_blob(containers) -> None:
    upload_names(containers.input, ODD_IMAGES + NOT_IMAGES + LINE_BREAK_IMAGES + OTHER_MONTHS)
    key = run_key("manual__2024-02-01T00:00:00+00:00")

    stage = stage_month(containers.input, containers.work, MONTH, key, shard_size=5)

    assert stage.image_count == len(ODD_IMAGES)
    assert stage.shard_ids == ["shard-00000", "shard-00001", "shard-00002"]
    assert [shard.image_count for shard in stage.shards] == [5, 5, 2]
    listed = [name for blob in stage.manifest_blobs for name in read_manifest(containers.work, blob)]
    assert listed == sorted(ODD_IMAGES)  # every image once, in a deterministic order
    assert stage.skipped_count == len(NOT_IMAGES) + len(LINE_BREAK_IMAGES)
    reasons = {item.name: item.reason for item in stage.skipped}
    assert set(reasons) == set(NOT_IMAGES + LINE_BREAK_IMAGES)
    assert "line break" in reasons["202401/two\nlines.jpg"]
    assert "not an image" in reasons["202401/readme.txt"]
    for blob in stage.manifest_blobs:
        assert blob.startswith(f"runs/202401/{key}/manifests/shard-")


def test_manifest_is_utf8_one_name_per_line(containers) -> None:
    upload_names(containers.input, ODD_IMAGES)
    stage = stage_month(containers.input, containers.work, MONTH, run_key("r"), shard_size=100)
    raw = containers.work.download_blob(stage.manifest_blobs[0]).readall()
    assert raw.decode("utf-8") == "".join(f"{name}\n" for name in sorted(ODD_IMAGES))


def test_stage_record_round_trips(containers) -> None:
    upload_names(containers.input, ODD_IMAGES + NOT_IMAGES)
    stage = stage_month(containers.input, containers.work, MONTH, run_key("r"), shard_size=4)

    assert load_stage(containers.work, MONTH, run_key("r")) == stage
    record = json.loads(containers.work.download_blob(stage.paths.stage_record).readall())
    assert record["month"] == "2024-01" and record["image_count"] == len(ODD_IMAGES)
    assert [shard["image_count"] for shard in record["shards"]] == [4, 4, 4]
    assert StageResult.from_dict(json.loads(json.dumps(stage.to_dict()))) == stage  # XCom-safe


def test_restaging_keeps_results_of_unchanged_shards(containers) -> None:
    upload_names(containers.input, ODD_IMAGES)
    stage = stage_month(containers.input, containers.work, MONTH, run_key("r"), shard_size=4)
    write_results(containers.work, stage)
    results_before = {b.name: b.etag for b in containers.work.list_blobs(name_starts_with=stage.paths.results_prefix)}

    again = stage_month(containers.input, containers.work, MONTH, run_key("r"), shard_size=4)

    assert again == stage
    results_after = {b.name: b.etag for b in containers.work.list_blobs(name_starts_with=stage.paths.results_prefix)}
    assert results_after == results_before and len(results_after) == 3


def test_restaging_with_another_shard_size_removes_stale_files(containers) -> None:
    upload_names(containers.input, ODD_IMAGES)
    first = stage_month(containers.input, containers.work, MONTH, run_key("r"), shard_size=2)
    write_results(containers.work, first)
    log_blob = first.paths.log("shard-00005", "stderr")
    containers.work.upload_blob(log_blob, b"old attempt")

    second = stage_month(containers.input, containers.work, MONTH, run_key("r"), shard_size=5)

    manifests = sorted(b.name for b in containers.work.list_blobs(name_starts_with=second.paths.manifests_prefix))
    assert manifests == sorted(second.manifest_blobs) and len(manifests) == 3
    leftovers = [b.name for b in containers.work.list_blobs(name_starts_with=second.paths.prefix)
                 if "/results/" in b.name or "/logs/" in b.name]
    assert leftovers == []  # every shard's content changed, so no old result or log may survive
    listed = [name for blob in second.manifest_blobs for name in read_manifest(containers.work, blob)]
    assert listed == sorted(ODD_IMAGES)


def test_runs_and_months_do_not_share_files(containers) -> None:
    upload_names(containers.input, ODD_IMAGES + OTHER_MONTHS)
    january = stage_month(containers.input, containers.work, MONTH, run_key("run-a"), shard_size=3)
    other_run = stage_month(containers.input, containers.work, MONTH, run_key("run-b"), shard_size=5)
    february = stage_month(containers.input, containers.work, parse_month("2024-02"), run_key("run-a"), shard_size=3)

    assert february.image_count == 1
    assert read_manifest(containers.work, february.manifest_blobs[0]) == ["202402/feb.jpg"]
    # Staging run-b and February left run-a's January manifests alone.
    assert load_stage(containers.work, MONTH, run_key("run-a")) == january
    assert all(containers.work.get_blob_client(b).exists() for b in january.manifest_blobs)
    assert set(january.manifest_blobs).isdisjoint(other_run.manifest_blobs)


def test_empty_month_stages_nothing(containers) -> None:
    upload_names(containers.input, OTHER_MONTHS + ["202401/only-notes.txt"])
    stage = stage_month(containers.input, containers.work, MONTH, run_key("r"), shard_size=10)
    assert (stage.image_count, stage.shards, stage.skipped_count) == (0, (), 1)
    assert load_stage(containers.work, MONTH, run_key("r")).image_count == 0


@pytest.mark.parametrize("bad", [0, -3, True, "10", 2.5, None])
def test_bad_shard_size_is_rejected_before_anything_is_written(containers, bad) -> None:
    upload_names(containers.input, ODD_IMAGES)
    with pytest.raises(ValueError, match="shard_size") as caught:
        stage_month(containers.input, containers.work, MONTH, run_key("r"), shard_size=bad)
    assert repr(bad) in str(caught.value)
    assert list(containers.work.list_blobs()) == []


@pytest.mark.parametrize("bad", ["../other", "", "UPPER", "a/b", "x" * 65])
def test_unsafe_run_key_is_rejected(containers, bad) -> None:
    with pytest.raises(ValueError, match="run_key"):
        stage_month(containers.input, containers.work, MONTH, bad, shard_size=3)
    assert list(containers.work.list_blobs()) == []


def test_missing_input_container_is_named(containers, blob_service) -> None:
    missing = blob_service.get_container_client("no-such-images")
    with pytest.raises(LookupError, match="no-such-images"):
        stage_month(missing, containers.work, MONTH, run_key("r"), shard_size=3)


def test_missing_work_container_is_named(containers, blob_service) -> None:
    upload_names(containers.input, ODD_IMAGES)
    missing = blob_service.get_container_client("no-such-work")
    with pytest.raises(LookupError, match="no-such-work"):
        stage_month(containers.input, missing, MONTH, run_key("r"), shard_size=3)


def test_listing_reads_every_page_and_names_as_stored(containers) -> None:
    # Names that XML must escape, non-ASCII, spaces and percent signs, over pages of 2 (NextMarker followed).
    names = ["202402/a&b<c>.jpg", "202402/caf\u00e9 \u00fc.jpg", "202402/100% sure.jpg", "202402/x/'q\".png",
             "202402/z.jpg"]
    upload_names(containers.input, names + ["202403/other-month.jpg"])
    assert list(list_names(containers.input, "202402/", page_size=2)) == sorted(names)


def test_staging_reference_is_small_and_loads_back_the_record(containers) -> None:
    upload_names(containers.input, [f"202401/cam/{i:04d}.jpg" for i in range(30)])
    result = stage_month(containers.input, containers.work, parse_month("2024-01"), "run-ref", shard_size=2)
    reference = result.reference()
    assert reference["shard_count"] == 15 and reference["image_count"] == 30
    assert "shards" not in reference and len(json.dumps(reference)) < 400
    assert load_staged(containers.work, reference) == result
    with pytest.raises(ValueError, match="rewritten by another attempt"):
        load_staged(containers.work, {**reference, "image_count": 31})
