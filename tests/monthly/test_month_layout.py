"""Month parsing, run keys and Batch job ids: the names that keep runs apart."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from include.monthly.layout import (
    Month,
    compute_id,
    OutputPaths,
    RunPaths,
    job_id,
    parse_month,
    pool_id,
    run_key,
)
from include.monthly.staging import is_image_name, validate_run_key

BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
AML_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
RUN_IDS = [
    "manual__2024-02-01T00:00:00+00:00",
    "scheduled__2024-02-01T00:00:00+00:00",
    "backfill__2024-02-01T00:00:00+00:00",
    "Manual__2024-02-01T00:00:00+00:00",  # differs only in case (Batch ids are case-insensitive)
    "manual__2024-02-01T00:00:00-00:00",  # slugs like the first one
    "a" * 250,
    "ü/../;$(rm -rf /)`x` 月次",
]


def test_parse_month_gives_prefix_and_key() -> None:
    month = parse_month("2024-01")
    assert (month.year, month.month) == (2024, 1)
    assert month.prefix == "202401/"
    assert month.key == "202401"
    assert str(month) == "2024-01"
    assert parse_month("1999-12").prefix == "199912/"


@pytest.mark.parametrize(
    "text", ["2024-13", "2024-00", "24-1", "2024-1", "2024/01", "202401", "2024-01-01", "", "abcd-ef", "0000-05"]
)
def test_parse_month_rejects_bad_input_naming_it(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_month(text)
    assert repr(text) in str(caught.value)


def test_month_of_a_data_interval_start() -> None:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert Month.of(start) == parse_month("2024-01")
    assert Month.of(dt.date(2023, 12, 31)).prefix == "202312/"


def test_run_key_is_deterministic_distinct_and_safe() -> None:
    keys = [run_key(run_id) for run_id in RUN_IDS]
    assert keys == [run_key(run_id) for run_id in RUN_IDS]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert validate_run_key(key) == key
        assert BATCH_ID.match(key) and len(key) <= 64 and "/" not in key


def test_run_key_rejects_empty_run_id() -> None:
    with pytest.raises(ValueError, match="run_id"):
        run_key("")


def test_job_id_is_deterministic_distinct_per_month_run_and_dag() -> None:
    months = [parse_month(m) for m in ("2024-01", "2024-02", "2025-01")]
    ids = {
        (dag, str(month), run): job_id(dag, month, run)
        for dag in ("monthly_detection", "monthly_detection_v2", "x" * 200)
        for month in months
        for run in RUN_IDS
    }
    assert len(set(ids.values())) == len(ids)
    assert len({value.lower() for value in ids.values()}) == len(ids)
    for (dag, month, run), value in ids.items():
        assert BATCH_ID.match(value), value
        assert AML_JOB_NAME.match(value), value  # the same id names the Azure ML job
        assert value == job_id(dag, parse_month(month), run)


def test_pool_ids_follow_the_same_rule() -> None:
    keys = [run_key(run_id) for run_id in RUN_IDS]
    pools = [pool_id("yolo-gpu", key) for key in keys]
    assert len(set(pools)) == len(pools)
    for key, value in zip(keys, pools):
        assert value == f"yolo-gpu-{key}" and BATCH_ID.match(value), value
    # A prefix too long for the run key beside it: cut, but every run still gets a pool of its own
    # (runs sharing a pool would tear down each other's nodes).
    long_prefix = [pool_id("p" * 70, key) for key in keys]
    assert len(set(long_prefix)) == len(keys)
    assert all(len(value) <= 64 and BATCH_ID.match(value) and value.startswith("p" * 50) for value in long_prefix)
    assert compute_id("a-", "b", digest_of=("x",)).startswith("a--b-")  # parts kept as given, digest last


def test_job_id_is_readable() -> None:
    value = job_id("monthly_detection", parse_month("2024-01"), "manual__2024-02-01T00:00:00+00:00")
    assert value.startswith("monthly-detection-202401-manual-2024-02-01")


def test_run_paths_keep_months_and_runs_apart() -> None:
    january = RunPaths(parse_month("2024-01"), run_key("r1"))
    assert january.manifest("shard-00000") == f"runs/202401/{run_key('r1')}/manifests/shard-00000.txt"
    assert january.result("shard-00003").endswith("/results/shard-00003.csv")
    assert january.log("shard-00001", "stderr").endswith("/logs/shard-00001/stderr.txt")
    assert january.code("score.pyz") == f"{january.prefix}code/score.pyz"
    assert january.merged_predictions == f"{january.prefix}merged/predictions.csv"
    others = [RunPaths(parse_month("2024-02"), run_key("r1")), RunPaths(parse_month("2024-01"), run_key("r2"))]
    for other in others:
        assert not other.prefix.startswith(january.prefix) and not january.prefix.startswith(other.prefix)
    assert OutputPaths(parse_month("2024-01")).predictions == "202401/predictions.csv"
    assert OutputPaths(parse_month("2024-01")).summary == "202401/summary.json"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("202401/a.jpg", True),
        ("202401/deep/er/B.JPEG", True),
        ("202401/x.Png", True),
        ("202401/x.bmp", True),
        ("202401/x.tif", True),
        ("202401/x.TIFF", True),
        ("202401/x.webp", True),
        ("202401/notes.txt", False),
        ("202401/archive.jpg.zip", False),
        ("202401/jpg", False),
        ("202401/folder.jpg/", False),
    ],
)
def test_image_names_are_chosen_by_extension(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected
