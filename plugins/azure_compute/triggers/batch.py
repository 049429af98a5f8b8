"""Triggers that wait on Azure Batch in the triggerer, holding no worker slot.

Each is configuration plus one ``poll_once`` on ``AzurePollingTrigger`` (``triggers/base.py``,
which owns the loop, the deadline, the error rules and the event vocabulary). Each poll is one
or two cheap requests: the job's task counts (and its state while tasks remain), the pool plus
its node states, or the pool alone. Decisions come from ``azure_compute.batch_progress`` so that
poke mode and deferred mode behave the same.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from azure_compute.batch_progress import JobProgress, PoolReadiness, wire_value
from azure_compute.hooks.batch import BatchHook
from azure_compute.triggers.base import FAILURE, SUCCESS, AzurePollingTrigger


class _BatchPollingTrigger(AzurePollingTrigger):
    """A polling trigger talking through one async Batch client for the whole wait."""

    transient_errors_tolerated = 5

    def __init__(self, azure_batch_conn_id: str, poll_interval: float, end_time: float | None) -> None:
        super().__init__(poll_interval=poll_interval, end_time=end_time)
        self.azure_batch_conn_id = azure_batch_conn_id

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        async with BatchHook(azure_batch_conn_id=self.azure_batch_conn_id).async_client() as client:
            yield client

    def fields(self) -> dict[str, Any]:
        return {"azure_batch_conn_id": self.azure_batch_conn_id}


class AzureBatchJobTrigger(_BatchPollingTrigger):
    """Wait until every task of a Batch job has completed, or the job itself has.

    One ``get_job_task_counts`` request per poll while a task runs, plus a GET of the
    job's state while tasks remain and none runs (a terminated job leaves unstarted
    tasks active for ever: ``JobProgress.needs_job_state``); never a task listing.
    Emits ``success`` with ``counts`` when all ``expected_tasks`` completed or the job
    completed (the sensor applies the error threshold and names what never ran),
    ``timeout`` at ``end_time``, or ``error`` when the job vanished or credentials
    were refused.
    """

    def __init__(
        self,
        job_id: str,
        expected_tasks: int,
        azure_batch_conn_id: str,
        poll_interval: float,
        end_time: float | None,
        started_at: float | None = None,
        done_at_start: int | None = None,
    ) -> None:
        super().__init__(azure_batch_conn_id, poll_interval, end_time)
        self.job_id = job_id
        self.expected_tasks = expected_tasks
        self.started_at = started_at or time.time()
        self.done_at_start = done_at_start

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "job_id": self.job_id, "expected_tasks": self.expected_tasks,
                "started_at": self.started_at, "done_at_start": self.done_at_start}

    def subject(self) -> dict[str, Any]:
        return {"job_id": self.job_id}

    async def poll_once(self, client) -> dict[str, Any] | None:
        result = await client.get_job_task_counts(self.job_id)
        progress = JobProgress.from_counts(result.task_counts)
        if progress.needs_job_state(self.expected_tasks):  # the same rule as BatchHook.job_progress
            job = await client.get_job(self.job_id, select=["id", "state", "executionInfo"])
            progress = JobProgress.from_counts(result.task_counts, job)
        if self.done_at_start is None:
            self.done_at_start = progress.completed  # the rate counts only what finishes while we watch
        self.progress(progress, lambda: f"job {self.job_id}: " + progress.describe(
            self.expected_tasks, time.time() - self.started_at, self.done_at_start))
        if progress.is_done(self.expected_tasks):
            return self.event(SUCCESS, f"job {self.job_id}: all tasks done", counts=progress.as_dict())
        return None

    def timeout_message(self) -> str:
        return f"job {self.job_id} did not finish before the wait's timeout"

    def event(self, status: str, message: str, **extra: Any) -> dict[str, Any]:
        last = self._last_progress
        extra.setdefault("counts", last.as_dict() if isinstance(last, JobProgress) else {})
        return super().event(status, message, **extra)


class AzureBatchPoolNodesTrigger(_BatchPollingTrigger):
    """Wait until a pool has ``min_ready_nodes`` nodes idle or running.

    Ends with ``failure`` when the pool settled with only ``starttaskfailed``/``unusable``
    nodes or with resize errors (for example no spot capacity or no GPU quota).
    """

    def __init__(self, pool_id: str, min_ready_nodes: int, azure_batch_conn_id: str, poll_interval: float,
                 end_time: float | None) -> None:
        super().__init__(azure_batch_conn_id, poll_interval, end_time)
        self.pool_id = pool_id
        self.min_ready_nodes = min_ready_nodes

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "pool_id": self.pool_id, "min_ready_nodes": self.min_ready_nodes}

    def subject(self) -> dict[str, Any]:
        return {"pool_id": self.pool_id}

    async def poll_once(self, client) -> dict[str, Any] | None:
        pool = await client.get_pool(self.pool_id)
        nodes = [node.state async for node in client.list_nodes(self.pool_id, select=["id", "state"])]
        errors = [f"{e.code}: {e.message}" for e in (pool.resize_errors or [])]
        readiness = PoolReadiness.from_pool(pool.allocation_state, nodes, errors)
        self.progress(readiness, lambda: f"pool {self.pool_id}: {readiness.describe()}")
        verdict = readiness.verdict(self.min_ready_nodes)
        if verdict == "waiting":
            return None
        return self.event(SUCCESS if verdict == "ready" else FAILURE, readiness.describe())

    def timeout_message(self) -> str:
        state = self._last_progress.describe() if self._last_progress else "no answer yet"
        return f"pool {self.pool_id} not ready before the timeout: {state}"


class AzureBatchPoolSettledTrigger(_BatchPollingTrigger):
    """Wait until a pool is gone (``want="gone"``), steady (``"steady"``) or steady at zero nodes (``"zero"``).

    One GET of the pool per poll: the end state is confirmed by what Azure answers, not by an
    SDK poller's status. Emits ``success`` with ``gone`` and the pool's counts and any resize
    errors, ``timeout`` at ``end_time``.
    """

    WANTS = ("gone", "steady", "zero")

    def __init__(self, pool_id: str, want: str, azure_batch_conn_id: str, poll_interval: float,
                 end_time: float | None) -> None:
        super().__init__(azure_batch_conn_id, poll_interval, end_time)
        if want not in self.WANTS:
            raise ValueError(f"want {want!r} must be one of {self.WANTS}")
        self.pool_id = pool_id
        self.want = want

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "pool_id": self.pool_id, "want": self.want}

    def subject(self) -> dict[str, Any]:
        return {"pool_id": self.pool_id}

    async def poll_once(self, client) -> dict[str, Any] | None:
        try:
            pool = await client.get_pool(self.pool_id)
        except ResourceNotFoundError:
            return self.event(SUCCESS, "pool is gone", gone=True)
        verdict = pool_settled(pool, self.want)
        if verdict is None:
            described = describe_pool(pool)
            self.progress(described, lambda: f"pool {self.pool_id}: {described}")
            return None
        return self.event(SUCCESS, verdict, gone=False)

    def timeout_message(self) -> str:
        return (f"pool {self.pool_id} did not become {self.want} before the timeout: "
                f"{self._last_progress or 'no answer yet'}")


def describe_pool(pool) -> str:
    """State, allocation state, node counts and resize errors of a pool, in one line."""
    text = (f"state {wire_value(pool.state)}, allocation {wire_value(pool.allocation_state)}, "
            f"{pool.current_dedicated_nodes or 0} dedicated + {pool.current_low_priority_nodes or 0} spot nodes")
    errors = [f"{e.code}: {e.message}" for e in (pool.resize_errors or [])]
    return text + ("; resize errors: " + "; ".join(errors) if errors else "")


def pool_settled(pool, want: str) -> str | None:
    """A description when ``pool`` (None: gone) is where ``want`` says, else None."""
    if pool is None:
        return "pool is gone"
    steady = wire_value(pool.allocation_state) == "steady" and wire_value(pool.state) != "deleting"
    if want == "steady" and steady:
        return describe_pool(pool)
    if want == "zero" and steady and not (pool.current_dedicated_nodes or 0) and not (pool.current_low_priority_nodes or 0):
        return describe_pool(pool)
    return None
