"""Triggers that wait on Azure Batch in the triggerer, holding no worker slot.

Each poll is one cheap request: the job's task counts, or the pool plus its
node states. Decisions come from ``azure_compute.batch_progress`` so that poke
mode and deferred mode behave the same.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from airflow.triggers.base import BaseTrigger, TriggerEvent

from azure_compute.batch_progress import JobProgress, PoolReadiness
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
        client = await hook.get_async_client()
        transient_errors = 0
        try:
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
        finally:
            await client.close()


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
    """Wait until every task of a Batch job has completed.

    One ``get_job_task_counts`` request per poll, never a task listing. Emits
    ``{"status": "done", "counts": ...}`` when all ``expected_tasks`` completed
    (the operator applies the error threshold), ``timeout`` at ``end_time``, or
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
