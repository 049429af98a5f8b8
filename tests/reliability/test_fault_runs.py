"""Faults during a full monthly run (dag.test on the local stack): transient Batch and Blob errors,
spot evictions, failed first attempts, a Batch service restart, and a re-run of a finished month.

Each test runs the production DAG once (twice for the re-run) over a small month and checks the
published CSV: every image present, no row repeated.
"""
from __future__ import annotations

import pendulum
import pytest

from local_stack.demo.seed import seed_month
from include.monthly.layout import parse_month
from reliability_helpers import (
    WhenTaskRuns,
    assert_each_image_once,
    month_images,
    published_rows,
    run_month,
)

pytestmark = pytest.mark.slow


def month_jobs(client, month) -> list:
    return [j for j in client.list_jobs() if j.id.startswith(f"monthly-detection-{month.key}-")]


def test_transient_5xx_and_429_on_batch_calls_are_retried_and_the_run_succeeds(monthly_dag, storage, local_batch, capfd):
    month = parse_month("2025-01")
    seed_month(storage, "images", month, count=3)
    local_batch.emulator("DELETE", "requests")
    for fault in (
        {"kind": "http", "method": "POST", "path": "/pools$", "status": 503, "count": 1, "retryAfter": 1},
        {"kind": "http", "method": "POST", "path": "/jobs$", "status": 500, "count": 1},
        {"kind": "http", "method": "POST", "path": "/addtaskcollection$", "status": 429, "count": 2, "retryAfter": 1},
        {"kind": "http", "method": "GET", "path": "/taskcounts$", "status": 503, "count": 2, "retryAfter": 1},
    ):
        local_batch.emulator("POST", "faults", fault)

    state, states, log, _ = run_month(monthly_dag, capfd, str(month))

    assert state == "success", log[-4000:]
    assert local_batch.emulator("GET", "faults") == []  # every injected fault was met ...
    counts = local_batch.emulator("GET", "requests")
    # ... and answered by a retry of the same request, within the same Airflow try.
    assert counts["Pool_Add"] == 2 and counts["Job_Add"] == 2 and counts["Task_AddCollection"] == 3, counts
    assert counts["Job_GetTaskCounts"] >= 3, counts
    assert all(states[t] == "success" for t in ("ensure_pool", "create_job", "add_tasks", "wait")), states
    assert len(month_jobs(local_batch.client(), month)) == 1
    rows, summary = published_rows(storage, month)
    assert_each_image_once(rows, month_images(storage, month))
    assert summary["errors"] == 1  # the seeded corrupt image, nothing else


def test_transient_5xx_and_429_on_blob_calls_are_retried_and_the_run_succeeds(monthly_dag, storage, wasb_through_proxy, capfd):
    month = parse_month("2025-02")
    seed_month(storage, "images", month, count=3)
    proxy = wasb_through_proxy
    for fault in (
        # staging lists the month (503 with Retry-After) and writes manifests (500)
        {"kind": "http", "method": "GET", "path": "/images$", "status": 503, "count": 1, "retryAfter": 1},
        {"kind": "http", "method": "PUT", "path": "/work/runs/", "status": 500, "count": 1},
        # the scoring tasks read images (throttled with 429 + Retry-After)
        {"kind": "http", "method": "GET", "path": "/images/.+", "status": 429, "count": 2, "retryAfter": 1},
        # merge reads shard results; publish writes the month's output blocks
        {"kind": "http", "method": "GET", "path": "/work/runs/.+/results/", "status": 503, "count": 1},
        {"kind": "http", "method": "PUT", "path": "/predictions/", "status": 503, "count": 2, "retryAfter": 1},
    ):
        proxy.add_fault(fault)

    state, states, log, _ = run_month(monthly_dag, capfd, str(month))

    assert state == "success", log[-4000:]
    assert proxy.faults.describe() == []  # every fault was met and retried past
    counts = proxy.faults.request_counts()
    assert counts["GET /images"] > 5 and counts["PUT /predictions"] >= 4, counts
    assert all(states[t] == "success" for t in ("stage", "merge", "publish")), states
    rows, summary = published_rows(storage, month)
    assert_each_image_once(rows, month_images(storage, month))
    assert summary["errors"] == 1


