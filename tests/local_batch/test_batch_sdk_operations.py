"""Operations and refusals added for the SDK's own suite (issue 18), through the real azure-batch client."""
from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from batch_helpers import make_job, make_pool, read_file, unique, wait_for_tasks, wait_until


def _error(call) -> tuple[int, str, dict]:
    with pytest.raises(HttpResponseError) as err:
        call()
    values = {v["key"]: v["value"] for v in err.value.model.get("values") or []}
    return err.value.status_code, err.value.error.code, values


def test_unimplemented_properties_are_refused_naming_them(batch):
    vm = models.VirtualMachineConfiguration(
        image_reference=models.BatchVmImageReference(publisher="canonical", offer="ubuntu", sku="22_04"),
        node_agent_sku_id="batch.node.ubuntu 22.04")
    status, code, values = _error(lambda: batch.create_pool(models.BatchPoolCreateOptions(
        id=unique("pool"), vm_size="standard_d2_v3", virtual_machine_configuration=vm,
        upgrade_policy=models.UpgradePolicy(mode="manual"))))
    assert (status, code, values["PropertyName"]) == (400, "UnsupportedProperty", "upgradePolicy")
    pool_id = make_pool(batch, nodes=0)
    job_id = make_job(batch, pool_id)
    status, code, values = _error(lambda: batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="mi", command_line="true", multi_instance_settings=models.MultiInstanceSettings(coordination_command_line="true"))))
    assert (status, code, values["PropertyName"]) == (400, "UnsupportedProperty", "multiInstanceSettings")
    status, code, values = _error(lambda: batch.update_pool(pool_id, models.BatchPoolUpdateOptions(
        mount_configuration=[models.MountConfiguration(nfs_mount_configuration=models.NfsMountConfiguration(
            source="10.0.0.4:/data", relative_mount_path="data"))])))
    assert (status, code, values["PropertyName"]) == (400, "UnsupportedProperty", "mountConfiguration")
    assert batch.list_pools(filter=f"id eq '{pool_id}'")  # nothing half-created by the refusals
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_foreign_subnet_and_gallery_image_are_invalid(batch):
    image = models.VirtualMachineConfiguration(
        image_reference=models.BatchVmImageReference(
            virtual_machine_image_id="/subscriptions/x/resourceGroups/g/providers/Microsoft.Compute/galleries/g/images/i/versions/1"),
        node_agent_sku_id="batch.node.ubuntu 22.04")
    status, code, values = _error(lambda: batch.create_pool(models.BatchPoolCreateOptions(
        id=unique("pool"), vm_size="standard_d2_v3", virtual_machine_configuration=image)))
    assert (status, code) == (400, "InvalidPropertyValue")
    assert values["PropertyName"].endswith("virtualMachineImageId")


def test_dependent_task_waits_for_its_dependency_and_a_missing_one_keeps_it_waiting(batch, pool):
    job_id = unique("job")
    batch.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool),
                                                  uses_task_dependencies=True))
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="second", command_line="/bin/bash -c 'cat $AZ_BATCH_NODE_SHARED_DIR/first'",
        depends_on=models.BatchTaskDependencies(task_ids=["first"])))
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="orphan", command_line="true", depends_on=models.BatchTaskDependencies(task_ids=["never-added"])))
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="first", command_line="/bin/bash -c 'sleep 0.5; echo done > $AZ_BATCH_NODE_SHARED_DIR/first'"))
    wait_for_tasks(batch, job_id, 2)
    assert batch.get_task(job_id, "second").execution_info.exit_code == 0
    assert read_file(batch, job_id, "second", "stdout.txt") == "done\n"
    assert batch.get_task(job_id, "orphan").state == "active"
    other = make_job(batch, pool)  # a job without usesTaskDependencies refuses such tasks
    status, code, _ = _error(lambda: batch.create_task(other, models.BatchTaskCreateOptions(
        id="t", command_line="true", depends_on=models.BatchTaskDependencies(task_ids=["x"]))))
    assert (status, code) == (400, "TaskDependenciesNotSpecifiedOnJob")


