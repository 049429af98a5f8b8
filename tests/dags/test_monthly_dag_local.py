"""The monthly DAG end to end with dag.test() on the local stack: Azurite, the local Batch
service running real YOLO scoring tasks, and the same DAG code as in production."""
from __future__ import annotations

import csv
import io
import threading
import time

import pytest
from azure.batch import models as batch_models
from azure.batch.models._models import BatchJobTerminateOptions  # not re-exported by azure-batch 15.1

from local_stack.demo.seed import seed_month
from include.monthly.layout import parse_month
from include.monthly.publish import load_published


@pytest.fixture(scope="module")
def monthly_dag_overrides() -> dict[str, str]:
    """A price for the tests' CPU VM size (the default table has GPU sizes only), so the month's cost is stated."""
    return {"MONTHLY_DETECTION_VM_PRICES": '{"Standard_D2s_v3": {"spot": 0.02, "dedicated": 0.1}}'}


def run_month(dag, capfd, month: str, **conf):
    run = dag.test(run_conf={"month": month, **conf})
    out, err = capfd.readouterr()
    return str(run.state), {ti.task_id: str(ti.state) for ti in run.get_task_instances()}, out + err


def rows_of(published) -> list[dict]:
    return list(csv.DictReader(io.StringIO(published.predictions.decode("utf-8"))))


def test_a_month_is_scored_merged_and_published_with_every_image_accounted_for(monthly_dag, storage, batch_connections,
                                                                              scoring_registry, capfd):
    seed_month(storage, "images", parse_month("2024-01"), count=10)
    state, states, log = run_month(monthly_dag, capfd, "2024-01")
    assert state == "success", log[-4000:]
    # The shards ran in the scoring image, pulled with the registry login of the connection, which no log shows.
    assert scoring_registry["password"] not in log
    assert states["teardown"] == "success" and states["wait"] == "success"
    published = load_published(storage.get_container_client("predictions"), parse_month("2024-01"))
    rows = rows_of(published)
    staged = {b.name for b in storage.get_container_client("images").list_blobs(name_starts_with="202401/")
              if not b.name.endswith(".txt")}
    assert {row["image"] for row in rows} == staged          # every image, exactly the staged ones
    assert list(rows[0].keys())[:3] == ["image", "status", "class_id"]
    assert {row["class_name"] for row in rows if row["status"] == "ok"} >= {"person", "bus"}
    errors = [row for row in rows if row["status"] == "error"]
    assert [row["image"] for row in errors] == ["202401/camera-0/corrupt.jpg"]
    summary = published.summary
    assert summary["images"] == 11 and summary["errors"] == 1 and summary["skipped"]["count"] == 1
    assert summary["shards"] == 3 and summary["node_time_seconds"] > 0
    # Node time and cost from the pool's node records and the job's task records.
    compute = summary["compute"]
    assert compute["basis"].startswith("node allocation") and len(compute["nodes"]) == 2
    assert all(node["priority"] == "spot" and node["allocated_seconds"] >= node["busy_seconds"] for node in compute["nodes"])
    assert sum(node["images"] for node in compute["nodes"]) == 11
    assert compute["cost"] == round(compute["node_seconds"]["spot"] / 3600 * compute["price_per_hour"]["spot"], 6) > 0
    assert [s["shard"] for s in summary["shard_records"]] == ["shard-00000", "shard-00001", "shard-00002"]
    assert sum(day["images"] for day in summary["per_day"]) == 11 and summary["day_basis"].startswith("date in the path")
    assert published.parquet and published.report and b"Monthly detection report: 2024-01" in published.report
    assert "tasks done" in log  # progress lines from the deferred wait
    # Teardown deleted the run's pool: nothing keeps billing.
    pools = [p.id for p in batch_connections.client().list_pools()]
    assert not any(p.startswith("yolo-gpu-") for p in pools), pools


def test_an_empty_month_publishes_an_empty_result_without_a_pool(monthly_dag, storage, capfd):
    state, states, log = run_month(monthly_dag, capfd, "2023-07")
    assert state == "success", log[-4000:]
    assert states["ensure_pool"] == "skipped" and states["publish"] == "success"
    assert states["build_tasks"] == "skipped"  # no Batch task descriptions for a month without images
    assert "no images in this month's folder" in log
    published = load_published(storage.get_container_client("predictions"), parse_month("2023-07"))
    assert rows_of(published) == [] and published.predictions.decode().startswith("image,status,")
    assert published.summary["outcome"] == "no-images" and published.summary["images"] == 0


def test_a_shard_failing_for_good_fails_the_run_naming_it_and_tears_down(monthly_dag, storage, batch_connections, capfd):
    month = parse_month("2024-02")
    seed_month(storage, "images", month, count=6)
    batch_connections.emulator("POST", "/_emulator/faults",
                               {"kind": "task_exit", "jobId": "-202402-", "taskId": "^shard-00001$",
                                "exitCode": 3, "attempts": 2})
    state, states, log = run_month(monthly_dag, capfd, "2024-02")
    assert state == "failed"
    assert states["wait"] == "failed" and states["publish"] == "upstream_failed"
    assert "shard-00001 (exit code 3)" in log
    assert states["teardown"] == "success"
    assert not storage.get_container_client("predictions").get_blob_client("202402/predictions.csv").exists()

    # Within the error threshold, the failed shard's images become error rows instead.
    batch_connections.emulator("POST", "/_emulator/faults",
                               {"kind": "task_exit", "jobId": "-202402-", "taskId": "^shard-00001$",
                                "exitCode": 3, "attempts": 2})
    state, _, log = run_month(monthly_dag, capfd, "2024-02", error_threshold="50%")
    assert state == "success", log[-4000:]
    published = load_published(storage.get_container_client("predictions"), month)
    rows = rows_of(published)
    failed = [row for row in rows if row["status"] == "error" and "exit code 3" in row["error"]]
    assert len(failed) == 3  # 7 images in shards of 4: shard-00001 held the last 3; none dropped
    assert published.summary["images"] == 7
    assert published.summary["failed_shards"].keys() == {"shard-00001"}
    batch_connections.emulator("DELETE", "/_emulator/faults")


