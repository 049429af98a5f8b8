"""Azure Batch API requests: our DAG path versus the stock provider's way, counted by the local service.

Counts come from the local Batch service's ``/_emulator/requests`` (requests
per REST operation), reset before each step. The add and stock-poll job's pool
has no nodes, so its tasks stay active and the counts are not disturbed by
running tasks.

- add: the 100 shard tasks that ``scoring_task_specs`` describes for 10,000
  images (shard size 100), turned into Batch tasks by
  ``AzureBatchAddTasksOperator`` (SAS minted from Azurite) and added by
  ``BatchHook.add_tasks``. The stock ``AzureBatchOperator`` adds one task per
  operator with ``AzureBatchHook.add_single_task_to_job``: the same 100 tasks
  that way are the provider-style figure.
- poll: one poll cycle of our ``AzureBatchJobTrigger`` (deferrable) and of
  ``AzureBatchJobSensor.poke`` (poke mode), against one poll cycle of the
  provider's ``AzureBatchTrigger``, which lists every task. Each trigger is run
  with its deadline already past, so it polls exactly once and returns.
  Ours is counted in the two states ``BatchHook.job_progress`` tells apart: a
  task running (a one-node pool whose one task sleeps: the task counts only,
  the judged ``poll_requests_per_cycle``) and nothing running (the job's state
  too, since a terminated job leaves unstarted tasks active:
  ``poll_requests_per_cycle_none_running``).
  The same is done for a job holding one task per image (10,000 tasks), the
  shape the stock operator leads to when each image is its own task.
"""
from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from typing import Any

from bench.config import REQUEST_IMAGES, REQUEST_SHARDS

ADD_OPERATIONS = ("Task_Add", "Task_AddCollection")
RUNNING_WAIT_S = 120  # for the one-node pool's node to start and run its task


def _requests(endpoint) -> dict[str, int]:
    return {name: int(count) for name, count in endpoint.emulator("GET", "requests").items()}


def _reset(endpoint) -> None:
    endpoint.emulator("DELETE", "requests")


def _counted(endpoint, action) -> tuple[Any, dict[str, int]]:
    """Run action() and return its result with the requests it made, per operation."""
    _reset(endpoint)
    result = action()
    return result, _requests(endpoint)


def _first_event(trigger) -> dict[str, Any]:
    async def first():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(first())


def _pool_and_job(client, pool_id: str, job_id: str, nodes: int = 0) -> None:
    from azure.batch import models as m

    client.create_pool(m.BatchPoolCreateOptions(
        id=pool_id, vm_size="Standard_NC4as_T4_v3", target_dedicated_nodes=nodes,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))


def _shard_tasks(job_id: str) -> list:
    """The DAG's 100 shard tasks for 10,000 images, as the add operator builds them."""
    from include.monthly.config import DagConfig
    from include.monthly.layout import RunPaths, shard_id
    from include.monthly.plan import plan_run
    from include.monthly.scoring_tasks import scoring_task_specs
    from include.monthly.staging import Shard, StageResult

    from azure_compute.hooks.blob import BlobSasHook
    from azure_compute.operators.batch import AzureBatchAddTasksOperator, _SasCache

    config = DagConfig()
    shard_size = REQUEST_IMAGES // REQUEST_SHARDS
    plan = plan_run({"month": "2024-01", "shard_size": shard_size, "spot_nodes": 2, "dedicated_nodes": 0,
                     "conf": 0.25, "imgsz": 640, "batch_size": 16, "weights": "yolov8n.pt"},
                    dag_id="monthly_detection", run_id="bench", data_interval_start=None, config=config)
    month = plan.month
    paths = RunPaths(month, plan.run_key)
    stage = StageResult(
        month=month, run_key=plan.run_key, source_container=config.input_container,
        source_prefix="202401/", shard_size=shard_size, image_count=REQUEST_IMAGES,
        shards=tuple(Shard(shard_id(i), shard_size, paths.manifest(shard_id(i))) for i in range(REQUEST_SHARDS)),
    )
    specs = scoring_task_specs(stage, plan, config, "http://127.0.0.1/devstoreaccount1/images", "runs/weights.pt")
    operator = AzureBatchAddTasksOperator(task_id="add_tasks", job_id=job_id, tasks=specs)
    sas = _SasCache(BlobSasHook(wasb_conn_id="wasb_default"), timedelta(hours=1))
    return [operator._task(spec, sas) for spec in specs]


def _running_job(client, pool_id: str, job_id: str) -> None:
    """A job on a one-node pool whose only task is running (sleeping) when this returns."""
    from azure.batch import models as m

    from azure_compute.hooks.batch import BatchHook

    _pool_and_job(client, pool_id, job_id, nodes=1)
    BatchHook().add_tasks(job_id, [m.BatchTaskCreateOptions(id="sleeper", command_line="sleep 600")])
    deadline = time.monotonic() + RUNNING_WAIT_S
    while client.get_job_task_counts(job_id).task_counts.running < 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id}: its task was not running after {RUNNING_WAIT_S} s")
        time.sleep(1)


def _response_bytes(call) -> int:
    """Body bytes the client received for call(raw_response_hook=...)."""
    sizes: list[int] = []

    def hook(response) -> None:
        sizes.append(len(response.http_response.body()))

    call(hook)
    return sum(sizes)


