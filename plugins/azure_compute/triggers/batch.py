"""Triggers that wait on Azure Batch in the triggerer, holding no worker slot.

Each poll is one or two cheap requests: the job's task counts (and its state
while tasks remain), the pool plus its node states, or the pool alone. Decisions come from ``azure_compute.batch_progress`` so that poke
mode and deferred mode behave the same.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from airflow.triggers.base import BaseTrigger, TriggerEvent

from azure_compute.batch_progress import JobProgress, PoolReadiness, wire_value
from azure_compute.hooks.batch import BatchHook

_TRANSIENT_ERRORS_TOLERATED = 5
#: Statuses that mean the credentials were refused.
_REFUSED = (401, 403)


class _BatchPollingTrigger(BaseTrigger):
    """Shared loop: poll, log, stop on a verdict, time out at ``end_time``."""

    def __init__(self, azure_batch_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__()
        self.azure_batch_conn_id = azure_batch_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time

    def _kwargs(self) -> dict[str, Any]:
        return {"azure_batch_conn_id": self.azure_batch_conn_id, "poll_interval": self.poll_interval, "end_time": self.end_time}

    async def poll(self, client) -> TriggerEvent | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def timeout_event(self) -> TriggerEvent:  # pragma: no cover - abstract
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = BatchHook(azure_batch_conn_id=self.azure_batch_conn_id)
        transient_errors = 0
        async with hook.async_client() as client:
            while True:
                try:
                    event = await self.poll(client)
                    transient_errors = 0
                except Exception as err:  # noqa: BLE001 - a blip must not end a multi-hour wait
                    if _is_final(err):
                        yield TriggerEvent({"status": "error", "message": _first_line(err)})
                        return
                    transient_errors += 1
                    self.log.warning("poll failed (%d in a row): %s", transient_errors, _first_line(err))
                    if transient_errors > _TRANSIENT_ERRORS_TOLERATED:
                        yield TriggerEvent({"status": "error", "message": _first_line(err)})
                        return
                    event = None
                if event is not None:
                    yield event
                    return
                if time.time() >= self.end_time:
                    yield self.timeout_event()
                    return
                await asyncio.sleep(self.poll_interval)


def _is_final(err: BaseException) -> bool:
    """A missing resource or refused credentials: polling again cannot help.

    Batch answers a wrong shared key with 403 AuthenticationFailed, which the SDK
    raises as a plain HttpResponseError (only 401 maps to ClientAuthenticationError).
    """
    if isinstance(err, (ResourceNotFoundError, ClientAuthenticationError)):
        return True
    return isinstance(err, HttpResponseError) and err.status_code in _REFUSED


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


class AzureBatchJobTrigger(_BatchPollingTrigger):
    """Wait until every task of a Batch job has completed, or the job itself has.

    One ``get_job_task_counts`` request per poll, plus a GET of the job's state while
    tasks remain (a terminated job leaves unstarted tasks active for ever); never a
    task listing. Emits ``{"status": "done", "counts": ...}`` when all
    ``expected_tasks`` completed or the job completed (the operator applies the
    error threshold and names what never ran), ``timeout`` at ``end_time``, or
    ``error`` when the job vanished or credentials were refused.
    """

    def __init__(
        self,
        job_id: str,
        expected_tasks: int,
        azure_batch_conn_id: str,
        poll_interval: float,
        end_time: float,
        started_at: float | None = None,
        done_at_start: int | None = None,
    ) -> None:
        super().__init__(azure_batch_conn_id, poll_interval, end_time)
        self.job_id = job_id
        self.expected_tasks = expected_tasks
        self.started_at = started_at or time.time()
        self.done_at_start = done_at_start
        self._last: JobProgress | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **self._kwargs(),
                "job_id": self.job_id,
                "expected_tasks": self.expected_tasks,
                "started_at": self.started_at,
                "done_at_start": self.done_at_start,
            },
        )

    async def poll(self, client) -> TriggerEvent | None:
        result = await client.get_job_task_counts(self.job_id)
        progress = JobProgress.from_counts(result.task_counts)
        if not progress.counts_done(self.expected_tasks):
            job = await client.get_job(self.job_id, select=["id", "state", "executionInfo"])
            progress = JobProgress.from_counts(result.task_counts, job)
        if self.done_at_start is None:
            self.done_at_start = progress.completed
        if progress != self._last:
            self.log.info(
                "job %s: %s", self.job_id,
                progress.describe(self.expected_tasks, time.time() - self.started_at, self.done_at_start),
            )
            self._last = progress
        if progress.is_done(self.expected_tasks):
            return TriggerEvent({"status": "done", "job_id": self.job_id, "counts": progress.as_dict()})
        return None

    def timeout_event(self) -> TriggerEvent:
        counts = self._last.as_dict() if self._last else {}
        return TriggerEvent({"status": "timeout", "job_id": self.job_id, "counts": counts,
                             "message": f"job {self.job_id} did not finish before the wait's timeout"})


class AzureBatchPoolNodesTrigger(_BatchPollingTrigger):
    """Wait until a pool has ``min_ready_nodes`` nodes idle or running.

    Fails when the pool settled with only ``starttaskfailed``/``unusable`` nodes
    or with resize errors (for example no spot capacity or no GPU quota).
    """

    def __init__(self, pool_id: str, min_ready_nodes: int, azure_batch_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__(azure_batch_conn_id, poll_interval, end_time)
        self.pool_id = pool_id
        self.min_ready_nodes = min_ready_nodes
        self._last: PoolReadiness | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {**self._kwargs(), "pool_id": self.pool_id, "min_ready_nodes": self.min_ready_nodes},
        )

    async def poll(self, client) -> TriggerEvent | None:
        pool = await client.get_pool(self.pool_id)
        nodes = [node.state async for node in client.list_nodes(self.pool_id, select=["id", "state"])]
        errors = [f"{e.code}: {e.message}" for e in (pool.resize_errors or [])]
        readiness = PoolReadiness.from_pool(pool.allocation_state, nodes, errors)
        if readiness != self._last:
            self.log.info("pool %s: %s", self.pool_id, readiness.describe())
            self._last = readiness
        verdict = readiness.verdict(self.min_ready_nodes)
        if verdict == "waiting":
            return None
        status = "success" if verdict == "ready" else "error"
        return TriggerEvent({"status": status, "pool_id": self.pool_id, "message": readiness.describe()})

    def timeout_event(self) -> TriggerEvent:
        state = self._last.describe() if self._last else "no answer yet"
        return TriggerEvent({"status": "timeout", "pool_id": self.pool_id,
                             "message": f"pool {self.pool_id} not ready before the timeout: {state}"})


class AzureBatchPoolSettledTrigger(_BatchPollingTrigger):
    """Wait until a pool is gone (``want="gone"``), steady (``"steady"``) or steady at zero nodes (``"zero"``).

    One GET of the pool per poll: the end state is confirmed by what Azure answers, not by an
    SDK poller's status. Emits ``success`` with the pool's counts and any resize errors,
    ``timeout`` at ``end_time``.
    """

    WANTS = ("gone", "steady", "zero")

    def __init__(self, pool_id: str, want: str, azure_batch_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__(azure_batch_conn_id, poll_interval, end_time)
        if want not in self.WANTS:
            raise ValueError(f"want {want!r} must be one of {self.WANTS}")
        self.pool_id = pool_id
        self.want = want
        self._last = "no answer yet"

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {**self._kwargs(), "pool_id": self.pool_id, "want": self.want},
        )

    async def poll(self, client) -> TriggerEvent | None:
        try:
            pool = await client.get_pool(self.pool_id)
        except ResourceNotFoundError:
            return TriggerEvent({"status": "success", "pool_id": self.pool_id, "gone": True, "message": "pool is gone"})
        verdict = pool_settled(pool, self.want)
        if verdict is None:
            self._last = describe_pool(pool)
            self.log.info("pool %s: %s", self.pool_id, self._last)
            return None
        return TriggerEvent({"status": "success", "pool_id": self.pool_id, "gone": False, "message": verdict})

    def timeout_event(self) -> TriggerEvent:
        return TriggerEvent({"status": "timeout", "pool_id": self.pool_id,
                             "message": f"pool {self.pool_id} did not become {self.want} before the timeout: {self._last}"})


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