def test_a_batch_run_without_a_scoring_runtime_is_refused_by_validate_before_any_pool(parse_monthly_dag, batch_connections, capfd):
    """On Azure such a pool's every shard fails with ModuleNotFoundError (tests/local_batch/test_batch_runtime.py)."""
    pools_before = {p.id for p in batch_connections.client().list_pools()}
    with parse_monthly_dag(MONTHLY_DETECTION_SCORING_RUNTIME="", MONTHLY_DETECTION_CONTAINER_IMAGE="") as dag:
        state, states, log = run_month(dag, capfd, "2024-03")
    assert state == "failed" and states["validate"] == "failed"
    assert states["stage"] == "upstream_failed" and states["ensure_pool"] in ("upstream_failed", "skipped")
    assert "MONTHLY_DETECTION_SCORING_RUNTIME=''" in log and "no scoring runtime" in log
    assert {p.id for p in batch_connections.client().list_pools()} == pools_before


class _OnceAShardRuns(threading.Thread):
    """In the background, as soon as the month's job holds all its tasks and one runs, ``act(job_id)``.

    Stands in for a person (or a policy) acting on the job in the portal during the run;
    ``acted_while`` keeps the task counts it saw when it acted.
    """

    def __init__(self, client, month_key: str, act) -> None:
        super().__init__(daemon=True)
        self.client, self.month_key, self.act = client, month_key, act
        self.acted_while = None
        self.start()

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and self.acted_while is None:
            for job in self.client.list_jobs(filter="state eq 'active'"):
                mode = getattr(job.all_tasks_complete_mode, "value", job.all_tasks_complete_mode)
                if f"-{self.month_key}-" not in job.id or str(mode).lower() != "terminatejob":
                    continue
                counts = self.client.get_job_task_counts(job.id).task_counts
                if counts.running and counts.active:
                    self.act(job.id)
                    self.acted_while = counts
            time.sleep(0.2)


def test_a_job_terminated_by_hand_ends_the_wait_and_its_unrun_shards_become_error_rows(
        monthly_dag, storage, batch_connections, capfd):
    """On Azure a terminated job leaves unstarted tasks active for ever; the wait must end anyway."""
    month = parse_month("2024-03")
    seed_month(storage, "images", month, count=6)
    client = batch_connections.client()
    watcher = _OnceAShardRuns(client, "202403", lambda job_id: client.begin_terminate_job(
        job_id, options=BatchJobTerminateOptions(termination_reason="UserTerminate"), polling_interval=0).result())
    state, states, log = run_month(monthly_dag, capfd, "2024-03", shard_size=1, error_threshold="100%")
    watcher.join(timeout=5)
    assert watcher.acted_while is not None, "the job finished before it could be terminated"
    assert state == "success", log[-4000:]
    assert states["wait"] == "success" and states["teardown"] == "success"
    published = load_published(storage.get_container_client("predictions"), month)
    rows = rows_of(published)
    staged = {b.name for b in storage.get_container_client("images").list_blobs(name_starts_with="202403/")
              if not b.name.endswith(".txt")}
    assert {row["image"] for row in rows} == staged                  # every image accounted for, none twice
    never = [row for row in rows if row["status"] == "error" and "did not complete" in row["error"]]
    assert never and all("UserTerminate" in row["error"] for row in never)
    assert len(published.summary["failed_shards"]) >= len(never)


def test_a_job_past_its_wall_clock_fails_the_run_naming_the_unrun_shards_and_tears_down(
        monthly_dag, storage, batch_connections, capfd):
    month = parse_month("2022-04")  # a month no other test publishes: the check below is on this run alone
    published = storage.get_container_client("predictions").get_blob_client("202204/predictions.csv")
    assert not published.exists()
    seed_month(storage, "images", month, count=6)
    client = batch_connections.client()
    watcher = _OnceAShardRuns(client, "202204", lambda job_id: client.update_job(job_id, batch_models.BatchJobUpdateOptions(
        constraints=batch_models.BatchJobConstraints(max_wall_clock_time="PT1S"))))
    state, states, log = run_month(monthly_dag, capfd, "2022-04", shard_size=1, error_threshold="0")
    watcher.join(timeout=5)
    assert watcher.acted_while is not None, "the job finished before its wall clock could be shortened"
    assert state == "failed"
    assert states["wait"] == "failed" and states["publish"] == "upstream_failed"
    assert "MaxWallClockTimeExpiry" in log and "(never completed)" in log
    assert states["teardown"] == "success"
    assert not published.exists()
    pools = [p.id for p in client.list_pools()]
    assert not any(p.startswith("yolo-gpu-") for p in pools), pools
