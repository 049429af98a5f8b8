"""The Batch account's state and its scheduler: pools of local "nodes", jobs, tasks.

All state is in memory under one lock and written through to SQLite (account_store.py).
A scheduler thread allocates nodes, runs start tasks, hands active tasks to free
task slots, enforces maxWallClockTime and completes jobs; each running task is a
worker thread that fetches resource files, runs the process, uploads output
files and records the result. Every attempt carries a number: a result whose
attempt is no longer current (task preempted, terminated, requeued) is ignored.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from local_stack.batch_service import (
    autopool, autoscale, blobfiles, dependencies, job_ops, job_prep, node_ops, registry, supported, task_process,
)
from local_stack.batch_service.errors import BatchServiceError, exists, invalid_property, missing_property, not_found
from local_stack.batch_service.faults import Faults
from local_stack.batch_service.formats import elapsed_since, new_etag, now_iso, parse_duration
from local_stack.batch_service.account_store import Store

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_DURATION = "P10675199DT2H48M5.4775807S"
USABLE_NODE_STATES = ("idle", "running")


@dataclass
class EngineConfig:
    """Everything the engine needs to know about where and how it runs."""

    state_dir: Path
    account: str
    base_url: str
    storage_connection_string: str | None = None
    node_allocation_delay: float = 0.0
    node_removal_delay: float = 0.0
    stop_resize_delay: float = 0.0
    preempted_node_recovery: float = 1.0
    tick_seconds: float = 0.1
    registry_dir: Path | None = None  # the local container registry (registry.py); None: no image can be pulled


@dataclass
class RunningProcess:
    """A task or start-task process the engine may have to kill."""

    proc: subprocess.Popen
    attempt: int
    started: float
    wall_clock_limit: float | None
    kill_reason: str | None = None


@dataclass
class JobCounters:
    """Task counts per state, kept up to date so task counts cost nothing to answer."""

    tasks: Counter = field(default_factory=Counter)
    slots: Counter = field(default_factory=Counter)


def public(doc: dict) -> dict:
    """A resource document without the engine's private `_` fields."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _check_id(kind: str, body: dict) -> str:
    ident = body.get("id")
    if not ident:
        raise missing_property("id")
    if not isinstance(ident, str) or not ID_PATTERN.match(ident):
        raise invalid_property("id", ident, f"A {kind} id may contain up to 64 letters, digits, hyphens and underscores.")
    return ident


def _check_duration(name: str, value: str | None) -> float | None:
    try:
        return parse_duration(value)
    except ValueError:
        raise invalid_property(name, value, "The value is not a valid ISO 8601 duration.") from None


def _check_container_configuration(vm_config: dict) -> None:
    """containerConfiguration needs a known type; registries need a login (user and password, or an identity)."""
    container = vm_config.get("containerConfiguration")
    if container is None:
        return
    if not container.get("type"):
        raise missing_property("virtualMachineConfiguration.containerConfiguration.type")
    if str(container["type"]).lower() not in ("dockercompatible", "cricompatible"):
        raise invalid_property("virtualMachineConfiguration.containerConfiguration.type", container["type"],
                               "Known values are dockerCompatible and criCompatible.")
    for reg in container.get("containerRegistries") or []:
        if not reg.get("identityReference") and not (reg.get("username") and reg.get("password")):
            raise invalid_property("containerRegistries", reg.get("registryServer"),
                                   "A container registry needs username and password, or an identityReference.")


