"""XCom does not grow with the month: the stage record and the task descriptions stay in Blob storage.

The real DAG's ``validate``, ``stage`` and ``build_tasks`` run through ``dag.test()`` against
Azurite, and the bytes they leave in Airflow's metadata database (the ``xcom`` table and the
rendered template fields) are read back from that database. What could grow with a month is
per shard (a manifest digest in the stage record, one Batch task description each), so the
month here has as many shards as 100,000 images at the default shard size of 500 (200 shards
of 10 names), and a ten times smaller month (20 shards) must leave the same amount. The
literal 100,000-image month is measured by ``make bench`` (``bench/scale.py``).
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from include.monthly.config import DagConfig
from include.monthly.layout import RunPaths, parse_month, run_key

XCOM_LIMIT_BYTES = 64 * 1024
SHARDS_AT_100K = 100_000 // DagConfig.shard_size  # 200
SHARD_SIZE = 10
DESCRIBE_TASKS = ["validate", "stage", "build_tasks"]


def seed_names(container, month: str, count: int) -> None:
    """`count` tiny blobs named like camera images (their content is never read by these tasks)."""
    key = parse_month(month).key
    names = [f"{key}/cam-{i % 7}/IMG_{i:06d}.jpg" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: container.upload_blob(name, b"\xff\xd8", overwrite=True), names))


def metadata_bytes(dag_id: str, run_id: str) -> dict[str, int]:
    """Bytes this run left in the xcom table and in the rendered template fields."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcom = session.query(XComModel.value).filter_by(dag_id=dag_id, run_id=run_id).all()
        rendered = session.query(RenderedTaskInstanceFields.rendered_fields).filter_by(
            dag_id=dag_id, run_id=run_id).all()
    size = lambda value: len(value if isinstance(value, (str, bytes)) else json.dumps(value))  # noqa: E731
    return {"xcom": sum(size(value) for (value,) in xcom), "rendered": sum(size(value) for (value,) in rendered),
            "xcom_rows": len(xcom)}


def describe(dag, month: str) -> tuple[object, dict[str, int]]:
    subset = dag.partial_subset(task_ids=DESCRIBE_TASKS, include_upstream=True, include_downstream=False)
    run = subset.test(run_conf={"month": month, "shard_size": SHARD_SIZE})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success" and set(states.values()) == {"success"}, states
    return run, metadata_bytes(dag.dag_id, run.run_id)


@pytest.fixture(scope="module")
def images(storage, batch_connections):
    return storage.get_container_client("images")


def test_xcom_stays_small_and_flat_when_the_month_has_as_many_shards_as_100k_images(monthly_dag, images, storage):
    seed_names(images, "2025-03", 20 * SHARD_SIZE)
    seed_names(images, "2025-04", SHARDS_AT_100K * SHARD_SIZE)
    small_run, small = describe(monthly_dag, "2025-03")
    large_run, large = describe(monthly_dag, "2025-04")

    # XCom carries their location and counts only.
    assert large["xcom"] <= XCOM_LIMIT_BYTES, large
    assert large["xcom"] + large["rendered"] <= XCOM_LIMIT_BYTES, large
    # Ten times the shards, the same bytes (give or take the digits of the counts and the run ids).
    assert abs(large["xcom"] - small["xcom"]) < 200, (small, large)
    assert abs(large["rendered"] - small["rendered"]) < 200, (small, large)

    # The record and every task description are in the run's work folder, complete.
    work = storage.get_container_client("work")
    paths = RunPaths(parse_month("2025-04"), run_key(large_run.run_id))
    record = json.loads(work.get_blob_client(paths.stage_record).download_blob().readall())
    assert record["image_count"] == SHARDS_AT_100K * SHARD_SIZE and len(record["shards"]) == SHARDS_AT_100K
    specs = work.get_blob_client(paths.task_specs).download_blob().readall().decode().splitlines()
    assert [json.loads(line)["id"] for line in specs] == [shard["id"] for shard in record["shards"]]