def test_a_spot_eviction_and_a_failed_first_attempt_lose_and_repeat_nothing(monthly_dag, storage, local_batch, capfd):
    month = parse_month("2025-03")
    seed_month(storage, "images", month, count=4)
    client = local_batch.client()
    # The first attempt of shard-00001 exits 7; maxTaskRetryCount (1 here) lets Batch retry it.
    local_batch.emulator("POST", "faults", {"kind": "task_exit", "jobId": f"^monthly-detection-{month.key}-",
                                            "taskId": "^shard-00001$", "exitCode": 7, "attempts": 1})

    def evict(job_id: str, pool_id: str):
        return local_batch.emulator("POST", "faults", {"kind": "preempt", "poolId": pool_id})

    with WhenTaskRuns(client, month, evict) as eviction:
        state, states, log, _ = run_month(monthly_dag, capfd, str(month))
    assert eviction.error is None, eviction.error

    assert state == "success", log[-4000:]
    requeued = eviction.result["requeuedTasks"]
    assert requeued, eviction.result  # the eviction hit running tasks ...
    (job,) = month_jobs(client, month)
    tasks = {t.id: t for t in client.list_tasks(job.id)}
    for task_id in requeued:
        assert tasks[task_id].execution_info.requeue_count >= 1  # ... which Batch requeued
    assert tasks["shard-00001"].execution_info.retry_count == 1
    assert all(t.execution_info.result == "success" for t in tasks.values())
    rows, summary = published_rows(storage, month)
    assert_each_image_once(rows, month_images(storage, month))
    assert summary["errors"] == 1 and summary["failed_shards"] == {}


def test_a_batch_service_restart_mid_run_completes_the_run(monthly_dag, storage, local_batch, capfd):
    month = parse_month("2025-04")
    seed_month(storage, "images", month, count=4)
    client = local_batch.client()

    with WhenTaskRuns(client, month, lambda job_id, pool_id: local_batch.restart()) as restart:
        state, states, log, _ = run_month(monthly_dag, capfd, str(month))
    assert restart.error is None, restart.error

    assert state == "success", log[-4000:]
    (job,) = month_jobs(client, month)
    tasks = list(client.list_tasks(job.id))
    assert tasks and all(t.execution_info.result == "success" for t in tasks)
    assert any(t.execution_info.requeue_count for t in tasks)  # a running task was cut off and rerun
    rows, _ = published_rows(storage, month)
    assert_each_image_once(rows, month_images(storage, month))


def test_rerunning_a_finished_month_adds_no_job_or_task_and_publishes_the_same_rows(monthly_dag, storage, local_batch, capfd):
    month = parse_month("2025-05")
    seed_month(storage, "images", month, count=3)
    client = local_batch.client()
    logical_date = pendulum.datetime(2025, 6, 1, 3, tz="UTC")  # the same run (same run id) twice
    state, _, log, run_id = run_month(monthly_dag, capfd, str(month), logical_date=logical_date)
    assert state == "success", log[-4000:]
    (job,) = month_jobs(client, month)
    first_tasks = {t.id: (t.execution_info.start_time, t.execution_info.retry_count) for t in client.list_tasks(job.id)}
    first = storage.get_container_client("predictions").download_blob(f"{month.key}/predictions.csv").readall()
    others = {b.name: b.etag for b in storage.get_container_client("predictions").list_blobs()
              if not b.name.startswith(month.prefix)}

    state, states, log, rerun_id = run_month(monthly_dag, capfd, str(month), logical_date=logical_date)

    assert state == "success", log[-4000:]
    assert rerun_id == run_id
    assert [j.id for j in month_jobs(client, month)] == [job.id]  # the job was found, not made again
    assert "already holds its" in log  # the add step saw every task in place
    again = {t.id: (t.execution_info.start_time, t.execution_info.retry_count) for t in client.list_tasks(job.id)}
    assert again == first_tasks  # same task ids, none run again
    second = storage.get_container_client("predictions").download_blob(f"{month.key}/predictions.csv").readall()
    assert second == first
    assert {b.name: b.etag for b in storage.get_container_client("predictions").list_blobs()
            if not b.name.startswith(month.prefix)} == others  # other months untouched
