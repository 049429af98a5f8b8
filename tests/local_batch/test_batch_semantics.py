"""Task and job semantics: retries, wall clock, terminatejob, start tasks, slots, terminate."""
from __future__ import annotations

import pytest
from azure.batch import models
from azure.batch.models._models import BatchJobTerminateOptions  # not re-exported by azure-batch 15.1

from batch_helpers import make_job, make_pool, read_file, unique, wait_for_tasks, wait_until


def test_max_task_retry_count_from_the_task_overrides_the_job_default(batch, pool):
    job_id = make_job(batch, pool, constraints=models.BatchJobConstraints(max_task_retry_count=2))
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="job-default", command_line="/bin/bash -c 'exit 5'"))
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="own", command_line="/bin/bash -c 'exit 4'", constraints=models.BatchTaskConstraints(max_task_retry_count=1)))
    wait_for_tasks(batch, job_id, 2)
    job_default = batch.get_task(job_id, "job-default").execution_info
    own = batch.get_task(job_id, "own").execution_info
    assert (job_default.retry_count, job_default.result, job_default.exit_code) == (2, "failure", 5)
    assert (own.retry_count, own.result, own.exit_code) == (1, "failure", 4)


def test_retries_happen_until_success_on_a_single_node(batch):
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = make_job(batch, pool_id, constraints=models.BatchJobConstraints(max_task_retry_count=3))
    flaky = ("/bin/bash -c 'f=$AZ_BATCH_NODE_SHARED_DIR/flaky.count; n=$(cat $f 2>/dev/null || echo 0); "
             "n=$((n+1)); echo $n > $f; echo attempt $n; [ $n -ge 3 ]'")
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="flaky", command_line=flaky))
    wait_for_tasks(batch, job_id, 1)
    info = batch.get_task(job_id, "flaky").execution_info
    assert (info.retry_count, info.result, info.exit_code) == (2, "success", 0)
    assert read_file(batch, job_id, "flaky", "stdout.txt") == "attempt 3\n", "files show the last attempt"
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_max_wall_clock_time_kills_the_task_and_fails_it_without_retry(batch, pool):
    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="slow", command_line="sleep 60",
        constraints=models.BatchTaskConstraints(max_wall_clock_time="PT1S", max_task_retry_count=3)))
    wait_for_tasks(batch, job_id, 1, timeout=30)
    info = batch.get_task(job_id, "slow").execution_info
    assert info.result == "failure"
    assert info.failure_info.code == "TaskEnded"
    assert any(d.value == "MaxWallClockTimeExpiry" for d in info.failure_info.details)
    assert info.retry_count == 0


