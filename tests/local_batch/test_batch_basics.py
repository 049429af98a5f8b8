"""The issue's "done when": pool, job and 150 real tasks through the official BatchClient."""
from __future__ import annotations

import json

import pytest
from azure.batch import models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from batch_helpers import make_job, read_file, unique, wait_for_tasks, wait_until


def test_150_tasks_on_two_nodes_all_succeed_with_readable_stdout(batch, pool):
    job_id = make_job(batch, pool)
    tasks = [
        models.BatchTaskCreateOptions(
            id=f"t{i:03d}",
            command_line=(f"python3 -c \"import os; print('py', {i}, os.environ['AZ_BATCH_TASK_ID'])\"" if i % 3 == 0
                          else f"/bin/bash -c 'echo sh {i} $AZ_BATCH_NODE_ID'"),
        )
        for i in range(150)
    ]
    for start in range(0, 150, 100):
        result = batch.create_task_collection(job_id, models.BatchTaskGroup(task_values=tasks[start:start + 100]))
        assert {r.status for r in result.result_values} == {"Success"}  # as real Batch writes it

    counts = wait_for_tasks(batch, job_id, 150)
    assert (counts.succeeded, counts.failed, counts.active, counts.running) == (150, 0, 0, 0)

    assert read_file(batch, job_id, "t003", "stdout.txt") == "py 3 t003\n"
    assert read_file(batch, job_id, "t004", "stdout.txt").startswith("sh 4 tvmps_")
    nodes_used = {t.node_info.node_id for t in batch.list_tasks(job_id)}
    assert len(nodes_used) == 2, "a 2-node pool spreads tasks over both nodes"
    for node in batch.list_nodes(pool):
        assert node.total_tasks_run > 0 and node.state == "idle"


def test_command_line_runs_without_a_shell_and_env_settings_reach_the_task(batch, pool):
    job_id = make_job(batch, pool, common_environment_settings=[models.NameValuePair(name="FROM_JOB", value="j")])
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="noshell", command_line="echo a; echo $HOME `id`"))
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="env", command_line="/bin/bash -c 'echo $FROM_JOB $FROM_TASK $AZ_BATCH_JOB_ID; pwd'",
        environment_settings=[models.NameValuePair(name="FROM_TASK", value="t")]))
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="missing", command_line="no-such-program-xyz --help"))
    wait_for_tasks(batch, job_id, 3)

    assert read_file(batch, job_id, "noshell", "stdout.txt") == "a; echo $HOME `id`\n"
    env_out = read_file(batch, job_id, "env", "stdout.txt").splitlines()
    assert env_out[0] == f"j t {job_id}"
    assert env_out[1].endswith(f"/workitems/{job_id}/job-1/env/wd")
    missing = batch.get_task(job_id, "missing")
    assert missing.execution_info.result == "failure"
    assert missing.execution_info.failure_info.code == "CommandProgramNotFound"


def test_nonzero_exit_code_is_a_failure_with_azure_failure_info(batch, pool):
    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="bad", command_line="/bin/bash -c 'echo oops >&2; exit 7'"))
    wait_for_tasks(batch, job_id, 1)
    task = batch.get_task(job_id, "bad")
    assert task.execution_info.exit_code == 7
    assert task.execution_info.result == "failure"
    assert task.execution_info.failure_info.category == "usererror"
    assert task.execution_info.failure_info.code == "FailureExitCode"
    assert read_file(batch, job_id, "bad", "stderr.txt") == "oops\n"
    counts = batch.get_job_task_counts(job_id).task_counts
    assert (counts.failed, counts.succeeded) == (1, 0)


def test_wrong_key_is_rejected_with_403_authentication_failed(local_batch):
    from azure.batch import BatchClient

    wrong = BatchClient(local_batch.url, AzureNamedKeyCredential(local_batch.account, "d3Jvbmcga2V5IGZvciB0ZXN0cw=="))
    with pytest.raises(HttpResponseError) as err:
        wrong.get_pool("anything")
    assert err.value.status_code == 403
    assert err.value.error.code == "AuthenticationFailed"
    # and the service does not leak the key or the string-to-sign
    assert local_batch.key not in str(err.value.response.text())


def test_request_without_authorization_is_rejected(local_batch):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{local_batch.url}/pools?api-version=2025-06-01", timeout=10)
    assert err.value.code == 403
    assert json.loads(err.value.read())["code"] == "AuthenticationFailed"


