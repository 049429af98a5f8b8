"""The Batch building blocks in real Airflow runs against the local Batch service and Azurite."""
from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from datetime import timedelta

import pytest
from azure.batch import models as batch_models
from azure.core.exceptions import HttpResponseError

from azure_compute.hooks.batch import BatchHook
from azure_compute.hooks.blob import WRITE_PERMISSIONS, BlobSasHook
from azure_compute.triggers.batch import AzureBatchJobTrigger


def _ids() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"pool-{suffix}", f"job-{suffix}"


def run(dag, capfd, **conf):
    """``dag.test()`` with conf; returns the run's task states and everything the tasks logged."""
    conf.setdefault("vm_size", "Standard_NC4as_T4_v3")
    conf.setdefault("python", sys.executable)
    run = dag.test(run_conf=conf)
    out, err = capfd.readouterr()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return str(run.state), states, out + err


def _pool_and_job(client, pool_id: str, job_id: str) -> None:
    client.create_pool(batch_models.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=batch_models.VirtualMachineConfiguration(
            image_reference=batch_models.BatchVmImageReference(publisher="canonical", offer="ubuntu", sku="22_04"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    client.create_job(batch_models.BatchJobCreateOptions(id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id=pool_id)))


def pool_targets(local_batch, pool_id):
    pool = local_batch.client().get_pool(pool_id)
    return pool.target_dedicated_nodes, pool.target_low_priority_nodes


def test_120_shards_run_deferred_report_progress_and_leave_the_pool_at_zero(building_blocks_dag, local_batch, capfd):
    pool_id, job_id = _ids()
    local_batch.emulator("DELETE", "/_emulator/requests")
    state, states, log = run(building_blocks_dag, capfd, pool_id=pool_id, job_id=job_id, tasks=120)
    assert state == "success", log[-3000:]
    assert states["teardown"] == "success"
    counts = local_batch.client().get_job_task_counts(job_id).task_counts
    assert (counts.succeeded, counts.failed) == (120, 0)
    assert "120/120 tasks done" in log
    requests = local_batch.emulator("GET", "/_emulator/requests")
    assert requests.get("Task_AddCollection", requests.get("CreateTaskCollection", 0)) == 2  # 120 tasks, 100 a request
    assert not any(name.endswith("ListTasks") or name == "Task_List" for name, n in requests.items() if n > 1)
    assert pool_targets(local_batch, pool_id) == (0, 0)
    # Output files reached Blob storage through the write-only SAS.
    from azure.storage.blob import BlobServiceClient

    work = BlobServiceClient.from_connection_string(local_batch.storage_connection_string).get_container_client("work")
    assert len(list(work.list_blobs(name_starts_with=f"{job_id}/"))) == 120

    # Re-running the same run re-attaches to its finished job: no second job, no task added.
    state, _, log = run(building_blocks_dag, capfd, pool_id=pool_id, job_id=job_id, tasks=120)
    assert state == "success", log[-3000:]
    assert f"job {job_id} already exists (state completed); re-attaching" in log
    assert "already holds its 120 tasks; nothing to add" in log
    assert local_batch.client().get_job_task_counts(job_id).task_counts.succeeded == 120


def test_a_retried_add_adds_only_what_is_missing(batch_connections, local_batch):
    pool_id, job_id = _ids()
    _pool_and_job(local_batch.client(), pool_id, job_id)
    tasks = [batch_models.BatchTaskCreateOptions(id=f"t{i:04d}", command_line=f"{sys.executable} -c pass")
             for i in range(200)]
    first = BatchHook().add_tasks(job_id, tasks[:150])        # an attempt that died after 150 tasks
    retry = BatchHook().add_tasks(job_id, tasks)              # the Airflow retry sends them all again
    assert (len(first.added), first.requests) == (150, 2)
    assert (len(retry.added), len(retry.existing), retry.requests) == (50, 150, 2)
    ids = [t.id for t in local_batch.client().list_tasks(job_id, select=["id"])]
    assert sorted(ids) == sorted(t.id for t in tasks)


def test_failed_shard_fails_the_run_with_its_stderr_and_teardown_still_runs(building_blocks_dag, local_batch, capfd):
    pool_id, job_id = _ids()
    state, states, log = run(building_blocks_dag, capfd, pool_id=pool_id, job_id=job_id, tasks=6, fail_every=5)
    assert state == "failed"
    assert states["wait"] == "failed"
    assert "1 of 6 tasks failed" in log
    assert "shard-00005 (exit code 3)" in log
    assert "bad shard 5: cannot decode input" in log  # the stderr tail reaches the Airflow log
    assert states["teardown"] == "success"
    assert pool_targets(local_batch, pool_id) == (0, 0)


def test_a_failed_start_task_fails_the_pool_ready_sensor_with_its_stderr(building_blocks_dag, local_batch, capfd):
    """The start task's stderr (node file startup/stderr.txt) reaches the Airflow log, as a task's does."""
    pool_id, job_id = _ids()
    start_task = (f"{sys.executable} -c \"import sys; sys.stderr.write('E: Unable to locate package libgl1\\n'); "
                  "sys.exit(100)\"")
    state, states, log = run(building_blocks_dag, capfd, pool_id=pool_id, job_id=job_id, tasks=1, start_task=start_task)
    assert state == "failed"
    assert states["nodes_ready"] == "failed"
    assert "start task exit code 100" in log
    assert "E: Unable to locate package libgl1" in log
    assert states["create_job"] != "success"  # no job is created on a pool that cannot run tasks


def test_failures_within_the_error_threshold_succeed_and_name_the_failed_tasks(building_blocks_dag, local_batch, capfd):
    pool_id, job_id = _ids()
    state, states, log = run(building_blocks_dag, capfd, pool_id=pool_id, job_id=job_id, tasks=10,
                             fail_every=5, error_threshold="20%")
    assert state == "success", log[-3000:]
    assert "2 failed task(s) within the error threshold" in log


def test_an_incompatible_existing_pool_is_refused_with_both_sizes_named(building_blocks_dag, local_batch, capfd):
    pool_id, job_id = _ids()
    state, _, _ = run(building_blocks_dag, capfd, pool_id=pool_id, job_id=job_id, tasks=1)
    assert state == "success"
    state, states, log = run(building_blocks_dag, capfd, pool_id=pool_id, job_id=job_id + "b", tasks=1,
                             vm_size="Standard_D2s_v3")
    assert state == "failed" and states["ensure_pool"] == "failed"
    # Azure answers vmSize in lower case (recorded), so the existing size is named as Azure spells it.
    assert "cannot be reused" in log and "standard_nc4as_t4_v3" in log.lower() and "Standard_D2s_v3" in log


def test_trigger_runs_on_an_event_loop_to_done_and_to_error(batch_connections, local_batch):
    pool_id, job_id = _ids()
    _pool_and_job(local_batch.client(), pool_id, job_id)
    BatchHook().add_tasks(job_id, [batch_models.BatchTaskCreateOptions(id=f"t{i}", command_line=f"{sys.executable} -c pass")
                                   for i in range(3)])

    async def first_event(trigger):
        async for event in trigger.run():
            return event.payload

    done = asyncio.run(first_event(AzureBatchJobTrigger(job_id, 3, "azure_batch_default", 0.5, time.time() + 120)))
    assert done["status"] == "success" and done["counts"]["succeeded"] == 3
    missing = asyncio.run(first_event(AzureBatchJobTrigger("no-such-job", 1, "azure_batch_default", 0.5, time.time() + 60)))
    assert missing["status"] == "error" and "ResourceNotFound" in missing["message"]
    # The trigger serializes to a class path the triggerer can import from the plugins folder.
    classpath, kwargs = AzureBatchJobTrigger(job_id, 3, "azure_batch_default", 1, 0).serialize()
    assert classpath == "azure_compute.triggers.batch.AzureBatchJobTrigger" and kwargs["job_id"] == job_id


def test_write_sas_cannot_read_what_it_writes(batch_connections):
    hook = BlobSasHook(wasb_conn_id="wasb_default")
    from azure.storage.blob import ContainerClient

    url = hook.container_sas_url("work", WRITE_PERMISSIONS, timedelta(minutes=5))
    writer = ContainerClient.from_container_url(url)
    writer.upload_blob("sas-check/out.txt", b"written", overwrite=True)
    with pytest.raises(HttpResponseError) as denied:
        writer.download_blob("sas-check/out.txt").readall()
    assert denied.value.status_code == 403
    with pytest.raises(HttpResponseError):
        list(writer.list_blobs())


def test_teardown_leaves_a_pool_that_another_active_job_still_uses(batch_connections, local_batch):
    from azure_compute.operators.batch import AzureBatchTeardownOperator

    pool_id, job_id = _ids()
    client = local_batch.client()
    _pool_and_job(client, pool_id, job_id)
    client.create_job(batch_models.BatchJobCreateOptions(id=job_id + "-other", pool_info=batch_models.BatchPoolInfo(pool_id=pool_id)))
    teardown = AzureBatchTeardownOperator(task_id="teardown", pool_id=pool_id, job_id=job_id, pool_action="delete")
    teardown.execute({})
    assert client.get_job(job_id).state == batch_models.BatchJobState.COMPLETED  # our job ended
    assert client.get_pool(pool_id).target_dedicated_nodes == 1                  # the shared pool stayed
    BatchHook().terminate_job(job_id + "-other", "done")
    teardown.execute({})
    assert BatchHook().get_pool(pool_id) is None                                   # last user gone: deleted


def test_an_add_collection_answered_success_as_real_batch_does_adds_at_the_first_attempt(batch_connections, local_batch):
    """Real Batch answers each added task with "Success" (recorded: azure-sdk-assets .NET AddTaskCollection.json)."""
    pool_id, job_id = _ids()
    _pool_and_job(local_batch.client(), pool_id, job_id)
    tasks = [batch_models.BatchTaskCreateOptions(id=f"t{i}", command_line=f"{sys.executable} -c pass") for i in range(3)]
    raw = local_batch.client().create_task_collection(job_id, batch_models.BatchTaskGroup(task_values=tasks[:1]))
    assert raw.result_values[0].status == "Success"   # the wire value, not the SDK enum's "success"
    result = BatchHook().add_tasks(job_id, tasks)
    assert (sorted(result.added), result.existing, result.requests) == (["t1", "t2"], ["t0"], 1)


@pytest.mark.parametrize("method,path,call", [
    ("POST", "/addtaskcollection$", "add_tasks"),
    ("POST", "/pools$", "create_pool"),
])
def test_a_429_without_retry_after_on_a_post_is_retried(batch_connections, local_batch, method, path, call):
    """azure-core alone retries a POST only on 500/503/504, and a 429 only with Retry-After."""
    pool_id, job_id = _ids()
    if call == "add_tasks":
        _pool_and_job(local_batch.client(), pool_id, job_id)
    local_batch.emulator("DELETE", "/_emulator/requests")
    local_batch.emulator("POST", "/_emulator/faults", {"kind": "http", "method": method, "path": path, "status": 429, "count": 2})
    hook = BatchHook()
    if call == "add_tasks":
        result = hook.add_tasks(job_id, [batch_models.BatchTaskCreateOptions(id="t0", command_line="true")])
        assert (result.added, result.requests) == (["t0"], 1)
        assert local_batch.emulator("GET", "/_emulator/requests")["Task_AddCollection"] == 3
    else:
        hook.client.create_pool(batch_models.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3"))
        assert hook.get_pool(pool_id) is not None
        assert local_batch.emulator("GET", "/_emulator/requests")["Pool_Add"] == 3
    assert local_batch.emulator("GET", "/_emulator/faults") == []


def test_resize_errors_fail_the_pool_wait_naming_them_and_teardown_still_runs(building_blocks_dag, local_batch, capfd):
    pool_id, job_id = _ids()
    local_batch.emulator("POST", "/_emulator/faults",
                         {"kind": "resize_error", "poolId": f"^{pool_id}$", "code": "AccountCoreQuotaReached"})
    state, states, log = run(building_blocks_dag, capfd, pool_id=pool_id, job_id=job_id, tasks=2)
    assert state == "failed"
    assert states["nodes_ready"] == "failed" and states["create_job"] == "upstream_failed"
    assert "AccountCoreQuotaReached" in log
    assert states["teardown"] == "success"
    pool = local_batch.client().get_pool(pool_id)
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes, pool.allocation_state) == (0, 0, "steady")


def test_a_reused_pool_still_resizing_is_stopped_then_resized(building_blocks_dag, batch_connections, local_batch, capfd):
    """Azure resizes only a steady pool: the reuse path stops a running resize, waits, then resizes."""
    from airflow.dag_processing.dagbag import DagBag

    from azure_compute.operators.batch import UBUNTU_2204

    reuse_dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "plugin_dags")).dags["batch_pool_reuse"]
    pool_id, _ = _ids()
    client = local_batch.client()
    image = batch_models.BatchVmImageReference(**{k: UBUNTU_2204[k] for k in ("publisher", "offer", "sku", "version")})
    client.create_pool(batch_models.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_nc4as_t4_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=batch_models.VirtualMachineConfiguration(
            image_reference=image, node_agent_sku_id=UBUNTU_2204["node_agent_sku_id"])))
    BatchHook().wait_for_pool(pool_id, lambda p: p.allocation_state == "steady" and p.current_dedicated_nodes == 1, 0.2, 60)
    local_batch.emulator("POST", "/_emulator/faults", {"kind": "pool_timing", "removalSeconds": 3600, "stopSeconds": 1})
    try:
        BatchHook().request_resize(pool_id, 0, 0)              # an earlier teardown's shrink, still running
        assert client.get_pool(pool_id).allocation_state == "resizing"
        local_batch.emulator("DELETE", "/_emulator/requests")
        result = reuse_dag.test(run_conf={"pool_id": pool_id, "nodes": 2})
        out, err = capfd.readouterr()
        assert str(result.state) == "success", (out + err)[-3000:]
        assert "still resizing; stopped that resize" in out + err
        pool = client.get_pool(pool_id)
        assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes, pool.allocation_state) == (2, 2, "steady")
        requests = local_batch.emulator("GET", "/_emulator/requests")
        assert requests["Pool_StopResize"] == 1 and requests["Pool_Resize"] == 1
    finally:
        local_batch.emulator("DELETE", "/_emulator/faults")
        client.begin_delete_pool(pool_id, polling_interval=0).result()