class Engine:
    """The account: every operation the HTTP layer exposes, and the scheduler behind them."""

    def __init__(self, config: EngineConfig, store: Store, faults: Faults) -> None:
        self.config = config
        self.store = store
        self.faults = faults
        self.registry = registry.Registry(config.registry_dir)
        self.lock = threading.RLock()
        self.pools: dict[str, dict] = {}
        self.nodes: dict[str, dict[str, dict]] = {}
        self.jobs: dict[str, dict] = {}
        self.tasks: dict[str, dict[str, dict]] = {}
        self.queue: dict[str, dict[str, None]] = {}
        self.counters: dict[str, JobCounters] = {}
        #: per job, lower-cased task id -> the id as created (ids are case-insensitive on Azure)
        self.task_keys: dict[str, dict[str, str]] = {}
        self.procs: dict[tuple, RunningProcess] = {}
        self._seq = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling and kill every process we started (their tasks requeue on the next start).

        Once stopping, no worker records a result or saves anything: whatever ran is rerun after a restart.
        """
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self.lock:
            for running in list(self.procs.values()):
                running.kill_reason = "shutdown"
                task_process.kill(running.proc)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.tick_seconds)
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # keep scheduling; the error is visible in the service log
                import traceback

                traceback.print_exc()

    def tick(self) -> None:
        with self.lock:
            self._allocate_nodes()
            self._recover_preempted_nodes()
            self._enforce_wall_clock()
            self._dispatch()
            self._complete_jobs()
            job_prep.release_completed_jobs(self)
            autopool.reap(self)

    def _load(self) -> None:
        """Reload saved state; tasks that were running when the service died are requeued."""
        pools, nodes, jobs, tasks = self.store.load()
        for pool in pools:
            self.pools[pool["id"]] = pool
            self.nodes[pool["id"]] = {}
        for pool_id, node in nodes:
            if pool_id in self.nodes:
                self.nodes[pool_id][node["id"]] = node
        for job in jobs:
            self.jobs[job["id"]] = job
            self.tasks[job["id"]] = {}
            self.task_keys[job["id"]] = {}
            self.queue[job["id"]] = {}
            self.counters[job["id"]] = JobCounters()
        for job_id, task in tasks:
            if job_id not in self.tasks:
                continue
            self._seq = max(self._seq, task.get("_seq", 0))
            self.tasks[job_id][task["id"]] = task
            self.task_keys[job_id][task["id"].lower()] = task["id"]
            if task["state"] in ("running", "preparing"):
                if task.get("_pid"):
                    task_process.kill_leftover(task["_pid"], [f"AZ_BATCH_JOB_ID={job_id}", f"AZ_BATCH_TASK_ID={task['id']}"])
                info = task.setdefault("executionInfo", {})
                info["requeueCount"] = info.get("requeueCount", 0) + 1
                info["lastRequeueTime"] = now_iso()
                task.pop("_pid", None)
                task["_attempt"] = task.get("_attempt", 0) + 1
                task["previousState"], task["previousStateTransitionTime"] = task["state"], task.get("stateTransitionTime")
                task["state"], task["stateTransitionTime"] = "active", now_iso()
                self.store.save_tasks(job_id, [task])
            if task["state"] == "active":
                self.queue[job_id][task["id"]] = None
            self._count(job_id, task, +1)
        for pool_id, pool_nodes in self.nodes.items():
            for node in pool_nodes.values():
                node.update(runningTasksCount=0, runningTaskSlotsCount=0)
                if node["state"] in ("starting", "waitingforstarttask", "creating"):
                    self._boot_node(self.pools[pool_id], node)
                elif node["state"] == "running":
                    self._set_node_state(node, "idle")
                self.store.save_node(pool_id, node)

    # ------------------------------------------------------------------ helpers
    def _url(self, *parts: str) -> str:
        return self.config.base_url + "/" + "/".join(parts)

    def _touch(self, doc: dict) -> None:
        doc["eTag"] = new_etag()
        doc["lastModified"] = now_iso()

    def canonical_ids(self, params: dict[str, str]) -> dict[str, str]:
        """The ids of a request as they were created: Azure ids are case-preserving and case-insensitive.

        (``azure/batch/models/_models.py``: BatchPoolCreateOptions.id, BatchJobCreateOptions.id,
        BatchTaskCreateOptions.id.) An id that matches nothing is returned as given.
        """
        with self.lock:
            found = dict(params)
            if "pool" in found:
                found["pool"] = self._pool_key(found["pool"]) or found["pool"]
            if "job" in found:
                found["job"] = self._job_key(found["job"]) or found["job"]
                if "task" in found:
                    found["task"] = self.task_keys.get(found["job"], {}).get(found["task"].lower(), found["task"])
            return found

    def _pool_key(self, pool_id: str | None) -> str | None:
        if not pool_id or pool_id in self.pools:
            return pool_id or None
        lower = pool_id.lower()
        return next((key for key in self.pools if key.lower() == lower), None)

    def _job_key(self, job_id: str | None) -> str | None:
        if not job_id or job_id in self.jobs:
            return job_id or None
        lower = job_id.lower()
        return next((key for key in self.jobs if key.lower() == lower), None)

    def _pool(self, pool_id: str) -> dict:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise not_found("Pool", pool_id)
        return pool

    def _job(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found("Job", job_id)
        return job

    def _task(self, job_id: str, task_id: str) -> dict:
        self._job(job_id)
        task = self.tasks[job_id].get(task_id)
        if task is None:
            raise not_found("Task", task_id)
        return task

    def _node_dir(self, pool_id: str, node_id: str) -> Path:
        return self.config.state_dir / "nodes" / pool_id / node_id

    def _task_dir(self, task: dict) -> Path | None:
        info = task.get("nodeInfo")
        if not info:
            return None
        return Path(info["taskRootDirectory"])

    def _count(self, job_id: str, task: dict, delta: int) -> None:
        counters = self.counters[job_id]
        slots = task.get("requiredSlots") or 1
        keys = ["active" if task["state"] in ("active", "preparing") else task["state"]]
        if task["state"] == "completed":
            keys.append("succeeded" if (task.get("executionInfo") or {}).get("result") == "success" else "failed")
        for key in keys:
            counters.tasks[key] += delta
            counters.slots[key] += delta * slots

    def _set_task_state(self, job_id: str, task: dict, state: str) -> None:
        self._count(job_id, task, -1)
        now = now_iso()
        task["previousState"], task["previousStateTransitionTime"] = task["state"], task.get("stateTransitionTime")
        task["state"], task["stateTransitionTime"] = state, now
        self._touch(task)
        self._count(job_id, task, +1)

    def _set_node_state(self, node: dict, state: str) -> None:
        if node["state"] != state:
            node["state"], node["stateTransitionTime"] = state, now_iso()

    # ------------------------------------------------------------------ pools
    def create_pool(self, body: dict, auto: bool = False) -> dict:
        with self.lock:
            pool_id = _check_id("pool", body)
            supported.check_pool(body)
            if self._pool_key(pool_id):
                raise exists("Pool")
            if not body.get("vmSize"):
                raise missing_property("vmSize")
            slots = body.get("taskSlotsPerNode") or 1
            if not isinstance(slots, int) or slots < 1:
                raise invalid_property("taskSlotsPerNode", slots, "taskSlotsPerNode must be at least 1.")
            _check_container_configuration(body.get("virtualMachineConfiguration") or {})
            now = now_iso()
            pool = {
                "id": pool_id,
                "displayName": body.get("displayName"),
                "url": self._url("pools", pool_id),
                "creationTime": now,
                "state": "active",
                "stateTransitionTime": now,
                "allocationState": "steady",
                "allocationStateTransitionTime": now,
                "vmSize": str(body["vmSize"]).lower(),  # as real Batch answers it (recorded: AddTaskCollection.json)
                "virtualMachineConfiguration": body.get("virtualMachineConfiguration"),
                "resizeTimeout": body.get("resizeTimeout") or "PT15M",
                "currentDedicatedNodes": 0,
                "currentLowPriorityNodes": 0,
                "targetDedicatedNodes": 0,
                "targetLowPriorityNodes": 0,
                "enableAutoScale": bool(body.get("enableAutoScale")),
                "enableInterNodeCommunication": bool(body.get("enableInterNodeCommunication")),
                "startTask": body.get("startTask"),
                "taskSlotsPerNode": slots,
                # The default as real Batch writes it (recorded: "Spread", "none"); a given policy is echoed.
                "taskSchedulingPolicy": body.get("taskSchedulingPolicy") or {"nodeFillType": "Spread", "jobDefaultOrder": "none"},
                "userAccounts": body.get("userAccounts"),
                "metadata": body.get("metadata"),
                "mountConfiguration": body.get("mountConfiguration"),
                "resourceTags": body.get("resourceTags"),
                "targetNodeCommunicationMode": body.get("targetNodeCommunicationMode"),
                "_nodeSeq": 0,
                "_autoPool": auto or None,
            }
            if pool["enableAutoScale"]:
                if body.get("targetDedicatedNodes") is not None or body.get("targetLowPriorityNodes") is not None:
                    raise invalid_property("targetDedicatedNodes", body.get("targetDedicatedNodes"), "Target node counts must not be set when enableAutoScale is true.")
                self._apply_formula(pool, body.get("autoScaleFormula") or "", body.get("autoScaleEvaluationInterval"))
            else:
                self._set_targets(pool, body.get("targetDedicatedNodes") or 0, body.get("targetLowPriorityNodes") or 0)
            pool = {k: v for k, v in pool.items() if v is not None}
            self._touch(pool)
            self.pools[pool_id] = pool
            self.nodes[pool_id] = {}
            self.store.save_pool(pool)
            self.wake()
            return pool

    def _set_targets(self, pool: dict, dedicated: int, low_priority: int) -> None:
        for name, value in (("targetDedicatedNodes", dedicated), ("targetLowPriorityNodes", low_priority)):
            if not isinstance(value, int) or value < 0:
                raise invalid_property(name, value, "Node counts must be non-negative integers.")
        pool["targetDedicatedNodes"], pool["targetLowPriorityNodes"] = dedicated, low_priority
        pool["allocationState"], pool["allocationStateTransitionTime"] = "resizing", now_iso()
        pool.pop("resizeErrors", None)  # they describe the last resize only
        current = self.nodes.get(pool["id"], {}).values()
        have_dedicated = sum(1 for n in current if n.get("isDedicated"))
        have_spot = sum(1 for n in current if not n.get("isDedicated"))
        delay = 0.0
        if dedicated > have_dedicated or low_priority > have_spot:
            delay = max(delay, self._timing("allocation"))
        if dedicated < have_dedicated or low_priority < have_spot:
            delay = max(delay, self._timing("removal"))
        pool["_allocateAt"] = time.time() + delay

    def _timing(self, which: str) -> float:
        """Seconds a resize step takes: set at run time by a pool_timing fault, else the service option."""
        value = getattr(self.faults.timing, which)
        if value is not None:
            return value
        return {"allocation": self.config.node_allocation_delay, "removal": self.config.node_removal_delay,
                "stop": self.config.stop_resize_delay}[which]

    def _apply_formula(self, pool: dict, formula: str, interval: str | None) -> None:
        values = autoscale.evaluate(formula)
        _check_duration("autoScaleEvaluationInterval", interval)
        pool["autoScaleFormula"] = formula
        pool["autoScaleEvaluationInterval"] = interval or "PT15M"
        pool["autoScaleRun"] = {"timestamp": now_iso(), "results": autoscale.results_text(values)}
        self._set_targets(pool, int(values["TargetDedicatedNodes"]), int(values["TargetLowPriorityNodes"]))

    def get_pool(self, pool_id: str) -> dict:
        with self.lock:
            return self._pool(pool_id)

    def list_pools(self) -> list[dict]:
        with self.lock:
            return list(self.pools.values())

    def update_pool(self, pool_id: str, body: dict, replace: bool = False) -> dict:
        """PATCH (merge) or updateproperties (replace startTask, metadata, ...)."""
        with self.lock:
            pool = self._pool(pool_id)
            if pool["state"] == "deleting":
                raise BatchServiceError(409, "PoolBeingDeleted", "The specified pool has been marked for deletion and is being reclaimed.")
            supported.check_pool_update(body)
            for key in ("startTask", "metadata", "applicationPackageReferences", "displayName", "taskSchedulingPolicy"):
                if key in body or replace:
                    if body.get(key) is None:
                        pool.pop(key, None)
                    else:
                        pool[key] = body[key]
            self._touch(pool)
            self.store.save_pool(pool)
            return pool

    def resize_pool(self, pool_id: str, body: dict) -> None:
        with self.lock:
            pool = self._pool(pool_id)
            if pool.get("enableAutoScale"):
                raise BatchServiceError(409, "OperationInvalidForCurrentState", "The pool has auto scaling enabled; disable it before resizing.")
            if pool["allocationState"] != "steady":
                raise BatchServiceError(409, "PoolBeingResized", "The pool is being resized; wait until its allocation state is steady.")
            self._set_targets(pool, body.get("targetDedicatedNodes") or 0, body.get("targetLowPriorityNodes") or 0)
            self._touch(pool)
            self.store.save_pool(pool)
            self.wake()

    def stop_resize(self, pool_id: str) -> None:
        """Pool_StopResize: ``stopping``, then ``steady`` at the nodes it has, targets kept, error ResizeStopped.

        ``stop_pool_resize`` in azure/batch/_operations/_operations.py: the pool "stabilizes at the
        number of Compute Nodes it was at when the stop operation was done ... the Pool allocation state
        changes first to stopping and then to steady". A steady pool: nothing to stop (no change).
        """
        with self.lock:
            pool = self._pool(pool_id)
            if pool["allocationState"] != "resizing":
                return
            pool["allocationState"], pool["allocationStateTransitionTime"] = "stopping", now_iso()
            pool.pop("_allocateAt", None)
            pool["_stopAt"] = time.time() + self._timing("stop")
            self._touch(pool)
            self.store.save_pool(pool)
            self.wake()

    def enable_autoscale(self, pool_id: str, body: dict) -> dict:
        with self.lock:
            pool = self._pool(pool_id)
            formula = body.get("autoScaleFormula") or pool.get("autoScaleFormula") or ""
            self._apply_formula(pool, formula, body.get("autoScaleEvaluationInterval") or pool.get("autoScaleEvaluationInterval"))
            pool["enableAutoScale"] = True
            self._touch(pool)
            self.store.save_pool(pool)
            self.wake()
            return pool

    def disable_autoscale(self, pool_id: str) -> dict:
        with self.lock:
            pool = self._pool(pool_id)
            pool["enableAutoScale"] = False
            for key in ("autoScaleFormula", "autoScaleEvaluationInterval", "autoScaleRun"):
                pool.pop(key, None)
            self._touch(pool)
            self.store.save_pool(pool)
            return pool

    def evaluate_autoscale(self, pool_id: str, body: dict) -> dict:
        with self.lock:
            pool = self._pool(pool_id)
            if not pool.get("enableAutoScale"):
                raise BatchServiceError(409, "OperationInvalidForCurrentState", "The pool does not have auto scaling enabled.")
            values = autoscale.evaluate(body.get("autoScaleFormula") or "")
            return {"timestamp": now_iso(), "results": autoscale.results_text(values)}

    def delete_pool(self, pool_id: str) -> None:
        """Delete now: tasks running on its nodes are requeued, its nodes disappear."""
        with self.lock:
            pool = self._pool(pool_id)
            pool["state"] = "deleting"
            for node in list(self.nodes.get(pool_id, {}).values()):
                self._evict_node_tasks(pool_id, node["id"])
                self._stop_start_task(pool_id, node["id"])
            del self.pools[pool_id]
            self.nodes.pop(pool_id, None)
            self.store.delete_pool(pool_id)
            shutil.rmtree(self.config.state_dir / "nodes" / pool_id, ignore_errors=True)

    def remove_nodes(self, pool_id: str, body: dict) -> None:
        with self.lock:
            pool = self._pool(pool_id)
            for node_id in body.get("nodeList") or []:
                node = self.nodes[pool_id].get(node_id)
                if node is None:
                    raise not_found("Node", node_id)
            for node_id in body.get("nodeList") or []:
                node = self.nodes[pool_id][node_id]
                key = "targetDedicatedNodes" if node.get("isDedicated") else "targetLowPriorityNodes"
                pool[key] = max(0, pool[key] - 1)
                self._remove_node(pool_id, node_id)
            self._refresh_counts(pool)
            self._touch(pool)
            self.store.save_pool(pool)

    # ------------------------------------------------------------------ nodes
    def list_nodes(self, pool_id: str) -> list[dict]:
        with self.lock:
            self._pool(pool_id)
            return list(self.nodes[pool_id].values())

    def get_node(self, pool_id: str, node_id: str) -> dict:
        with self.lock:
            self._pool(pool_id)
            node = self.nodes[pool_id].get(node_id)
            if node is None:
                raise not_found("Node", node_id)
            return node

    def _refresh_counts(self, pool: dict) -> None:
        nodes = self.nodes[pool["id"]].values()
        pool["currentDedicatedNodes"] = sum(1 for n in nodes if n.get("isDedicated"))
        pool["currentLowPriorityNodes"] = sum(1 for n in nodes if not n.get("isDedicated"))

    def _allocate_nodes(self) -> None:
        """Bring resizing pools to their targets once the resize time has passed; settle stopping pools.

        A resize_error fault ends a growing resize short of its targets, steady with ``resizeErrors``
        (they are "returned only when the pool's allocation state is steady": CloudPool.ResizeErrors).
        """
        for pool in list(self.pools.values()):
            if pool["allocationState"] == "stopping" and time.time() >= pool.get("_stopAt", 0):
                pool.pop("_stopAt", None)
                pool["resizeErrors"] = [{"code": "ResizeStopped", "message": "The user stopped the resize operation."}]
                pool["allocationState"], pool["allocationStateTransitionTime"] = "steady", now_iso()
                self._touch(pool)
                self.store.save_pool(pool)
                continue
            if pool["allocationState"] != "resizing" or time.time() < pool.get("_allocateAt", 0):
                continue
            pool_nodes = self.nodes[pool["id"]]
            growing = any(
                target > sum(1 for n in pool_nodes.values() if bool(n.get("isDedicated")) == dedicated)
                for dedicated, target in ((True, pool["targetDedicatedNodes"]), (False, pool["targetLowPriorityNodes"]))
            )
            fault = self.faults.take_resize(pool["id"]) if growing else None
            room = fault.allocate if fault else None
            for dedicated, target in ((True, pool["targetDedicatedNodes"]), (False, pool["targetLowPriorityNodes"])):
                current = [n for n in pool_nodes.values() if bool(n.get("isDedicated")) == dedicated]
                for _ in range(target - len(current)):
                    if room is not None:
                        if room == 0:
                            break
                        room -= 1
                    self._add_node(pool, dedicated)
                surplus = len(current) - target
                if surplus > 0:
                    victims = sorted(current, key=lambda n: (n["runningTasksCount"], n["state"] != "idle"))[:surplus]
                    for node in victims:
                        self._remove_node(pool["id"], node["id"])
            self._refresh_counts(pool)
            if fault:
                pool["resizeErrors"] = [{"code": fault.code, "message": fault.message}]
            pool["allocationState"], pool["allocationStateTransitionTime"] = "steady", now_iso()
            pool.pop("_allocateAt", None)
            self._touch(pool)
            self.store.save_pool(pool)

    def _add_node(self, pool: dict, dedicated: bool) -> None:
        pool["_nodeSeq"] = pool.get("_nodeSeq", 0) + 1
        suffix = "d" if dedicated else "p"
        pool_hash = hashlib.sha256(pool["id"].encode()).hexdigest()[:16]
        node_id = f"tvmps_{pool_hash}{pool['_nodeSeq']:06d}_{suffix}"
        now = now_iso()
        node_dir = self._node_dir(pool["id"], node_id)
        for sub in ("shared", "startup", "workitems"):
            (node_dir / sub).mkdir(parents=True, exist_ok=True)
        node = {
            "id": node_id,
            "url": self._url("pools", pool["id"], "nodes", node_id),
            "state": "starting",
            "schedulingState": "enabled",
            "stateTransitionTime": now,
            "allocationTime": now,
            "lastBootTime": now,
            "ipAddress": "127.0.0.1",
            "affinityId": f"TVM:{node_id}",
            "vmSize": pool["vmSize"],
            "totalTasksRun": 0,
            "runningTasksCount": 0,
            "runningTaskSlotsCount": 0,
            "totalTasksSucceeded": 0,
            "isDedicated": dedicated,
            "nodeAgentInfo": node_ops.agent_info(),
            "_boot": 0,
        }
        self.nodes[pool["id"]][node_id] = node
        self._boot_node(pool, node)
        self.store.save_node(pool["id"], node)

    def _remove_node(self, pool_id: str, node_id: str) -> None:
        self._evict_node_tasks(pool_id, node_id)
        self._stop_start_task(pool_id, node_id)
        self.nodes[pool_id].pop(node_id, None)
        self.store.delete_node(pool_id, node_id)

    def _boot_node(self, pool: dict, node: dict) -> None:
        """Run the pool's start task (if any); with waitForSuccess the node takes no task until it succeeds."""
        node["_boot"] = node.get("_boot", 0) + 1
        start_task = pool.get("startTask")
        node["lastBootTime"] = now_iso()
        if pool.get("mountConfiguration"):
            supported.mount_failed(node)
            return
        node.pop("errors", None)
        container = (pool.get("virtualMachineConfiguration") or {}).get("containerConfiguration") or {}
        for image in container.get("containerImageNames") or []:
            try:
                self.registry.pull(image, container.get("containerRegistries"), pool_identities=[
                    i.get("resourceId", "") for i in (pool.get("identity") or {}).get("userAssignedIdentities") or []])
            except registry.PullError as err:
                # The node could not prefetch the pool's images: it takes no task (and runs no start task).
                node["errors"] = [{"code": err.code, "message": str(err),
                                   "errorDetails": [{"name": k, "value": v} for k, v in err.details.items()]}]
                node.pop("startTaskInfo", None)
                self._set_node_state(node, "unusable")
                return
        if not start_task:
            node.pop("startTaskInfo", None)
            self._set_node_state(node, "idle")
            return
        node["startTask"] = start_task
        wait = start_task.get("waitForSuccess", True)
        self._set_node_state(node, "waitingforstarttask" if wait else "idle")
        node["startTaskInfo"] = {"state": "running", "startTime": now_iso(), "retryCount": 0}
        threading.Thread(
            target=self._run_start_task, args=(pool["id"], node["id"], node["_boot"], dict(start_task)), daemon=True
        ).start()

    def _batch_vars(self, pool_id: str, node_id: str, dedicated: bool) -> dict[str, str]:
        node_dir = self._node_dir(pool_id, node_id)
        return {
            "AZ_BATCH_ACCOUNT_NAME": self.config.account,
            "AZ_BATCH_ACCOUNT_URL": self.config.base_url,
            "AZ_BATCH_POOL_ID": pool_id,
            "AZ_BATCH_NODE_ID": node_id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if dedicated else "false",
            "AZ_BATCH_NODE_ROOT_DIR": str(node_dir),
            "AZ_BATCH_NODE_SHARED_DIR": str(node_dir / "shared"),
            "AZ_BATCH_NODE_STARTUP_DIR": str(node_dir / "startup"),
            "AZ_BATCH_NODE_MOUNTS_DIR": str(node_dir / "fsmounts"),
        }

    def _home(self, pool_id: str, node_id: str, identity: dict | None, task_key: str) -> dict[str, str]:
        """HOME of the user a task runs as: one per pool-scope auto-user or named user, else one per task.

        Processes still run as the service's OS user (see the README): the identity
        decides which home, and so which user files, a task shares with others.
        """
        identity = identity or {}
        auto = identity.get("autoUser")
        if identity.get("username"):
            name = f"user-{identity['username']}"
        elif auto and (auto.get("scope") or "pool").lower() == "pool":
            name = f"autouser-pool-{(auto.get('elevationLevel') or 'nonadmin').lower()}"
        else:
            name = f"autouser-task-{task_key}"
        home = self._node_dir(pool_id, node_id) / "users" / name
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": task_process.SYSTEM_PATH, "HOME": str(home)}

    def _runtime(self, pool_id: str, settings: dict | None) -> dict:
        """What _execute needs to start the command in a container: its settings and the pool's registries."""
        pool = self.pools.get(pool_id) or {}
        container = (pool.get("virtualMachineConfiguration") or {}).get("containerConfiguration")
        identities = [i.get("resourceId", "") for i in (pool.get("identity") or {}).get("userAssignedIdentities") or []]
        return {"settings": settings, "poolContainers": container is not None,
                "registries": (container or {}).get("containerRegistries"), "identities": identities}

    def _run_start_task(self, pool_id: str, node_id: str, boot: int, start_task: dict) -> None:
        node_dir = self._node_dir(pool_id, node_id)
        task_dir = node_dir / "startup"
        working_dir = task_dir / "wd"
        working_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            node = self.nodes.get(pool_id, {}).get(node_id)
            if node is None or node["_boot"] != boot:
                return
            env = task_process.task_environment(
                self._home(pool_id, node_id, start_task.get("userIdentity"), "start"),
                {**self._batch_vars(pool_id, node_id, node.get("isDedicated", True)),
                 "AZ_BATCH_TASK_DIR": str(task_dir), "AZ_BATCH_TASK_WORKING_DIR": str(working_dir)},
                start_task.get("environmentSettings"),
            )
            runtime = self._runtime(pool_id, start_task.get("containerSettings"))
        max_retries = start_task.get("maxTaskRetryCount") or 0
        retry = 0
        while True:
            exit_code, failure = self._execute(
                ("start", pool_id, node_id), boot, start_task, task_dir, working_dir, env, None, runtime
            )
            if exit_code is None and failure is None:
                return  # killed because the node went away
            if (failure or exit_code) and (max_retries == -1 or retry < max_retries):
                retry += 1
                continue
            break
        with self.lock:
            node = self.nodes.get(pool_id, {}).get(node_id)
            if self._stop.is_set() or node is None or node["_boot"] != boot:
                return
            info = node["startTaskInfo"]
            info.update(state="completed", endTime=now_iso(), retryCount=retry)
            if exit_code is not None:
                info["exitCode"] = exit_code
            if failure is None and exit_code:
                failure = {"category": "usererror", "code": "FailureExitCode", "message": "The task exited with an exit code representing a failure"}
            info["result"] = "failure" if failure else "success"
            if failure:
                info["failureInfo"] = failure
            if start_task.get("waitForSuccess", True):
                self._set_node_state(node, "starttaskfailed" if failure else "idle")
            self.store.save_node(pool_id, node)
            self.wake()

    def _stop_start_task(self, pool_id: str, node_id: str) -> None:
        running = self.procs.get(("start", pool_id, node_id))
        if running:
            running.kill_reason = "node-removed"
            task_process.kill(running.proc)

    def _evict_node_tasks(self, pool_id: str, node_id: str) -> list[str]:
        """Kill every task running on the node and put it back in its job's queue (requeueCount + 1)."""
        evicted = []
        for key, running in list(self.procs.items()):
            if key[0] != "task":
                continue
            _, job_id, task_id = key
            task = self.tasks.get(job_id, {}).get(task_id)
            info = (task or {}).get("nodeInfo") or {}
            if info.get("nodeId") != node_id or info.get("poolId") != pool_id:
                continue
            running.kill_reason = "preempted"
            task_process.kill(running.proc)
        for job_id, tasks in self.tasks.items():
            for task in tasks.values():
                if task["state"] in ("running", "preparing") and (task.get("nodeInfo") or {}).get("nodeId") == node_id \
                        and (task.get("nodeInfo") or {}).get("poolId") == pool_id:
                    self._release_slot(task)
                    self._requeue(job_id, task, count=True)
                    evicted.append(task["id"])
        return evicted

    def preempt(self, pool_id: str, node_id: str | None) -> dict:
        """A spot eviction: the node's running tasks are killed and requeued; the node comes back later."""
        with self.lock:
            self._pool(pool_id)
            nodes = self.nodes[pool_id]
            if node_id is None:
                busy = sorted(nodes.values(), key=lambda n: -n["runningTasksCount"])
                if not busy:
                    raise BatchServiceError(409, "NoNodeToPreempt", f"Pool {pool_id} has no node.")
                node_id = busy[0]["id"]
            node = nodes.get(node_id)
            if node is None:
                raise not_found("Node", node_id)
            evicted = self._evict_node_tasks(pool_id, node_id)
            self._stop_start_task(pool_id, node_id)
            node["_boot"] = node.get("_boot", 0) + 1
            self._set_node_state(node, "preempted")
            node["_recoverAt"] = time.time() + self.config.preempted_node_recovery
            self.store.save_node(pool_id, node)
            self.wake()
            return {"poolId": pool_id, "nodeId": node_id, "requeuedTasks": evicted}

    def _recover_preempted_nodes(self) -> None:
        for pool_id, nodes in self.nodes.items():
            for node in nodes.values():
                if node["state"] == "preempted" and time.time() >= node.get("_recoverAt", 0):
                    node.pop("_recoverAt", None)
                    self._boot_node(self.pools[pool_id], node)
                    self.store.save_node(pool_id, node)

    # ------------------------------------------------------------------ jobs
    def create_job(self, body: dict) -> dict:
        with self.lock:
            job_id = _check_id("job", body)
            if self._job_key(job_id):
                raise exists("Job")
            supported.check_job(body)
            pool_info = body.get("poolInfo") or {}
            if not pool_info.get("poolId") and not pool_info.get("autoPoolSpecification"):
                raise missing_property("poolInfo.poolId")
            constraints = body.get("constraints") or {}
            _check_duration("constraints.maxWallClockTime", constraints.get("maxWallClockTime"))
            now = now_iso()
            job = {
                "id": job_id,
                "displayName": body.get("displayName"),
                "url": self._url("jobs", job_id),
                "creationTime": now,
                "state": "active",
                "stateTransitionTime": now,
                "priority": body.get("priority") or 0,
                "maxParallelTasks": body.get("maxParallelTasks", -1),
                "usesTaskDependencies": bool(body.get("usesTaskDependencies")),
                "constraints": {"maxWallClockTime": constraints.get("maxWallClockTime") or MAX_DURATION,
                                "maxTaskRetryCount": constraints.get("maxTaskRetryCount") or 0},
                "commonEnvironmentSettings": body.get("commonEnvironmentSettings"),
                "poolInfo": pool_info,
                "onAllTasksComplete": body.get("onAllTasksComplete") or "noaction",
                "onTaskFailure": body.get("onTaskFailure") or "noaction",
                "metadata": body.get("metadata"),
                "jobPreparationTask": body.get("jobPreparationTask"),
                "jobReleaseTask": body.get("jobReleaseTask"),
                "executionInfo": {"startTime": now, "poolId": pool_info.get("poolId")},
            }
            if not pool_info.get("poolId"):
                job["executionInfo"]["poolId"] = autopool.create_for_job(self, job_id, pool_info["autoPoolSpecification"])
            job = {k: v for k, v in job.items() if v is not None}
            self._touch(job)
            self.jobs[job_id] = job
            self.tasks[job_id] = {}
            self.task_keys[job_id] = {}
            self.queue[job_id] = {}
            self.counters[job_id] = JobCounters()
            self.store.save_job(job)
            self.wake()
            return job

    def get_job(self, job_id: str) -> dict:
        with self.lock:
            return self._job(job_id)

    def list_jobs(self) -> list[dict]:
        with self.lock:
            return list(self.jobs.values())

    def update_job(self, job_id: str, body: dict, replace: bool = False) -> dict:
        with self.lock:
            job = self._job(job_id)
            if job["state"] in ("completed", "terminating", "deleting"):
                raise BatchServiceError(409, "JobCompleted" if job["state"] == "completed" else "JobBeingTerminated",
                                        f"The specified job is {job['state']}.")
            if job.get("onAllTasksComplete") == "terminatejob" and body.get("onAllTasksComplete") == "noaction":
                raise invalid_property("onAllTasksComplete", "noaction", "onAllTasksComplete cannot be changed from terminatejob to noaction.")
            if "constraints" in body and body["constraints"] is not None:
                _check_duration("constraints.maxWallClockTime", body["constraints"].get("maxWallClockTime"))
            for key in ("priority", "maxParallelTasks", "constraints", "poolInfo", "onAllTasksComplete", "onTaskFailure", "metadata", "allowTaskPreemption"):
                if key in body and body[key] is not None:
                    job[key] = body[key]
                elif replace and key in ("metadata", "constraints"):
                    job.pop(key, None)
            self._touch(job)
            self.store.save_job(job)
            self.wake()
            return job

    def terminate_job(self, job_id: str, reason: str | None) -> None:
        with self.lock:
            job = self._job(job_id)
            if job["state"] == "completed":
                raise BatchServiceError(409, "JobCompleted", "The specified job is already in a completed state.")
            self._terminate_job(job, reason or "UserTerminate")

    def _terminate_job(self, job: dict, reason: str) -> None:
        """Job_Terminate: running tasks are ended; active tasks stay active and are never scheduled.

        ``terminate_job`` in azure/batch/_operations/_operations.py: "If there are any Tasks in the
        Job in the active state, they will remain in the active state. Once a Job is terminated, new
        Tasks cannot be added and any remaining active Tasks will not be scheduled."
        """
        job["state"], job["stateTransitionTime"] = "terminating", now_iso()
        for task in list(self.tasks[job["id"]].values()):
            if task["state"] in ("running", "preparing"):
                self._end_task(job["id"], task, "The task was ended because its job was terminated.")
        self.queue[job["id"]].clear()
        job["previousState"], job["previousStateTransitionTime"] = "active", job["stateTransitionTime"]
        job["state"], job["stateTransitionTime"] = "completed", now_iso()
        job.setdefault("executionInfo", {}).update(endTime=now_iso(), terminateReason=reason)
        self._touch(job)
        self.store.save_job(job)

    def delete_job(self, job_id: str) -> None:
        with self.lock:
            job = self._job(job_id)
            job["state"] = "deleting"
            for task in list(self.tasks[job_id].values()):
                self._kill_task(job_id, task, "deleted")
            for key in [k for k in self.procs if k[0] == "task" and k[1] == job_id]:
                self.procs[key].kill_reason = "deleted"
            del self.jobs[job_id], self.tasks[job_id], self.queue[job_id], self.counters[job_id], self.task_keys[job_id]
            self.store.delete_job(job_id)

    def task_counts(self, job_id: str) -> dict:
        with self.lock:
            self._job(job_id)
            counters = self.counters[job_id]
            names = ("active", "running", "completed", "succeeded", "failed")
            return {
                "taskCounts": {n: counters.tasks[n] for n in names},
                "taskSlotCounts": {n: counters.slots[n] for n in names},
            }

    def _complete_jobs(self) -> None:
        for job in list(self.jobs.values()):
            if job["state"] != "active":
                continue
            limit = parse_duration(job.get("constraints", {}).get("maxWallClockTime"))
            if limit is not None and elapsed_since(job["creationTime"]) > limit:
                self._terminate_job(job, "MaxWallClockTimeExpiry")
                continue
            if job.get("onAllTasksComplete") == "terminatejob":
                counters = self.counters[job["id"]].tasks
                if counters["active"] == 0 and counters["running"] == 0:
                    self._terminate_job(job, "AllTasksComplete")

    # ------------------------------------------------------------------ tasks
    def _validate_task(self, job: dict, body: dict) -> dict:
        task_id = _check_id("task", body)
        supported.check_task_body(body)
        dependencies.check_add(job, body)
        if not body.get("commandLine"):
            raise missing_property("commandLine")
        for spec in body.get("resourceFiles") or []:
            sources = [k for k in ("httpUrl", "storageContainerUrl", "autoStorageContainerName") if spec.get(k)]
            if len(sources) != 1:
                raise invalid_property("resourceFiles", sources, "Exactly one of httpUrl, storageContainerUrl and autoStorageContainerName must be set.")
            if spec.get("httpUrl") and not spec.get("filePath"):
                raise missing_property("resourceFiles.filePath")
            if spec.get("filePath") and not blobfiles.safe_relative_path(spec["filePath"]):
                raise invalid_property("resourceFiles.filePath", spec["filePath"], "The file path must be relative and must not contain '..'.")
        for spec in body.get("outputFiles") or []:
            if not spec.get("filePattern"):
                raise missing_property("outputFiles.filePattern")
            if not ((spec.get("destination") or {}).get("container") or {}).get("containerUrl"):
                raise missing_property("outputFiles.destination.container.containerUrl")
            if not spec.get("uploadOptions", {}).get("uploadCondition"):
                raise missing_property("outputFiles.uploadOptions.uploadCondition")
        constraints = dict(body.get("constraints") or {})
        _check_duration("constraints.maxWallClockTime", constraints.get("maxWallClockTime"))
        job_constraints = job.get("constraints") or {}
        constraints.setdefault("maxWallClockTime", MAX_DURATION)
        constraints.setdefault("retentionTime", "P7D")
        if constraints.get("maxTaskRetryCount") is None:
            constraints["maxTaskRetryCount"] = job_constraints.get("maxTaskRetryCount") or 0
        slots = body.get("requiredSlots") or 1
        self._seq += 1
        now = now_iso()
        task = {k: v for k, v in body.items() if v is not None}
        task.update(
            id=task_id,
            url=self._url("jobs", job["id"], "tasks", task_id),
            creationTime=now,
            state="active",
            stateTransitionTime=now,
            constraints=constraints,
            requiredSlots=slots,
            executionInfo={"retryCount": 0, "requeueCount": 0},
            _seq=self._seq,
        )
        self._touch(task)
        return task

    def _check_job_open(self, job: dict) -> None:
        if job["state"] == "completed":
            raise BatchServiceError(409, "JobCompleted", "The specified job is already in a completed state.")
        if job["state"] in ("terminating", "deleting"):
            raise BatchServiceError(409, "JobBeingTerminated" if job["state"] == "terminating" else "JobBeingDeleted",
                                    f"The specified job is {job['state']}.")

    def add_task(self, job_id: str, body: dict) -> dict:
        with self.lock:
            job = self._job(job_id)
            self._check_job_open(job)
            if str(body.get("id") or "").lower() in self.task_keys[job_id]:
                raise exists("Task")
            task = self._validate_task(job, body)
            self._insert_tasks(job_id, [task])
            return task

    def add_task_collection(self, job_id: str, bodies: list[dict]) -> list[dict]:
        """Per-task results: Success, or clienterror with TaskExists / validation codes."""
        with self.lock:
            job = self._job(job_id)
            self._check_job_open(job)
            results, added, seen = [], [], set()
            for body in bodies:
                task_id = body.get("id") if isinstance(body, dict) else None
                try:
                    if not isinstance(body, dict):
                        raise invalid_property("value", body, "Each task must be a JSON object.")
                    if str(task_id or "").lower() in self.task_keys[job_id] or str(task_id or "").lower() in seen:
                        raise exists("Task")
                    task = self._validate_task(job, body)
                except BatchServiceError as err:
                    results.append({"status": "clienterror", "taskId": task_id, "error": err.body()})
                    continue
                seen.add(task_id.lower())
                added.append(task)
                # "Success" as real Batch writes it (recorded: azure-sdk-assets, .NET AddTaskCollection.json)
                results.append({"status": "Success", "taskId": task_id, "eTag": task["eTag"],
                                "lastModified": task["lastModified"], "location": task["url"]})
            self._insert_tasks(job_id, added)
            return results

    def _insert_tasks(self, job_id: str, tasks: list[dict]) -> None:
        for task in tasks:
            self.tasks[job_id][task["id"]] = task
            self.task_keys[job_id][task["id"].lower()] = task["id"]
            self.queue[job_id][task["id"]] = None
            self._count(job_id, task, +1)
        if tasks:
            self.store.save_tasks(job_id, tasks)
            self.wake()

    def get_task(self, job_id: str, task_id: str) -> dict:
        with self.lock:
            return self._task(job_id, task_id)

    def list_tasks(self, job_id: str) -> list[dict]:
        with self.lock:
            self._job(job_id)
            return list(self.tasks[job_id].values())

    def update_task(self, job_id: str, task_id: str, body: dict) -> dict:
        with self.lock:
            task = self._task(job_id, task_id)
            if body.get("constraints"):
                _check_duration("constraints.maxWallClockTime", body["constraints"].get("maxWallClockTime"))
                task["constraints"].update({k: v for k, v in body["constraints"].items() if v is not None})
            self._touch(task)
            self.store.save_tasks(job_id, [task])
            return task

    def terminate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            if task["state"] == "completed":
                raise BatchServiceError(409, "TaskCompleted", "The specified task is already completed.")
            self._end_task(job_id, task, "The task was terminated by a user request.")

    def reactivate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            if task["state"] != "completed" or (task.get("executionInfo") or {}).get("result") != "failure":
                raise BatchServiceError(409, "OperationInvalidForCurrentState", "Only a completed task that failed can be reactivated.")
            self._check_job_open(self._job(job_id))
            # still counted as failed until the state changes below (no result = not succeeded)
            task["executionInfo"] = {"retryCount": 0, "requeueCount": task["executionInfo"].get("requeueCount", 0)}
            self._set_task_state(job_id, task, "active")
            self.queue[job_id][task_id] = None
            self.store.save_tasks(job_id, [task])
            self.wake()

    def delete_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            self._kill_task(job_id, task, "deleted")
            self._count(job_id, task, -1)
            del self.tasks[job_id][task_id]
            self.task_keys[job_id].pop(task_id.lower(), None)
            self.queue[job_id].pop(task_id, None)
            self.store.delete_task(job_id, task_id)

    def _kill_task(self, job_id: str, task: dict, reason: str) -> None:
        """Stop the task's process (if any) and invalidate its current attempt."""
        running = self.procs.get(("task", job_id, task["id"]))
        if running:
            running.kill_reason = reason
            task_process.kill(running.proc)
        if task["state"] in ("running", "preparing"):
            self._release_slot(task)
        task["_attempt"] = task.get("_attempt", 0) + 1

    def _end_task(self, job_id: str, task: dict, message: str) -> None:
        """Complete a task that did not finish on its own (terminated task or job)."""
        self._kill_task(job_id, task, "terminated")
        self.queue[job_id].pop(task["id"], None)
        info = task.setdefault("executionInfo", {})
        info["endTime"] = now_iso()
        info["result"] = "failure"
        info["failureInfo"] = {"category": "usererror", "code": "TaskEnded", "message": message}
        self._set_task_state(job_id, task, "completed")
        self.store.save_tasks(job_id, [task])

    def _requeue(self, job_id: str, task: dict, count: bool, save: bool = True) -> None:
        info = task.setdefault("executionInfo", {})
        if count:
            info["requeueCount"] = info.get("requeueCount", 0) + 1
            info["lastRequeueTime"] = now_iso()
        task["_attempt"] = task.get("_attempt", 0) + 1
        task.pop("_pid", None)
        if task["state"] != "active":
            self._set_task_state(job_id, task, "active")
        self.queue[job_id] = {task["id"]: None, **self.queue[job_id]}
        if save:
            self.store.save_tasks(job_id, [task])

    def _release_slot(self, task: dict) -> None:
        info = task.get("nodeInfo") or {}
        node = self.nodes.get(info.get("poolId"), {}).get(info.get("nodeId"))
        if node is None:
            return
        node["runningTasksCount"] = max(0, node["runningTasksCount"] - 1)
        node["runningTaskSlotsCount"] = max(0, node["runningTaskSlotsCount"] - (task.get("requiredSlots") or 1))
        if node["state"] == "running" and node["runningTasksCount"] == 0:
            self._set_node_state(node, "idle")
        self.store.save_node(info["poolId"], node)

    # ------------------------------------------------------------------ scheduling
    def _dispatch(self) -> None:
        """Give queued tasks of active jobs the free task slots of their pool's usable nodes."""
        jobs = sorted((j for j in self.jobs.values() if j["state"] == "active" and self.queue[j["id"]]),
                      key=lambda j: (-j.get("priority", 0), j["creationTime"]))
        for job in jobs:
            pool = self.pools.get(self._pool_key(autopool.pool_id(job)) or "")
            if pool is None or pool["state"] != "active":
                continue
            slots_per_node = pool["taskSlotsPerNode"]
            pack = str((pool.get("taskSchedulingPolicy") or {}).get("nodeFillType") or "").lower() == "pack"
            max_parallel = job.get("maxParallelTasks", -1)
            running = self.counters[job["id"]].tasks["running"]
            for task_id in list(self.queue[job["id"]]):
                if max_parallel not in (None, -1) and running >= max_parallel:
                    break
                nodes = [n for n in self.nodes[pool["id"]].values()
                         if n["state"] in USABLE_NODE_STATES and n.get("schedulingState") == "enabled"]
                if not nodes:
                    break
                task = self.tasks[job["id"]][task_id]
                if not dependencies.satisfied(self.tasks[job["id"]], task):
                    continue  # kept waiting, as Azure does, until the tasks it depends on complete
                refusal = supported.run_refusal(task)
                if refusal is not None:
                    supported.fail_without_running(self, job["id"], task, refusal)
                    continue
                need = task.get("requiredSlots") or 1
                fits = [n for n in nodes if slots_per_node - n["runningTaskSlotsCount"] >= need]
                if not fits:
                    if all(n["runningTaskSlotsCount"] >= slots_per_node for n in nodes):
                        break
                    continue
                node = fits[0] if pack else min(fits, key=lambda n: (n["runningTaskSlotsCount"], n["id"]))
                if not job_prep.ready(self, job, pool, node):
                    continue  # the job preparation task runs (or failed) on that node first
                self._start_task(job, pool, node, task)
                running += 1

    def _start_task(self, job: dict, pool: dict, node: dict, task: dict) -> None:
        job_id = job["id"]
        del self.queue[job_id][task["id"]]
        task["_attempt"] = task.get("_attempt", 0) + 1
        node_dir = self._node_dir(pool["id"], node["id"])
        task_dir = node_dir / "workitems" / job_id / "job-1" / task["id"]
        task["nodeInfo"] = {
            "affinityId": node["affinityId"],
            "nodeUrl": node["url"],
            "poolId": pool["id"],
            "nodeId": node["id"],
            "taskRootDirectory": str(task_dir),
            "taskRootDirectoryUrl": task["url"] + "/files",
        }
        info = task.setdefault("executionInfo", {})
        info["startTime"] = now_iso()
        for key in ("endTime", "exitCode", "result", "failureInfo"):
            info.pop(key, None)
        self._set_task_state(job_id, task, "running")
        node["runningTasksCount"] += 1
        node["runningTaskSlotsCount"] += task.get("requiredSlots") or 1
        node["totalTasksRun"] += 1
        self._set_node_state(node, "running")
        env = task_process.task_environment(
            self._home(pool["id"], node["id"], task.get("userIdentity"), f"{job_id}-{task['id']}"),
            {**self._batch_vars(pool["id"], node["id"], node.get("isDedicated", True)),
             "AZ_BATCH_JOB_ID": job_id,
             "AZ_BATCH_TASK_ID": task["id"],
             "AZ_BATCH_TASK_DIR": str(task_dir),
             "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd")},
            job.get("commonEnvironmentSettings"),
            task.get("environmentSettings"),
        )
        self.store.save_tasks(job_id, [task])
        self.store.save_node(pool["id"], node)
        spec = {k: task.get(k) for k in ("commandLine", "resourceFiles", "outputFiles")}
        limit = parse_duration(task["constraints"].get("maxWallClockTime"))
        runtime = self._runtime(pool["id"], task.get("containerSettings"))
        threading.Thread(
            target=self._run_task, args=(job_id, task["id"], task["_attempt"], spec, task_dir, env, limit, runtime),
            daemon=True,
        ).start()

    def _execute(self, key: tuple, attempt: int, spec: dict, task_dir: Path, working_dir: Path,
                 env: dict[str, str], limit: float | None, runtime: dict | None = None) -> tuple[int | None, dict | None]:
        """Fetch resource files and run the command; (exit code, failureInfo), or (None, None) when killed by us."""
        working_dir.mkdir(parents=True, exist_ok=True)
        stdout, stderr = task_dir / "stdout.txt", task_dir / "stderr.txt"
        cwd = working_dir
        settings = (runtime or {}).get("settings")
        if settings:
            if not runtime.get("poolContainers"):
                stdout.touch()
                stderr.write_text("the task has containerSettings but its pool has no containerConfiguration\n")
                return None, {"category": "usererror", "code": "ContainerInvalidSettings",
                              "message": "At least one value of the specified Task container settings is invalid",
                              "details": [{"name": "Message", "value": "the pool has no containerConfiguration"}]}
            try:
                image = self.registry.pull(settings.get("imageName") or "", runtime.get("registries"),
                                           settings.get("registry"), runtime.get("identities"))
            except registry.PullError as err:
                stdout.touch()
                stderr.write_text(f"{err}: {err.details.get('Message', '')}\n")
                return None, err.failure_info()
            run_workdir, run_env = task_process.container_run_options(settings.get("containerRunOptions"))
            # In the container: the image's environment, then the task's variables (docker create -e).
            env = {**image.env, **{k: v for k, v in env.items() if k != "PATH"}, **run_env}
            env.setdefault("PATH", task_process.SYSTEM_PATH)
            if run_workdir:
                cwd = Path(run_workdir)
            elif (settings.get("workingDirectory") or "").lower() == "containerimagedefault" and image.workdir:
                cwd = Path(image.workdir)
        try:
            blobfiles.download_resource_files(spec.get("resourceFiles") or [], working_dir, self.config.storage_connection_string)
        except blobfiles.TransferError as err:
            stderr.write_text(f"{err}\n")
            stdout.touch()
            return None, {"category": "usererror", "code": err.code, "message": str(err)}
        forced = self.faults.take_task_exit(key[1], key[2]) if key[0] == "task" else None
        if forced is not None:
            stdout.write_bytes(b"")
            stderr.write_text(f"exit code {forced} injected by /_emulator/faults\n")
            return forced, None
        try:
            argv = task_process.split_command_line(spec["commandLine"])
            proc = task_process.spawn(argv, cwd, env, stdout, stderr)
        except ValueError as err:
            stderr.write_text(f"{err}\n")
            return None, {"category": "usererror", "code": "CommandLineInvalid", "message": f"The command line could not be parsed: {err}"}
        except OSError as err:
            stderr.write_text(f"{err}\n")
            return None, {"category": "usererror", "code": "CommandProgramNotFound", "message": f"The specified command program is not found: {err.strerror}"}
        with self.lock:
            if self._stop.is_set() or self._current_attempt(key) != attempt:
                task_process.kill(proc)
                proc.wait()
                return None, None
            self.procs[key] = RunningProcess(proc, attempt, time.monotonic(), limit)
            if key[0] == "task":
                task = self.tasks[key[1]][key[2]]
                task["_pid"] = proc.pid
                self.store.save_tasks(key[1], [task])
        returncode = proc.wait()
        if returncode == -signal.SIGTERM:
            # we only ever SIGKILL; a SIGTERM most likely hit the process while it was still in the
            # service's process group (between fork and setsid) as the service was being stopped
            self._stop.wait(2.0)
        with self.lock:
            running = self.procs.pop(key, None)
            if self._stop.is_set():
                return None, None  # stopping: the task stays running in the store and is requeued on start
        reason = running.kill_reason if running else None
        if reason == "wallclock":
            return task_process.exit_code_of(returncode), {
                "category": "usererror", "code": "TaskEnded",
                "message": "Task was ended by the Batch service because it exceeded its maxWallClockTime.",
                "details": [{"name": "Reason", "value": "MaxWallClockTimeExpiry"}],
            }
        if reason is not None:
            return None, None
        return task_process.exit_code_of(returncode), None

    def _current_attempt(self, key: tuple) -> int | None:
        if key[0] == "task":
            task = self.tasks.get(key[1], {}).get(key[2])
            return task.get("_attempt") if task else None
        node = self.nodes.get(key[1], {}).get(key[2])
        return node.get("_boot") if node else None

    def _run_task(self, job_id: str, task_id: str, attempt: int, spec: dict, task_dir: Path,
                  env: dict[str, str], limit: float | None, runtime: dict | None = None) -> None:
        exit_code, failure = self._execute(("task", job_id, task_id), attempt, spec, task_dir, task_dir / "wd", env,
                                           limit, runtime)
        if exit_code is None and failure is None:
            return  # preempted, terminated or deleted: whoever stopped it has recorded the outcome
        succeeded = failure is None and exit_code == 0
        upload_error = None
        try:
            blobfiles.upload_output_files(spec.get("outputFiles") or [], task_dir / "wd", succeeded)
        except blobfiles.TransferError as err:
            upload_error = {"category": "usererror", "code": err.code, "message": str(err)}
        with self.lock:
            self._finish_task(job_id, task_id, attempt, exit_code, failure, upload_error)

    def _finish_task(self, job_id: str, task_id: str, attempt: int, exit_code: int | None,
                     failure: dict | None, upload_error: dict | None) -> None:
        task = self.tasks.get(job_id, {}).get(task_id)
        if self._stop.is_set() or task is None or task.get("_attempt") != attempt or task["state"] != "running":
            return
        self._release_slot(task)
        info = task["executionInfo"]
        info["endTime"] = now_iso()
        if exit_code is not None:
            info["exitCode"] = exit_code
        retryable = False
        if failure is None and exit_code:
            failure = {"category": "usererror", "code": "FailureExitCode",
                       "message": "The task exited with an exit code representing a failure"}
            retryable = True
        if failure is None and upload_error:
            failure = upload_error
        task.pop("_pid", None)
        max_retries = task["constraints"].get("maxTaskRetryCount") or 0
        if retryable and (max_retries == -1 or info.get("retryCount", 0) < max_retries):
            info["retryCount"] = info.get("retryCount", 0) + 1
            info["lastRetryTime"] = now_iso()
            info["failureInfo"] = failure
            self._set_task_state(job_id, task, "active")
            self.queue[job_id][task_id] = None
        else:
            info["result"] = "failure" if failure else "success"
            if failure:
                info["failureInfo"] = failure
            self._set_task_state(job_id, task, "completed")
            node = self.nodes.get(task["nodeInfo"]["poolId"], {}).get(task["nodeInfo"]["nodeId"])
            if node is not None and not failure:
                node["totalTasksSucceeded"] += 1
            if failure:
                self._apply_exit_conditions(job_id, task, exit_code)
        self.store.save_tasks(job_id, [task])
        self.wake()

    def _apply_exit_conditions(self, job_id: str, task: dict, exit_code: int | None) -> None:
        """onTaskFailure=performexitoptionsjobaction: a matching exit condition's jobAction terminate ends the job."""
        job = self.jobs.get(job_id)
        if job is None or job.get("onTaskFailure") != "performexitoptionsjobaction":
            return
        conditions = task.get("exitConditions") or {}
        options = conditions.get("default") or {"jobAction": "none"}
        for mapping in conditions.get("exitCodes") or []:
            if mapping.get("code") == exit_code:
                options = mapping.get("exitOptions") or options
        for rng in conditions.get("exitCodeRanges") or []:
            if exit_code is not None and rng["start"] <= exit_code <= rng["end"]:
                options = rng.get("exitOptions") or options
        if options.get("jobAction") == "terminate" and job["state"] == "active":
            self._terminate_job(job, "TaskFailed")
        elif options.get("jobAction") == "disable" and job["state"] == "active":
            job_ops.disable(self, job, "requeue")  # "equivalent to ... disableTasks requeue" (BatchJobActionKind)

    def _enforce_wall_clock(self) -> None:
        now = time.monotonic()
        for running in self.procs.values():
            if running.wall_clock_limit is not None and running.kill_reason is None \
                    and now - running.started > running.wall_clock_limit:
                running.kill_reason = "wallclock"
                task_process.kill(running.proc)

    # ------------------------------------------------------------------ task files
    def task_file(self, job_id: str, task_id: str, file_path: str) -> Path:
        with self.lock:
            task = self._task(job_id, task_id)
            task_dir = self._task_dir(task)
        if task_dir is None or not blobfiles.safe_relative_path(file_path):
            raise not_found("File", file_path)
        path = task_dir / file_path
        if not path.exists():
            raise not_found("File", file_path)
        return path
