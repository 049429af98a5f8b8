"""Node operations beyond list/get: node files, scheduling, reboot, service logs, pool node counts.

REST spec operation names (counted in /_emulator/requests): File_ListFromComputeNode,
File_GetFromComputeNode, File_GetPropertiesFromComputeNode, File_DeleteFromComputeNode,
File_DeleteFromTask, ComputeNode_DisableScheduling, ComputeNode_EnableScheduling, ComputeNode_Reboot,
ComputeNode_UploadBatchServiceLogs, Account_ListPoolNodeCounts. Semantics follow the docstrings of
azure-batch 15.1 (`_operations/_operations.py`).
"""
from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from local_stack.batch_service import files
from local_stack.batch_service.errors import BatchServiceError, invalid_property, missing_property
from local_stack.batch_service.formats import now_iso

if TYPE_CHECKING:
    from local_stack.batch_service.server import BatchApp, Call

# BatchNodeCounts fields (models/_models.py) and the node states they count
COUNT_FIELDS = {
    "creating": "creating", "idle": "idle", "offline": "offline", "preempted": "preempted", "rebooting": "rebooting",
    "reimaging": "reimaging", "running": "running", "starting": "starting", "startTaskFailed": "starttaskfailed",
    "leavingPool": "leavingpool", "unknown": "unknown", "unusable": "unusable",
    "waitingForStartTask": "waitingforstarttask", "deallocated": "deallocated", "deallocating": "deallocating",
    "upgradingOS": "upgradingos",
}
SCHEDULING_OPTIONS = ("requeue", "terminate", "taskcompletion")
REBOOT_KINDS = ("requeue", "terminate")  # taskcompletion and retaineddata are refused (not implemented)
AGENT_VERSION = "local-1.0"


def register(app: "BatchApp") -> None:
    r = app._route
    r("GET", "/nodecounts", "Account_ListPoolNodeCounts", lambda call: pool_node_counts(app, call))
    r("GET", "/pools/{pool}/nodes/{node}/files", "File_ListFromComputeNode", lambda call: node_file_list(app, call))
    r("GET", "/pools/{pool}/nodes/{node}/files/{path+}", "File_GetFromComputeNode", lambda call: node_file_get(app, call))
    r("HEAD", "/pools/{pool}/nodes/{node}/files/{path+}", "File_GetPropertiesFromComputeNode", lambda call: node_file_get(app, call))
    r("DELETE", "/pools/{pool}/nodes/{node}/files/{path+}", "File_DeleteFromComputeNode", lambda call: node_file_delete(app, call))
    r("DELETE", "/jobs/{job}/tasks/{task}/files/{path+}", "File_DeleteFromTask", lambda call: task_file_delete(app, call))
    r("POST", "/pools/{pool}/nodes/{node}/disablescheduling", "ComputeNode_DisableScheduling", lambda call: disable_scheduling(app, call))
    r("POST", "/pools/{pool}/nodes/{node}/enablescheduling", "ComputeNode_EnableScheduling", lambda call: enable_scheduling(app, call))
    r("POST", "/pools/{pool}/nodes/{node}/reboot", "ComputeNode_Reboot", lambda call: reboot(app, call))
    r("POST", "/pools/{pool}/nodes/{node}/uploadbatchservicelogs", "ComputeNode_UploadBatchServiceLogs", lambda call: upload_logs(app, call))


def agent_info() -> dict:
    """nodeAgentInfo of a local node: our own agent, so our own version string."""
    return {"version": AGENT_VERSION, "lastUpdateTime": now_iso()}


def _recursive(call: "Call") -> bool:
    return call.query.get("recursive", "false").lower() == "true"


def _node_root(app: "BatchApp", pool_id: str, node_id: str) -> Path:
    app.engine.get_node(pool_id, node_id)
    return app.engine._node_dir(pool_id, node_id)


# ------------------------------------------------------------------ counts
async def pool_node_counts(app: "BatchApp", call: "Call"):
    engine = app.engine
    docs = []
    with engine.lock:
        for pool_id, nodes in engine.nodes.items():
            doc = {"poolId": pool_id}
            for kind, dedicated in (("dedicated", True), ("lowPriority", False)):
                states = [n["state"] for n in nodes.values() if bool(n.get("isDedicated")) == dedicated]
                counts = {field: states.count(state) for field, state in COUNT_FIELDS.items()}
                counts["total"] = len(states)
                doc[kind] = counts
            docs.append(doc)
    return app._page(call, docs)


# ------------------------------------------------------------------ files
async def node_file_list(app: "BatchApp", call: "Call"):
    pool_id, node_id = call.params["pool"], call.params["node"]
    root = _node_root(app, pool_id, node_id)
    base = f"{app.engine.config.base_url}/pools/{pool_id}/nodes/{node_id}/files"
    return app._page(call, files.list_docs(root, base, _recursive(call)))


async def node_file_get(app: "BatchApp", call: "Call"):
    pool_id, node_id, name = call.params["pool"], call.params["node"], call.params["path"]
    path = files.resolve(_node_root(app, pool_id, node_id), name)
    url = f"{app.engine.config.base_url}/pools/{pool_id}/nodes/{node_id}/files/{name}"
    return files.answer(call.request.method, call.request.headers, path, url)


async def node_file_delete(app: "BatchApp", call: "Call"):
    path = files.resolve(_node_root(app, call.params["pool"], call.params["node"]), call.params["path"])
    files.delete(path, _recursive(call))
    return app._empty(200)