def test_the_job_link_opens_the_account_page_since_a_job_is_not_an_arm_resource():
    from azure_compute.links.batch import AzureBatchJobLink, AzureBatchPoolLink, batch_account_portal_url

    account = batch_account_portal_url("https://acct1.westeurope.batch.azure.com", "sub-1", "rg-1")
    assert account.endswith("/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Batch/batchAccounts/acct1")
    assert AzureBatchJobLink.url(account, "monthly-202401-x") == account
    assert AzureBatchPoolLink.url(account, "yolo-gpu-1") == account + "/pools/yolo-gpu-1"  # pools are ARM resources


def test_the_hook_lists_the_node_and_task_records_the_cost_summary_reads(batch_connections, local_batch):
    pool_id, job_id = _ids()
    _pool_and_job(local_batch.client(), pool_id, job_id)
    hook = BatchHook()
    hook.add_tasks(job_id, [batch_models.BatchTaskCreateOptions(id="t0", command_line=f"{sys.executable} -c pass")])
    hook.wait_for_pool(pool_id, lambda p: p.current_dedicated_nodes == 1, 0.2, 60)
    nodes = hook.pool_nodes(pool_id)
    assert len(nodes) == 1 and nodes[0].is_dedicated is True and nodes[0].allocation_time is not None
    deadline = time.monotonic() + 60
    while hook.task_counts(job_id).completed < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    [task] = hook.job_tasks(job_id)
    assert task.id == "t0" and task.execution_info.exit_code == 0 and task.node_info.pool_id == pool_id
    assert task.execution_info.start_time <= task.execution_info.end_time


def test_a_link_that_cannot_be_built_is_a_warning_not_a_failed_task(batch_connections, caplog):
    """Building the portal URL reads the connection; a missing one must not fail the task that records it."""
    from azure_compute.links.batch import AzureBatchPoolLink

    stored = []

    class _Ti:
        def xcom_push(self, key, value):
            stored.append((key, value))

    AzureBatchPoolLink.persist({"ti": _Ti()}, lambda: AzureBatchPoolLink.url(
        BatchHook(azure_batch_conn_id="no_such_connection").account_portal_url(), "pool-1"))
    assert stored == [] and "the 'Azure Batch pool' link was not recorded" in caplog.text
    AzureBatchPoolLink.persist({"ti": _Ti()}, lambda: AzureBatchPoolLink.url(BatchHook().account_portal_url(), "pool-1"))
    assert stored == [("azure_batch_pool_url", "https://portal.azure.com/#browse/Microsoft.Batch%2FbatchAccounts")]
