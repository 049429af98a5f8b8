"""The monthly DAG through a real Airflow: scheduler, DAG processor, triggerer and API server
(``airflow standalone``), on the local stack. The deferred waits go through the triggerer,
which imports our triggers from the plugins folder as it would in production."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from local_stack.demo.airflow_stack import start_standalone, stop_standalone
from local_stack.demo.backfill import backfill_window, create_backfill, months_between, wait_for_backfill
from local_stack.demo.seed import seed_month
from local_stack.processes import free_port
from include.monthly.layout import parse_month
from include.monthly.publish import load_published

PROJECT_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_env(standalone_env) -> dict[str, str]:
    # One node and shards of 2: tasks run one after another, so the job outlasts the
    # sensor's first check and the wait really defers (a faster job needs no trigger).
    return {**standalone_env, "MONTHLY_DETECTION_SPOT_NODES": "1", "MONTHLY_DETECTION_SHARD_SIZE": "2"}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, airflow_env):
    state_dir = tmp_path_factory.mktemp("airflow-process")
    try:
        api = start_standalone(state_dir, port=free_port(), env=airflow_env, timeout=300)
        api.wait_for_dag("monthly_detection")
        yield api
    finally:
        stop_standalone(state_dir)


def published_images(storage, month) -> tuple[set[str], dict]:
    published = load_published(storage.get_container_client("predictions"), month)
    rows = csv.DictReader(io.StringIO(published.predictions.decode("utf-8")))
    return {row["image"] for row in rows}, published.summary


def failure_report(api, run_id: str) -> str:
    """The failed tasks' logs, so a red test says why."""
    parts = []
    for task_id, ti in api.task_instances("monthly_detection", run_id).items():
        if ti["state"] not in ("success", "skipped", "upstream_failed") and ti["try_number"]:
            try:
                log = api.task_log("monthly_detection", run_id, task_id, ti["try_number"])
            except RuntimeError as err:
                log = str(err)
            parts.append(f"--- {task_id}: {ti['state']}\n{log[-3000:]}")
    return "\n".join(parts)


def seeded_images(storage, month) -> set[str]:
    return {b.name for b in storage.get_container_client("images").list_blobs(name_starts_with=month.prefix)
            if not b.name.endswith(".txt")}


def test_a_ui_trigger_for_a_chosen_month_runs_through_the_triggerer(airflow, storage):
    month = parse_month("2024-05")
    seed_month(storage, "images", month, count=6)
    run_id = airflow.trigger("monthly_detection", {"month": "2024-05"})  # what the UI's trigger form posts
    states = airflow.wait_for_runs("monthly_detection", [run_id], timeout=900)
    assert states[run_id] == "success", failure_report(airflow, run_id)
    tis = airflow.task_instances("monthly_detection", run_id)
    wait_log = airflow.task_log("monthly_detection", run_id, "wait", tis["wait"]["try_number"])
    assert "DEFERRED" in wait_log            # the worker gave its slot back ...
    assert "tasks done" in wait_log          # ... and the triggerer reported progress
    images, summary = published_images(storage, month)
    assert images == seeded_images(storage, month) and summary["images"] == len(images)
    assert summary["run_id"] == run_id


def test_a_backfill_of_three_months_leaves_three_correct_outputs(airflow, airflow_env, storage):
    months = months_between(parse_month("2024-06"), parse_month("2024-08"))
    for count, month in zip((3, 5, 4), months):
        seed_month(storage, "images", month, count=count)
    start, end = backfill_window(months[0], months[-1])
    create_backfill(start, end, env={**os.environ, **airflow_env})
    states = wait_for_backfill(airflow, months, timeout=1500)
    assert set(states.values()) == {"success"}, states
    job_ids = set()
    for month in months:
        images, summary = published_images(storage, month)
        assert images == seeded_images(storage, month)          # this month's images, and only them
        assert summary["month"] == str(month) and summary["errors"] == 1  # each month's corrupt sample
        job_ids.add(json.dumps(summary["run_key"]))
    assert len(job_ids) == 3  # independent runs, independent working folders