def test_node_files_pool_node_counts_and_delete(batch):
    pool_id = make_pool(batch, nodes=1, slots=1, start_task=models.BatchStartTask(
        command_line="/bin/bash -c 'echo no such package >&2; exit 100'", wait_for_success=True))
    node = wait_until(lambda: next((n for n in batch.list_nodes(pool_id) if n.state == "starttaskfailed"), None),
                      what="node in starttaskfailed")
    assert node.node_agent_info.version
    names = {f.name for f in batch.list_node_files(pool_id, node.id, recursive=True)}
    assert {"startup/stdout.txt", "startup/stderr.txt"} <= names
    assert b"".join(batch.download_node_file(pool_id, node.id, "startup/stderr.txt")) == b"no such package\n"
    assert batch.get_node_file_properties(pool_id, node.id, "startup/stderr.txt").content_length == 16
    counts = {c.pool_id: c for c in batch.list_pool_node_counts()}[pool_id]
    assert (counts.dedicated.start_task_failed, counts.dedicated.total, counts.low_priority.total) == (1, 1, 0)
    batch.delete_node_file(pool_id, node.id, "startup/stderr.txt")
    with pytest.raises(ResourceNotFoundError):
        batch.get_node_file_properties(pool_id, node.id, "startup/stderr.txt")
    with pytest.raises(ResourceNotFoundError):
        batch.get_node_file_properties(pool_id, node.id, "../../../batch.sqlite")
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_disabled_node_and_disabled_job_take_no_task_until_enabled(batch):
    pool_id = make_pool(batch, nodes=1, slots=1)
    node_id = next(iter(batch.list_nodes(pool_id))).id
    batch.disable_node_scheduling(pool_id, node_id, models.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="requeue"))
    job_id = make_job(batch, pool_id)
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="true"))
    assert batch.get_node(pool_id, node_id).scheduling_state == "disabled"
    assert batch.get_task(job_id, "t").state == "active"
    batch.begin_disable_job(job_id, models.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=0).result()
    batch.enable_node_scheduling(pool_id, node_id)
    assert batch.get_job(job_id).state == "disabled"
    assert batch.get_task(job_id, "t").state == "active"
    batch.begin_enable_job(job_id, polling_interval=0).result()
    wait_for_tasks(batch, job_id, 1)
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_job_preparation_runs_before_tasks_and_release_after_the_job(batch):
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = unique("job")
    batch.create_job(models.BatchJobCreateOptions(
        id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id),
        job_preparation_task=models.BatchJobPreparationTask(
            command_line="/bin/bash -c 'echo prepared > $AZ_BATCH_NODE_SHARED_DIR/prep'"),
        job_release_task=models.BatchJobReleaseTask(
            command_line="/bin/bash -c 'echo released > $AZ_BATCH_NODE_SHARED_DIR/release'")))
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="t", command_line="/bin/bash -c 'cat $AZ_BATCH_NODE_SHARED_DIR/prep'"))
    wait_for_tasks(batch, job_id, 1)
    assert read_file(batch, job_id, "t", "stdout.txt") == "prepared\n"
    batch.begin_terminate_job(job_id, options=models._models.BatchJobTerminateOptions(termination_reason="done"),
                              polling_interval=0).result()
    status = wait_until(lambda: [s for s in batch.list_job_preparation_and_release_task_status(job_id)
                                 if s.job_release_task_execution_info and s.job_release_task_execution_info.state == "completed"],
                        what="release task completed")
    assert status[0].job_preparation_task_execution_info.result == "success"
    assert status[0].job_release_task_execution_info.result == "success"
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_a_failed_job_preparation_keeps_the_jobs_tasks_off_the_node(batch):
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = unique("job")
    batch.create_job(models.BatchJobCreateOptions(
        id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id),
        job_preparation_task=models.BatchJobPreparationTask(command_line="/bin/bash -c 'exit 4'")))
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="true"))
    status = wait_until(lambda: [s for s in batch.list_job_preparation_and_release_task_status(job_id)
                                 if s.job_preparation_task_execution_info.state == "completed"], what="prep done")
    assert status[0].job_preparation_task_execution_info.exit_code == 4
    assert batch.get_task(job_id, "t").state == "active"
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_auto_pool_is_created_for_the_job_and_deleted_when_it_completes(batch):
    job_id = unique("job")
    vm = models.VirtualMachineConfiguration(
        image_reference=models.BatchVmImageReference(publisher="canonical", offer="ubuntu", sku="22_04"),
        node_agent_sku_id="batch.node.ubuntu 22.04")
    batch.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(
        auto_pool_specification=models.BatchAutoPoolSpecification(
            auto_pool_id_prefix="auto", pool_lifetime_option="job",
            pool=models.BatchPoolSpecification(vm_size="standard_d2_v3", virtual_machine_configuration=vm,
                                               target_dedicated_nodes=1)))))
    pool_id = batch.get_job(job_id).execution_info.pool_id
    assert pool_id.startswith("auto_")
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="t", command_line="true"))
    wait_for_tasks(batch, job_id, 1)
    batch.begin_terminate_job(job_id, options=models._models.BatchJobTerminateOptions(termination_reason="done"),
                              polling_interval=0).result()
    wait_until(lambda: not list(batch.list_pools(filter=f"id eq '{pool_id}'")), what="auto pool deleted")


def test_run_as_named_user_fails_on_the_node_instead_of_running_as_someone_else(batch, pool):
    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="t", command_line="true", user_identity=models.UserIdentity(username="task-user")))
    wait_for_tasks(batch, job_id, 1)
    info = batch.get_task(job_id, "t").execution_info
    assert (info.result, info.failure_info.code) == ("failure", "UserIdentityNotSupported")


def test_exit_condition_disable_disables_the_job(batch, pool):
    job_id = unique("job")
    batch.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool),
                                                  task_failure_mode="performexitoptionsjobaction"))
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="t", command_line="/bin/bash -c 'exit 3'", exit_conditions=models.ExitConditions(exit_code_ranges=[
            models.ExitCodeRangeMapping(start=2, end=4, exit_options=models.ExitOptions(job_action="disable"))])))
    wait_for_tasks(batch, job_id, 1)
    wait_until(lambda: batch.get_job(job_id).state == "disabled", what="job disabled by the exit condition")
