"""The monthly DAG end to end with dag.test() on the local stack: Azurite, the local Batch
service running real YOLO scoring tasks, and the same DAG code as in production."""
from __future__ import annotations

import csv
import io


from include.demo.seed import seed_month
from include.monthly.layout import parse_month
from include.monthly.publish import load_published

def run_month(dag, capfd, month: str, **conf):
    run = dag.test(run_conf={"month": month, **conf})
    out, err = capfd.readouterr()
    return str(run.state), {ti.task_id: str(ti.state) for ti in run.get_task_instances()}, out + err


def rows_of(published) -> list[dict]:
    return list(csv.DictReader(io.StringIO(published.predictions.decode("utf-8"))))


def test_a_month_is_scored_merged_and_published_with_every_image_accounted_for(monthly_dag, storage, batch_connections, capfd):
    seed_month(storage, "images", parse_month("2024-01"), count=10)
    state, states, log = run_month(monthly_dag, capfd, "2024-01")
    assert state == "success", log[-4000:]
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