def test_error_codes_match_azure(batch, pool):
    with pytest.raises(ResourceExistsError) as err:
        batch.create_pool(models.BatchPoolCreateOptions(id=pool, vm_size="standard_d2s_v3"))
    assert err.value.error.code == "PoolExists"
    with pytest.raises(ResourceNotFoundError) as err:
        batch.get_pool(unique("nopool"))
    assert err.value.error.code == "PoolNotFound"
    with pytest.raises(ResourceNotFoundError) as err:
        batch.get_job(unique("nojob"))
    assert err.value.error.code == "JobNotFound"
    job_id = make_job(batch, pool)
    with pytest.raises(ResourceExistsError) as err:
        make_job_with_id(batch, pool, job_id)
    assert err.value.error.code == "JobExists"
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="once", command_line="true"))
    with pytest.raises(ResourceExistsError) as err:
        batch.create_task(job_id, models.BatchTaskCreateOptions(id="once", command_line="true"))
    assert err.value.error.code == "TaskExists"
    with pytest.raises(ResourceNotFoundError) as err:
        batch.get_task(job_id, "never-added")
    assert err.value.error.code == "TaskNotFound"
    with pytest.raises(HttpResponseError) as err:
        batch.create_task(job_id, models.BatchTaskCreateOptions(id="bad id!", command_line="true"))
    assert (err.value.status_code, err.value.error.code) == (400, "InvalidPropertyValue")
    with pytest.raises(HttpResponseError) as err:
        batch.create_task(unique("nojob"), models.BatchTaskCreateOptions(id="x", command_line="true"))
    assert err.value.error.code == "JobNotFound"


def make_job_with_id(client, pool_id, job_id):
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id)))


def test_pool_lifecycle_exists_resize_autoscale_delete(batch):
    pool_id = unique("pool")
    batch.create_pool(models.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_nc4as_t4_v3", enable_auto_scale=True,
        auto_scale_formula="$TargetDedicatedNodes = 0; $TargetLowPriorityNodes = max(1, min(3, 2));",
        auto_scale_evaluation_interval="PT5M"))
    assert batch.pool_exists(pool_id)
    pool = wait_until(lambda: (p := batch.get_pool(pool_id)).allocation_state == "steady" and p, what="steady pool")
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (0, 2)
    assert {n.is_dedicated for n in batch.list_nodes(pool_id)} == {False}

    with pytest.raises(HttpResponseError) as err:
        batch.enable_pool_auto_scale(pool_id, models.BatchPoolEnableAutoScaleOptions(
            auto_scale_formula="$TargetDedicatedNodes = $PendingTasks.GetSample(1);"))
    assert (err.value.status_code, err.value.error.code) == (400, "AutoScalingFormulaSyntaxError")

    batch.disable_pool_auto_scale(pool_id)
    batch.begin_resize_pool(pool_id, models.BatchPoolResizeOptions(target_dedicated_nodes=1, target_low_priority_nodes=0),
                            polling_interval=0).result()
    pool = batch.get_pool(pool_id)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes, pool.enable_auto_scale) == (1, 0, False)

    batch.begin_delete_pool(pool_id, polling_interval=0).result()
    with pytest.raises(ResourceNotFoundError):
        batch.get_pool(pool_id)


def test_provider_hook_works_with_an_airflow_connection_from_env(local_batch, monkeypatch):
    from airflow.providers.microsoft.azure.hooks.batch import AzureBatchHook

    conn = {"conn_type": "azure_batch", "login": local_batch.account, "password": local_batch.key,
            "extra": {"account_url": local_batch.url}}
    monkeypatch.setenv("AIRFLOW_CONN_LOCAL_BATCH_TEST", json.dumps(conn))
    hook = AzureBatchHook(azure_batch_conn_id="local_batch_test")
    client = hook.get_conn()
    pool_id = unique("hookpool")
    client.create_pool(models.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1))
    job_id = make_job(client, pool_id)
    client.create_task(job_id, models.BatchTaskCreateOptions(id="hello", command_line="echo from-hook"))
    wait_for_tasks(client, job_id, 1)
    assert read_file(client, job_id, "hello", "stdout.txt") == "from-hook\n"
    client.begin_delete_pool(pool_id, polling_interval=0).result()


def test_task_files_list_properties_and_ranges(batch, pool):
    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="files", command_line="/bin/bash -c 'mkdir -p out; printf 0123456789 > out/digits.txt; echo hi'"))
    wait_for_tasks(batch, job_id, 1)
    names = {f.name: f for f in batch.list_task_files(job_id, "files", recursive=True)}
    assert {"stdout.txt", "stderr.txt", "wd", "wd/out", "wd/out/digits.txt"} <= set(names)
    assert names["wd"].is_directory and not names["stdout.txt"].is_directory
    assert names["wd/out/digits.txt"].properties.content_length == 10
    top = {f.name for f in batch.list_task_files(job_id, "files")}
    assert top == {"stdout.txt", "stderr.txt", "wd"}
    props = batch.get_task_file_properties(job_id, "files", "wd/out/digits.txt")
    assert (props.content_length, props.is_directory) == (10, False)
    assert b"".join(batch.download_task_file(job_id, "files", "wd/out/digits.txt", ocp_range="bytes=2-4")) == b"234"
    with pytest.raises(ResourceNotFoundError) as err:
        batch.get_task_file_properties(job_id, "files", "../../../batch.sqlite")
    assert err.value.status_code == 404


def test_the_account_key_is_not_on_the_service_command_line(local_batch):
    pid = (local_batch.state_dir / "batch.pid").read_text().strip()
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        assert local_batch.key.encode() not in cmdline.read()
