"""Injected faults behave as on Azure, and a restarted service loses nothing."""
from __future__ import annotations

import os

import pytest
from azure.batch import models

from batch_helpers import make_job, make_pool, read_file, wait_for_tasks, wait_until


def _count(local_batch, operation: str) -> int:
    return local_batch.emulator("GET", "requests").get(operation, 0)


@pytest.fixture()
def fast_retry_client(local_batch):
    """A client whose retry policy backs off quickly (the policy itself is the SDK's)."""
    client = local_batch.client(retry_backoff_factor=0.05)
    yield client
    client.close()


def test_injected_503s_are_absorbed_by_the_sdk_retry_policy(local_batch, fast_retry_client, pool):
    job_id = make_job(fast_retry_client, pool)
    before = _count(local_batch, "Job_GetTaskCounts")
    local_batch.emulator("POST", "faults", {"kind": "http", "method": "GET", "path": f"/jobs/{job_id}/taskcounts$",
                                            "status": 503, "count": 2})
    counts = fast_retry_client.get_job_task_counts(job_id)
    assert counts.task_counts.active == 0
    assert _count(local_batch, "Job_GetTaskCounts") - before == 3, "two 503s, then the answer"
    assert local_batch.emulator("GET", "faults") == []


def test_injected_429_with_retry_after_is_honoured_and_tasks_are_added_once(local_batch, fast_retry_client, pool):
    job_id = make_job(fast_retry_client, pool)
    before = _count(local_batch, "Task_AddCollection")
    local_batch.emulator("POST", "faults", {"kind": "http", "method": "POST", "path": "/addtaskcollection$",
                                            "status": 429, "count": 1, "retryAfter": 1})
    result = fast_retry_client.create_task_collection(job_id, models.BatchTaskGroup(task_values=[
        models.BatchTaskCreateOptions(id=f"t{i}", command_line="true") for i in range(5)]))
    assert {r.status for r in result.result_values} == {"Success"}  # as real Batch writes it
    assert _count(local_batch, "Task_AddCollection") - before == 2
    assert sorted(t.id for t in fast_retry_client.list_tasks(job_id)) == [f"t{i}" for i in range(5)]


def test_preempting_a_node_requeues_its_running_tasks_which_then_complete_once(local_batch, batch, tmp_path):
    pool_id = make_pool(batch, nodes=0, low_priority=1, slots=2)
    job_id = make_job(batch, pool_id)
    done_log = tmp_path / "done.log"
    command = f"/bin/bash -c 'sleep 1.5; echo $AZ_BATCH_TASK_ID >> {done_log}'"
    batch.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"spot{i}", command_line=command) for i in range(2)])
    wait_until(lambda: batch.get_job_task_counts(job_id).task_counts.running == 2, what="two running tasks")

    result = local_batch.emulator("POST", "faults", {"kind": "preempt", "poolId": pool_id})
    assert sorted(result["requeuedTasks"]) == ["spot0", "spot1"]
    node = batch.get_node(pool_id, result["nodeId"])
    assert node.state in ("preempted", "starting", "idle", "running")

    wait_for_tasks(batch, job_id, 2, timeout=60)
    for task in batch.list_tasks(job_id):
        assert task.execution_info.requeue_count == 1
        assert task.execution_info.result == "success"
        assert task.execution_info.retry_count == 0, "a preemption is not a retry"
    assert sorted(done_log.read_text().split()) == ["spot0", "spot1"], "each task finished exactly once"
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_task_exit_fault_fails_first_attempts_and_retries_recover(local_batch, batch, pool):
    job_id = make_job(batch, pool)
    local_batch.emulator("POST", "faults", {"kind": "task_exit", "jobId": f"^{job_id}$", "taskId": "^shard",
                                            "exitCode": 3, "attempts": 1})
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="shard-retried", command_line="echo ok", constraints=models.BatchTaskConstraints(max_task_retry_count=1)))
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="shard-once", command_line="echo ok"))
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="other", command_line="echo ok"))
    wait_for_tasks(batch, job_id, 3)
    retried = batch.get_task(job_id, "shard-retried").execution_info
    once = batch.get_task(job_id, "shard-once").execution_info
    other = batch.get_task(job_id, "other").execution_info
    assert (retried.result, retried.retry_count, retried.exit_code) == ("success", 1, 0)
    assert (once.result, once.exit_code) == ("failure", 3)
    assert "injected" in read_file(batch, job_id, "shard-once", "stderr.txt")
    assert (other.result, other.retry_count) == ("success", 0)
    local_batch.emulator("DELETE", "faults")


def test_bad_fault_is_rejected(local_batch):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as err:
        local_batch.emulator("POST", "faults", {"kind": "earthquake"})
    assert err.value.code == 400


def test_restart_mid_run_loses_nothing_and_requeues_the_running_task(local_batch, batch, tmp_path):
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = make_job(batch, pool_id)
    done_log = tmp_path / "done.log"
    command = f"/bin/bash -c 'sleep 1; echo $AZ_BATCH_TASK_ID >> {done_log}; echo finished'"
    batch.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"r{i}", command_line=command) for i in range(3)])
    running = wait_until(lambda: next(iter(batch.list_tasks(job_id, filter="state eq 'running'")), None),
                         what="a running task")

    local_batch.restart()

    client = local_batch.client()
    assert client.get_pool(pool_id).current_dedicated_nodes == 1
    assert client.get_job(job_id).state == "active"
    assert sorted(t.id for t in client.list_tasks(job_id)) == ["r0", "r1", "r2"]
    wait_for_tasks(client, job_id, 3, timeout=60)
    tasks = {t.id: t for t in client.list_tasks(job_id)}
    assert tasks[running.id].execution_info.requeue_count == 1
    assert {t.execution_info.result for t in tasks.values()} == {"success"}
    assert sorted(done_log.read_text().split()) == ["r0", "r1", "r2"], "the interrupted task ran to completion once"
    assert read_file(client, job_id, running.id, "stdout.txt") == "finished\n"
    client.begin_delete_pool(pool_id, polling_interval=0).result()
    client.close()


def _task_pids(job_id: str) -> list[int]:
    """Processes whose environment says they run a task of this job."""
    marker = f"AZ_BATCH_JOB_ID={job_id}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in open(f"/proc/{entry}/environ", "rb").read().split(b"\0"):
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_crash_mid_run_kills_the_orphaned_process_and_reruns_the_task_once(local_batch, batch, tmp_path):
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = make_job(batch, pool_id)
    log = tmp_path / "log"
    # the first attempt would sleep 60 s; the rerun (log already exists) finishes at once
    command = f"/bin/bash -c 'd=60; [ -e {log} ] && d=0; echo start >> {log}; sleep $d; echo end >> {log}'"
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="c", command_line=command))
    wait_until(lambda: log.exists() and log.read_text() == "start\n", what="the task to start")
    orphans = _task_pids(job_id)
    assert orphans

    local_batch.crash()
    assert all(os.path.exists(f"/proc/{pid}") for pid in orphans), "a crash leaves the task process running"
    local_batch.start()

    client = local_batch.client()
    wait_for_tasks(client, job_id, 1, timeout=60)
    task = client.get_task(job_id, "c")
    assert (task.execution_info.result, task.execution_info.requeue_count) == ("success", 1)
    assert log.read_text() == "start\nstart\nend\n"
    wait_until(lambda: not _task_pids(job_id), timeout=10, what="the orphaned task process to be gone")
    client.begin_delete_pool(pool_id, polling_interval=0).result()
    client.close()
