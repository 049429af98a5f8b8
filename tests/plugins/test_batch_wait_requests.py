"""What one poll of a Batch job wait costs, and that it still sees a terminated job.

The deferrable trigger (``AzureBatchJobTrigger``) and the poke path (``BatchHook.job_progress``)
follow one rule (``JobProgress.needs_job_state``): while a task runs, the task counts are the
whole poll; while tasks remain and none runs, the job's state is read too, because terminating
a job ends its running tasks and leaves the unstarted ones ``active`` (``Job_Terminate``, REST
reference). Requests are counted by the local Batch service per REST operation.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from azure.batch import models as batch_models

from azure_compute.batch_progress import wire_value
from azure_compute.hooks.batch import BatchHook
from azure_compute.triggers.batch import AzureBatchJobTrigger

RUNNING_WAIT_S = 90


def _requests(local_batch) -> dict[str, int]:
    return {op: int(n) for op, n in local_batch.emulator("GET", "/_emulator/requests").items()}


def _one_trigger_poll(local_batch, job_id: str, expected: int) -> tuple[dict, dict[str, int]]:
    """One poll of the trigger (its deadline already past) and the requests it made."""
    local_batch.emulator("DELETE", "/_emulator/requests")
    trigger = AzureBatchJobTrigger(job_id, expected, "azure_batch_default", 0.05, time.time() - 1)
    return asyncio.run(trigger.first_event()), _requests(local_batch)


def _one_hook_poll(local_batch, job_id: str, expected: int):
    local_batch.emulator("DELETE", "/_emulator/requests")
    return BatchHook().job_progress(job_id, expected), _requests(local_batch)


@pytest.fixture()
def running_job(local_batch, batch_connections):
    """A job on a one-node pool with a task that sleeps (running) and one that waits behind it (active)."""
    suffix = uuid.uuid4().hex[:8]
    client = local_batch.client()
    pool_id, job_id = f"wait-pool-{suffix}", f"wait-job-{suffix}"
    client.create_pool(batch_models.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1, task_slots_per_node=1))
    client.create_job(batch_models.BatchJobCreateOptions(id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(job_id, batch_models.BatchTaskCreateOptions(id="sleeper", command_line="sleep 600"))
    client.create_task(job_id, batch_models.BatchTaskCreateOptions(id="queued", command_line="sleep 600"))
    deadline = time.monotonic() + RUNNING_WAIT_S
    while client.get_job_task_counts(job_id).task_counts.running < 1:
        assert time.monotonic() < deadline, f"{job_id}: no task running after {RUNNING_WAIT_S} s"
        time.sleep(0.5)
    yield job_id
    client.begin_delete_job(job_id, polling_interval=1).result()
    client.begin_delete_pool(pool_id, polling_interval=1).result()


def test_a_poll_while_a_task_runs_costs_one_request_on_both_paths(local_batch, running_job):
    event, trigger_requests = _one_trigger_poll(local_batch, running_job, 2)
    assert event["status"] == "timeout" and event["counts"]["running"] == 1, event
    assert trigger_requests == {"Job_GetTaskCounts": 1}

    progress, hook_requests = _one_hook_poll(local_batch, running_job, 2)
    assert progress.running == 1 and not progress.is_done(2)
    assert hook_requests == {"Job_GetTaskCounts": 1}


def test_a_terminated_job_with_unstarted_tasks_ends_the_wait_on_both_paths(local_batch, running_job):
    BatchHook().terminate_job(running_job, "stopped by the test")
    client = local_batch.client()
    deadline = time.monotonic() + RUNNING_WAIT_S
    while wire_value(client.get_job(running_job).state) != "completed":
        assert time.monotonic() < deadline, "the terminated job never completed"
        time.sleep(0.5)

    # Tasks remain (the unstarted one stays active) and none runs: the job's state is read, and it ended.
    event, trigger_requests = _one_trigger_poll(local_batch, running_job, 2)
    assert event["status"] == "success" and event["counts"]["job_completed"], event
    assert event["counts"]["active"] == 1 and event["counts"]["running"] == 0, event
    assert trigger_requests == {"Job_GetTaskCounts": 1, "Job_Get": 1}

    progress, hook_requests = _one_hook_poll(local_batch, running_job, 2)
    assert progress.is_done(2) and progress.unfinished == 1
    assert hook_requests == {"Job_GetTaskCounts": 1, "Job_Get": 1}
