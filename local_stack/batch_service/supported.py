"""What the local service accepts in a request body, and the clear refusal of everything else.

A property the service does not implement is answered `400 UnsupportedProperty` ("One of the
properties specified in the request body is not supported", Batch Status and Error Codes), naming the
property, instead of being accepted and dropped. Properties that describe the VM (image, disks,
security profile, tags) are recorded and returned, as vmSize is: a local node is this machine either way.
Resource ids from other Azure services (subnets, gallery images) cannot exist for a local account and
are answered `400 InvalidPropertyValue`, as Azure answers an id it cannot resolve.
"""
from __future__ import annotations

from local_stack.batch_service.errors import BatchServiceError, invalid_property
from local_stack.batch_service.formats import now_iso

POOL_PROPERTIES = {
    # implemented
    "id", "displayName", "vmSize", "resizeTimeout", "targetDedicatedNodes", "targetLowPriorityNodes",
    "enableAutoScale", "autoScaleFormula", "autoScaleEvaluationInterval", "startTask", "taskSlotsPerNode",
    "taskSchedulingPolicy", "metadata",
    # recorded and returned; no local effect (one machine, no VMs)
    "virtualMachineConfiguration", "resourceTags", "enableInterNodeCommunication", "targetNodeCommunicationMode",
    "userAccounts", "mountConfiguration",
    # validated below
    "networkConfiguration", "applicationPackageReferences", "certificateReferences",
}
JOB_PROPERTIES = {
    "id", "displayName", "priority", "maxParallelTasks", "usesTaskDependencies", "constraints",
    "commonEnvironmentSettings", "poolInfo", "onAllTasksComplete", "onTaskFailure", "metadata",
    "allowTaskPreemption", "jobPreparationTask", "jobReleaseTask",
}
TASK_PROPERTIES = {
    "id", "displayName", "commandLine", "resourceFiles", "outputFiles", "environmentSettings", "constraints",
    "requiredSlots", "exitConditions", "userIdentity", "containerSettings", "dependsOn", "affinityInfo",
    "applicationPackageReferences",
}
AUTO_POOL_PROPERTIES = {"autoPoolIdPrefix", "poolLifetimeOption", "keepAlive", "pool"}


def unsupported(name: str, what: str = "") -> BatchServiceError:
    reason = what or f"The local Batch service does not implement {name}."
    return BatchServiceError(400, "UnsupportedProperty",
                             f"One of the properties specified in the request body is not supported: {name}. {reason}",
                             {"PropertyName": name, "Reason": reason})


def _only(body: dict, allowed: set[str], prefix: str = "") -> None:
    for key, value in body.items():
        if key not in allowed and value not in (None, [], {}):
            raise unsupported(prefix + key)


def _empty_list(body: dict, name: str, prefix: str = "") -> None:
    if body.get(name):
        raise unsupported(prefix + name)


def check_pool(body: dict, prefix: str = "") -> None:
    """A pool (or an auto pool's pool specification) the service can honour, or the refusal."""
    _only(body, POOL_PROPERTIES, prefix)
    _empty_list(body, "applicationPackageReferences", prefix)
    _empty_list(body, "certificateReferences", prefix)
    network = body.get("networkConfiguration") or {}
    if network.get("subnetId"):
        raise invalid_property(f"{prefix}networkConfiguration.subnetId", network["subnetId"],
                               "The virtual network or subnet does not exist or is not accessible to this account.")
    if network:
        raise unsupported(f"{prefix}networkConfiguration")
    image = (body.get("virtualMachineConfiguration") or {}).get("imageReference") or {}
    for key in ("virtualMachineImageId", "sharedGalleryImageId", "communityGalleryImageId"):
        if image.get(key):
            raise invalid_property(f"{prefix}virtualMachineConfiguration.imageReference.{key}", image[key],
                                   "The image does not exist or is not accessible to this account.")
    extensions = (body.get("virtualMachineConfiguration") or {}).get("extensions")
    if extensions:
        raise unsupported(f"{prefix}virtualMachineConfiguration.extensions")
    if body.get("startTask"):
        check_task_body(body["startTask"], f"{prefix}startTask.", start_task=True)