async def task_file_delete(app: "BatchApp", call: "Call"):
    job_id, task_id = call.params["job"], call.params["task"]
    with app.engine.lock:
        root = app.engine._task_dir(app.engine._task(job_id, task_id))
    files.delete(files.resolve(root, call.params["path"]), _recursive(call))
    return app._empty(200)


# ------------------------------------------------------------------ scheduling and reboot
def _stop_tasks(engine, pool_id: str, node_id: str, option: str) -> None:
    """What happens to the node's running tasks: requeue (run again elsewhere), terminate (end as failed)."""
    if option == "requeue":
        engine._evict_node_tasks(pool_id, node_id)
    elif option == "terminate":
        for job_id, tasks in engine.tasks.items():
            for task in list(tasks.values()):
                info = task.get("nodeInfo") or {}
                if task["state"] in ("running", "preparing") and info.get("nodeId") == node_id and info.get("poolId") == pool_id:
                    engine._end_task(job_id, task, "The task was ended because its compute node was stopped by a user request.")


async def disable_scheduling(app: "BatchApp", call: "Call"):
    body = await call.body()
    option = (body.get("nodeDisableSchedulingOption") or "requeue").lower()
    if option not in SCHEDULING_OPTIONS:
        raise invalid_property("nodeDisableSchedulingOption", option, f"One of {', '.join(SCHEDULING_OPTIONS)}.")
    engine = app.engine
    pool_id, node_id = call.params["pool"], call.params["node"]
    with engine.lock:
        node = engine.get_node(pool_id, node_id)
        node["schedulingState"] = "disabled"
        _stop_tasks(engine, pool_id, node_id, option)
        engine.store.save_node(pool_id, node)
    return app._empty(200)


async def enable_scheduling(app: "BatchApp", call: "Call"):
    engine = app.engine
    pool_id, node_id = call.params["pool"], call.params["node"]
    with engine.lock:
        node = engine.get_node(pool_id, node_id)
        node["schedulingState"] = "enabled"
        engine.store.save_node(pool_id, node)
        engine.wake()
    return app._empty(200)


async def reboot(app: "BatchApp", call: "Call"):
    """Restart the node now: its tasks are requeued or terminated, then it boots again (start task included)."""
    body = await call.body()
    kind = (body.get("nodeRebootOption") or "requeue").lower()
    if kind not in REBOOT_KINDS:
        raise invalid_property("nodeRebootOption", kind, "This local service implements reboot with requeue or terminate only.")
    engine = app.engine
    pool_id, node_id = call.params["pool"], call.params["node"]
    with engine.lock:
        node = engine.get_node(pool_id, node_id)
        if node["state"] not in ("idle", "running", "starttaskfailed", "unusable", "waitingforstarttask"):
            code = {"rebooting": "NodeBeingRebooted", "starting": "NodeBeingStarted", "creating": "NodeBeingCreated"}.get(
                node["state"], "OperationNotValidOnNode")
            raise BatchServiceError(409, code, f"The node is {node['state']} and cannot be rebooted now.")
        _stop_tasks(engine, pool_id, node_id, kind)
        engine._stop_start_task(pool_id, node_id)
        engine._set_node_state(node, "rebooting")
        engine._boot_node(engine.pools[pool_id], node)
        engine.store.save_node(pool_id, node)
        engine.wake()
    return app._empty(202)


# ------------------------------------------------------------------ service logs
def _log_files(engine, pool_id: str, node: dict) -> dict[str, bytes]:
    """A local node's "service logs": its record as the service keeps it, and its start task's output."""
    root = engine._node_dir(pool_id, node["id"])
    logs = {"agent/node.json": json.dumps({k: v for k, v in node.items() if not k.startswith("_")}, indent=2).encode()}
    for name in ("stdout.txt", "stderr.txt"):
        path = root / "startup" / name
        if path.exists():
            logs[f"startup/{name}"] = path.read_bytes()
    return logs


def _upload(container_url: str, directory: str, logs: dict[str, bytes]) -> None:
    """In the background, as Azure does ("the number of log files which will be uploaded"); failures go to our log."""
    from azure.storage.blob import ContainerClient

    try:
        container = ContainerClient.from_container_url(container_url)
        for name, data in logs.items():
            container.upload_blob(f"{directory}/{name}", data, overwrite=True)
    except Exception as err:  # nothing to report to: the request was answered already
        print(f"uploadbatchservicelogs to {container_url.split('?')[0]}: {type(err).__name__}", flush=True)


async def upload_logs(app: "BatchApp", call: "Call"):
    body = await call.body()
    if not body.get("containerUrl"):
        raise missing_property("containerUrl")
    if not body.get("startTime"):
        raise missing_property("startTime")
    if body.get("identityReference"):
        raise invalid_property("identityReference", "...", "This local service uploads with the container URL's SAS only.")
    engine = app.engine
    pool_id, node_id = call.params["pool"], call.params["node"]
    with engine.lock:
        node = engine.get_node(pool_id, node_id)
        logs = _log_files(engine, pool_id, node)
    directory = f"{pool_id}/{node_id}/{uuid.uuid4()}"
    threading.Thread(target=_upload, args=(body["containerUrl"], directory, logs), daemon=True).start()
    return app._json({"virtualDirectoryName": directory, "numberOfFilesUploaded": len(logs)})