def test_on_all_tasks_complete_terminatejob_completes_the_job(batch, pool):
    job_id = make_job(batch, pool)
    batch.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line="true") for i in range(5)])
    batch.update_job(job_id, models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    job = wait_until(lambda: (j := batch.get_job(job_id)).state == "completed" and j, what="job completed")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    assert batch.get_job_task_counts(job_id).task_counts.succeeded == 5


def test_terminatejob_cannot_be_turned_back_to_noaction(batch, pool):
    from azure.core.exceptions import HttpResponseError

    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="long", command_line="sleep 30"))
    batch.update_job(job_id, models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    with pytest.raises(HttpResponseError) as err:
        batch.update_job(job_id, models.BatchJobUpdateOptions(all_tasks_complete_mode="noaction"))
    assert (err.value.status_code, err.value.error.code) == (400, "InvalidPropertyValue")
    batch.begin_terminate_job(job_id, options=BatchJobTerminateOptions(termination_reason="TestDone"), polling_interval=0).result()


def test_start_task_failure_marks_nodes_starttaskfailed_and_no_task_runs(batch):
    pool_id = make_pool(batch, nodes=1, slots=1, start_task=models.BatchStartTask(
        command_line="/bin/bash -c 'echo cannot install >&2; exit 2'", wait_for_success=True))
    job_id = make_job(batch, pool_id)
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="never", command_line="true"))
    node = wait_until(lambda: next((n for n in batch.list_nodes(pool_id) if n.state == "starttaskfailed"), None),
                      what="node in starttaskfailed")
    assert node.start_task_info.exit_code == 2
    assert node.start_task_info.result == "failure"
    assert node.start_task_info.failure_info.code == "FailureExitCode"
    assert batch.get_task(job_id, "never").state == "active"
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_start_task_runs_once_per_node_before_tasks(batch):
    pool_id = make_pool(batch, nodes=2, slots=1, start_task=models.BatchStartTask(
        command_line="/bin/bash -c 'echo ready > $AZ_BATCH_NODE_SHARED_DIR/ready'", wait_for_success=True))
    job_id = make_job(batch, pool_id)
    batch.create_tasks(job_id, [models.BatchTaskCreateOptions(
        id=f"t{i}", command_line="cat $AZ_BATCH_NODE_SHARED_DIR/ready".replace("cat ", "/bin/bash -c 'cat ") + "'")
        for i in range(4)])
    wait_for_tasks(batch, job_id, 4)
    assert {read_file(batch, job_id, f"t{i}", "stdout.txt") for i in range(4)} == {"ready\n"}
    assert {n.start_task_info.result for n in batch.list_nodes(pool_id)} == {"success"}
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_slots_bound_concurrency_to_nodes_times_slots(batch):
    pool_id = make_pool(batch, nodes=1, slots=2)
    job_id = make_job(batch, pool_id)
    batch.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line="sleep 1") for i in range(4)])
    seen_running = wait_until(lambda: batch.get_job_task_counts(job_id).task_counts.running or None, what="running tasks")
    counts = batch.get_job_task_counts(job_id)
    assert seen_running <= 2 and counts.task_counts.running <= 2
    assert counts.task_slot_counts.running <= 2
    wait_for_tasks(batch, job_id, 4)
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_terminate_job_ends_running_tasks_and_leaves_active_ones_active(batch):
    """Job_Terminate: running tasks are ended; active ones "remain in the active state" and never run."""
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = make_job(batch, pool_id)
    batch.create_tasks(job_id, [models.BatchTaskCreateOptions(id=f"t{i}", command_line="sleep 60") for i in range(3)])
    running = wait_until(lambda: [t.id for t in batch.list_tasks(job_id, filter="state eq 'running'")] or None,
                         what="one running task")
    batch.begin_terminate_job(job_id, options=BatchJobTerminateOptions(termination_reason="Cancelled"),
                              polling_interval=0).result()
    job = batch.get_job(job_id)
    assert job.state == "completed" and job.execution_info.termination_reason == "Cancelled"
    states = {t.id: t.state for t in batch.list_tasks(job_id)}
    assert states == {task_id: ("completed" if task_id in running else "active") for task_id in states}
    assert batch.get_task(job_id, running[0]).execution_info.failure_info.code == "TaskEnded"
    counts = batch.get_job_task_counts(job_id).task_counts
    assert (counts.active, counts.running, counts.completed) == (2, 0, 1)
    node = wait_until(lambda: (n := batch.list_nodes(pool_id).next()).state == "idle" and n, what="idle node")
    assert node.running_tasks_count == 0
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_delete_job_removes_it(batch, pool):
    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="sleep 30"))
    batch.begin_delete_job(job_id, polling_interval=0).result()
    assert job_id not in {j.id for j in batch.list_jobs()}
    assert unique("x")  # ids stay unique across tests


def test_reactivating_a_failed_task_runs_it_again(batch, pool, tmp_path):
    job_id = make_job(batch, pool)
    marker = tmp_path / "fixed"
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line=f"test -e {marker}"))
    wait_for_tasks(batch, job_id, 1)
    assert batch.get_task(job_id, "t").execution_info.result == "failure"
    marker.touch()
    batch.reactivate_task(job_id, "t")
    wait_until(lambda: (t := batch.get_task(job_id, "t")).state == "completed" and t.execution_info.result, what="rerun")
    assert batch.get_task(job_id, "t").execution_info.result == "success"
    counts = batch.get_job_task_counts(job_id).task_counts
    assert (counts.succeeded, counts.failed, counts.completed) == (1, 0, 1)


def test_terminating_a_completed_task_is_task_completed(batch, pool):
    from azure.core.exceptions import ResourceExistsError

    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="true"))
    wait_for_tasks(batch, job_id, 1)
    with pytest.raises(ResourceExistsError) as err:
        batch.terminate_task(job_id, "t")
    assert err.value.error.code == "TaskCompleted"
