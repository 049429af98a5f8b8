"""Behaviours the product relies on, as Azure documents or records them (see the README's Conformance table):
case-insensitive ids, job termination and wall clock, pool resize errors and stop-resize."""
from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import ResourceExistsError

from batch_helpers import make_job, make_pool, unique, wait_until


@pytest.fixture()
def faults(local_batch):
    """The service's fault registry, cleared afterwards (pool timings included)."""
    yield lambda spec: local_batch.emulator("POST", "/_emulator/faults", spec)
    local_batch.emulator("DELETE", "/_emulator/faults")


def test_ids_are_case_insensitive_and_case_preserving(batch):
    pool_id = unique("CasePool")
    batch.create_pool(models.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1))
    assert batch.get_pool(pool_id.lower()).id == pool_id
    with pytest.raises(ResourceExistsError) as err:
        batch.create_pool(models.BatchPoolCreateOptions(id=pool_id.upper(), vm_size="standard_d2s_v3"))
    assert err.value.error.code == "PoolExists"

    job_id = unique("CaseJob")
    batch.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id.upper())))
    assert batch.get_job(job_id.lower()).id == job_id
    first = batch.create_task_collection(job_id.upper(), models.BatchTaskGroup(task_values=[
        models.BatchTaskCreateOptions(id="Shard-A", command_line="true")]))
    again = batch.create_task_collection(job_id, models.BatchTaskGroup(task_values=[
        models.BatchTaskCreateOptions(id="shard-a", command_line="true")]))
    assert first.result_values[0].status == "Success"
    assert again.result_values[0].error.code == "TaskExists"
    # The job names its pool in another case: its task still runs on that pool.
    done = wait_until(lambda: (t := batch.get_task(job_id, "SHARD-A")).state == "completed" and t, what="task done")
    assert done.id == "Shard-A" and done.execution_info.result == "success"
    assert done.node_info.pool_id == pool_id
    batch.begin_delete_pool(pool_id.lower(), polling_interval=0).result()
    assert pool_id not in {p.id for p in batch.list_pools()}


def test_a_job_past_its_max_wall_clock_time_completes_leaving_unstarted_tasks_active(batch):
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = make_job(batch, pool_id)
    batch.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line="sleep 60") for i in range(3)])
    wait_until(lambda: batch.get_job_task_counts(job_id).task_counts.running == 1, what="one running task")
    batch.update_job(job_id, models.BatchJobUpdateOptions(
        constraints=models.BatchJobConstraints(max_wall_clock_time="PT1S")))
    job = wait_until(lambda: (j := batch.get_job(job_id)).state == "completed" and j, what="job completed")
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    counts = batch.get_job_task_counts(job_id).task_counts
    assert (counts.active, counts.running, counts.completed, counts.failed) == (2, 0, 1, 1)
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


@pytest.mark.parametrize("code", ["AccountLowPriorityCoreQuotaReached", "AllocationFailed"])
def test_a_resize_error_leaves_the_pool_steady_short_of_its_targets(batch, faults, code):
    pool_id = unique("pool")
    faults({"kind": "resize_error", "poolId": f"^{pool_id}$", "code": code})
    batch.create_pool(models.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3", target_low_priority_nodes=2))
    pool = wait_until(lambda: (p := batch.get_pool(pool_id)).allocation_state == "steady" and p, what="steady pool")
    assert [e.code for e in pool.resize_errors] == [code]
    assert (pool.current_low_priority_nodes, pool.target_low_priority_nodes) == (0, 2)
    assert list(batch.list_nodes(pool_id)) == []
    # The next resize starts afresh: no fault left, the errors go, nodes come.
    batch.begin_resize_pool(pool_id, models.BatchPoolResizeOptions(target_low_priority_nodes=1), polling_interval=0).result()
    pool = wait_until(lambda: (p := batch.get_pool(pool_id)).allocation_state == "steady" and p, what="steady pool")
    assert not pool.resize_errors and pool.current_low_priority_nodes == 1
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_stop_resize_passes_through_stopping_and_keeps_the_targets(batch, faults):
    faults({"kind": "pool_timing", "allocationSeconds": 600, "stopSeconds": 3})
    pool_id = unique("pool")
    batch.create_pool(models.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=2))
    assert batch.get_pool(pool_id).allocation_state == "resizing"
    batch.begin_stop_pool_resize(pool_id, polling_interval=0)  # sends the stop; we watch the pool ourselves
    assert batch.get_pool(pool_id).allocation_state == "stopping"
    pool = wait_until(lambda: (p := batch.get_pool(pool_id)).allocation_state == "steady" and p, what="steady pool")
    assert [e.code for e in pool.resize_errors] == ["ResizeStopped"]
    assert (pool.current_dedicated_nodes, pool.target_dedicated_nodes) == (0, 2)
    batch.begin_delete_pool(pool_id, polling_interval=0).result()