POOL_UPDATE_PROPERTIES = {"startTask", "metadata", "applicationPackageReferences", "certificateReferences",
                          "displayName", "taskSchedulingPolicy"}


def check_pool_update(body: dict) -> None:
    """Pool_Patch / Pool_UpdateProperties: only what update_pool applies; the rest is refused, not dropped."""
    _only(body, POOL_UPDATE_PROPERTIES)
    _empty_list(body, "applicationPackageReferences")
    _empty_list(body, "certificateReferences")
    if body.get("startTask"):
        check_task_body(body["startTask"], "startTask.", start_task=True)


def check_job(body: dict) -> None:
    _only(body, JOB_PROPERTIES)
    if body.get("allowTaskPreemption"):
        raise unsupported("allowTaskPreemption", "Tasks of one job never preempt another job's tasks here.")
    auto_pool = (body.get("poolInfo") or {}).get("autoPoolSpecification")
    if auto_pool:
        _only(auto_pool, AUTO_POOL_PROPERTIES, "poolInfo.autoPoolSpecification.")
        if str(auto_pool.get("poolLifetimeOption", "")).lower() != "job":
            raise unsupported("poolInfo.autoPoolSpecification.poolLifetimeOption",
                              "Only poolLifetimeOption 'job' is implemented (there are no job schedules).")
        check_pool(auto_pool.get("pool") or {}, "poolInfo.autoPoolSpecification.pool.")
    for kind in ("jobPreparationTask", "jobReleaseTask"):
        if body.get(kind):
            allowed = {"id", "commandLine", "resourceFiles", "environmentSettings", "constraints", "waitForSuccess",
                       "userIdentity", "rerunOnNodeRebootAfterSuccess", "containerSettings", "maxWallClockTime",
                       "retentionTime"}
            _only(body[kind], allowed, f"{kind}.")
    if body.get("jobReleaseTask") and not body.get("jobPreparationTask"):
        raise invalid_property("jobReleaseTask", "...", "A job release task needs a job preparation task.")


def check_task_body(body: dict, prefix: str = "", start_task: bool = False) -> None:
    """A task (or a pool's start task) whose properties the service honours, or the refusal."""
    allowed = TASK_PROPERTIES if not start_task else {
        "commandLine", "containerSettings", "resourceFiles", "environmentSettings", "userIdentity",
        "maxTaskRetryCount", "waitForSuccess"}
    _only(body, allowed, prefix)
    _empty_list(body, "applicationPackageReferences", prefix)


def run_refusal(task: dict) -> dict | None:
    """The failureInfo of a task the service accepts (as Azure does) but cannot run as asked, else None.

    Azure accepts `userIdentity.username` at add time and resolves the user on the node; here tasks
    run as the service's own user, so such a task fails on the node instead of running as someone else.
    """
    username = (task.get("userIdentity") or {}).get("username")
    if username:
        return {"category": "usererror", "code": "UserIdentityNotSupported",
                "message": f"userIdentity.username '{username}': the local Batch service runs tasks as its own user only."}
    return None


def fail_without_running(engine, job_id: str, task: dict, failure: dict) -> None:
    """Complete a queued task as failed, without running it (called under the engine lock)."""
    engine.queue[job_id].pop(task["id"], None)
    info = task.setdefault("executionInfo", {})
    info.update(result="failure", failureInfo=failure, startTime=info.get("startTime") or now_iso(), endTime=now_iso())
    engine._set_task_state(job_id, task, "completed")
    engine.store.save_tasks(job_id, [task])


def mount_failed(node: dict) -> None:
    """A pool's mountConfiguration: on Azure a node whose mount fails becomes unusable with a node error
    (virtual-file-mount.md); the local service mounts nothing, so every node of such a pool does."""
    node["state"], node["stateTransitionTime"] = "unusable", now_iso()
    node["errors"] = [{"code": "MountConfigurationNotSupported",
                       "message": "The local Batch service does not mount file systems (mountConfiguration)."}]
