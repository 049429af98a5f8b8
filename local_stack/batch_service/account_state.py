"""The Batch account's state: pools, nodes, jobs and tasks in memory, and the helpers every part uses.

All state lives in dicts under one re-entrant lock and is written through to SQLite
(account_store.py). Every part of the engine (pools, nodes, jobs, tasks, the scheduler and
process execution) is a mixin over AccountState, so each finds the others' methods on
``self``; engine.py puts them together. Running processes are keyed by a tuple tag:
``("task", job id, task id)``, ``("start", pool id, node id)``, or
``("jobPreparationTask" | "jobReleaseTask", pool id, node id)`` (job_prep.py).
"""
from __future__ import annotations

import re
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from local_stack.batch_service import registry
from local_stack.batch_service.account_store import Store
from local_stack.batch_service.errors import invalid_property, missing_property, not_found
from local_stack.batch_service.faults import Faults
from local_stack.batch_service.formats import new_etag, now_iso, parse_duration

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_DURATION = "P10675199DT2H48M5.4775807S"
#: The tag of a running process: ("task", job id, task id) or (node task kind, pool id, node id).
ProcessKey = tuple[str, str, str]


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


def check_id(kind: str, body: dict) -> str:
    """The id of a create request; 400 when it is missing or not up to 64 letters, digits, '-' and '_'."""
    ident = body.get("id")
    if not ident:
        raise missing_property("id")
    if not isinstance(ident, str) or not ID_PATTERN.match(ident):
        raise invalid_property("id", ident, f"A {kind} id may contain up to 64 letters, digits, hyphens and underscores.")
    return ident


def check_duration(name: str, value: str | None) -> float | None:
    """Seconds of an ISO 8601 duration property (None when unset); 400 naming the property when invalid."""
    try:
        return parse_duration(value)
    except ValueError:
        raise invalid_property(name, value, "The value is not a valid ISO 8601 duration.") from None


class AccountState:
    """The account's documents and bookkeeping, shared by every part of the engine."""

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
        self.procs: dict[ProcessKey, RunningProcess] = {}
        self._seq = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Tell the scheduler that something changed (it ticks now, not at the next interval)."""
        self._wake.set()

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