def run(batch_endpoint) -> dict[str, Any]:
    """All request figures; the Airflow connections must point at batch_endpoint and Azurite."""
    from azure.batch import models as m

    from airflow.providers.microsoft.azure.hooks.batch import AzureBatchHook
    from airflow.providers.microsoft.azure.triggers.batch import AzureBatchTrigger

    from azure_compute.hooks.batch import BatchHook
    from azure_compute.sensors.batch import AzureBatchJobSensor
    from azure_compute.triggers.batch import AzureBatchJobTrigger

    client = batch_endpoint.client()
    suffix = str(int(time.time()))
    ours_job, stock_job, per_image_job = f"bench-ours-{suffix}", f"bench-stock-{suffix}", f"bench-img-{suffix}"
    pool_id = f"bench-pool-{suffix}"
    _pool_and_job(client, pool_id, ours_job)
    for job in (stock_job, per_image_job):
        client.create_job(m.BatchJobCreateOptions(id=job, pool_info=m.BatchPoolInfo(pool_id=pool_id)))

    tasks = _shard_tasks(ours_job)
    added, add_counts = _counted(batch_endpoint, lambda: BatchHook().add_tasks(ours_job, tasks))
    if len(added.added) != REQUEST_SHARDS:
        raise RuntimeError(f"expected {REQUEST_SHARDS} tasks added, got {len(added.added)}")
    stock_hook = AzureBatchHook()
    _, stock_add_counts = _counted(
        batch_endpoint, lambda: [stock_hook.add_single_task_to_job(stock_job, task) for task in tasks])

    # One poll cycle each: deadlines in the past make each trigger poll once and return.
    past = time.time() - 1
    ours_event, trigger_counts = _counted(batch_endpoint, lambda: _first_event(
        AzureBatchJobTrigger(ours_job, REQUEST_SHARDS, "azure_batch_default", 1, past)))
    sensor = AzureBatchJobSensor(task_id="wait", job_id=ours_job, expected_tasks=REQUEST_SHARDS)
    poke, poke_counts = _counted(batch_endpoint, lambda: sensor.poke({}))
    stock_event, stock_poll_counts = _counted(batch_endpoint, lambda: _first_event(
        AzureBatchTrigger(job_id=ours_job, azure_batch_conn_id="azure_batch_default", end_time=past)))
    if ours_event.get("status") != "timeout" or stock_event.get("status") != "timeout" or poke.is_done:
        raise RuntimeError(f"the polls did not see a running job: {ours_event}, {stock_event}")

    # The state a job spends most of its time in: tasks running. A poll then needs the task counts only;
    # while nothing runs (above: no nodes) it also reads the job's state (BatchHook.job_progress).
    running_pool, running_job = f"bench-run-pool-{suffix}", f"bench-run-{suffix}"
    _running_job(client, running_pool, running_job)
    running_event, running_counts = _counted(batch_endpoint, lambda: _first_event(
        AzureBatchJobTrigger(running_job, 1, "azure_batch_default", 1, past)))
    running_sensor = AzureBatchJobSensor(task_id="wait", job_id=running_job, expected_tasks=1)
    running_poke, running_poke_counts = _counted(batch_endpoint, lambda: running_sensor.poke({}))
    if running_event.get("status") != "timeout" or running_poke.is_done:
        raise RuntimeError(f"the polls did not see the running job: {running_event}")

    # The stock operator's shape at full size: one task per image (10,000 tasks).
    per_image = [m.BatchTaskCreateOptions(id=f"img-{i:05d}", command_line=f"{sys.executable} -c pass")
                 for i in range(REQUEST_IMAGES)]
    BatchHook().add_tasks(per_image_job, per_image)
    _, per_image_poll_counts = _counted(batch_endpoint, lambda: _first_event(
        AzureBatchTrigger(job_id=per_image_job, azure_batch_conn_id="azure_batch_default", end_time=past)))

    counts_bytes = _response_bytes(lambda hook: client.get_job_task_counts(ours_job, raw_response_hook=hook))
    list_bytes = _response_bytes(lambda hook: list(client.list_tasks(ours_job, raw_response_hook=hook)))
    per_image_list_bytes = _response_bytes(
        lambda hook: list(client.list_tasks(per_image_job, raw_response_hook=hook)))

    for job in (ours_job, stock_job, per_image_job, running_job):
        client.begin_delete_job(job, polling_interval=1).result()
    for pool in (pool_id, running_pool):
        client.begin_delete_pool(pool, polling_interval=1).result()

    add_requests = sum(add_counts.get(op, 0) for op in ADD_OPERATIONS)
    stock_add_requests = sum(stock_add_counts.get(op, 0) for op in ADD_OPERATIONS)
    return {
        "add_task_requests": add_requests,
        "add_task_requests_per_100_shards": round(add_requests * 100 / REQUEST_SHARDS, 3),
        "poll_requests_per_cycle": sum(running_counts.values()),
        "poke_requests_per_cycle": sum(running_poke_counts.values()),
        "poll_requests_per_cycle_none_running": sum(trigger_counts.values()),
        "poke_requests_per_cycle_none_running": sum(poke_counts.values()),
        "provider_style_requests_per_poll": sum(stock_poll_counts.values()),
        "provider_style_add_task_requests": stock_add_requests,
        "provider_style_requests_per_poll_task_per_image": sum(per_image_poll_counts.values()),
        "poll_response_bytes": counts_bytes,
        "provider_style_poll_response_bytes": list_bytes,
        "provider_style_poll_response_bytes_task_per_image": per_image_list_bytes,
        "request_context": {
            "images": REQUEST_IMAGES, "shards": REQUEST_SHARDS,
            "add_operations": add_counts, "provider_style_add_operations": stock_add_counts,
            "trigger_poll_operations": running_counts, "poke_operations": running_poke_counts,
            "trigger_poll_operations_none_running": trigger_counts,
            "poke_operations_none_running": poke_counts,
            "provider_style_poll_operations": stock_poll_counts,
            "provider_style_task_per_image_poll_operations": per_image_poll_counts,
        },
    }
