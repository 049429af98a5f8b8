"""Deferrable wait for an Azure ML job: configuration and one ``poll_once`` on ``AzurePollingTrigger``."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from azure_compute.hooks.aml import (
    JOB_STATE_HINTS,
    JOB_SUCCESS_STATES,
    JOB_TERMINAL_STATES,
    AzureMLHook,
    job_status,
)
from azure_compute.triggers.base import FAILURE, SUCCESS, TIMEOUT, AzurePollingTrigger


class AzureMLJobTrigger(AzurePollingTrigger):
    """Poll an Azure ML job until it reaches a terminal state, then fire one event.

    The event is ``{"status", "job_name", "job_status", "message", "studio_url"}`` with
    status ``success`` (Completed), ``failure`` (Failed, Canceled, NotResponding or Paused),
    ``timeout`` or ``error`` (the job could not be read: wrong credential, no such job, or
    repeated transient errors). The SDK is synchronous, so each poll runs in a thread and
    never blocks the triggerer's event loop. Status changes are logged as they are seen.

    :param job_name: the Azure ML job to watch.
    :param azure_ml_conn_id: Airflow connection of type ``azure_ml``.
    :param poll_interval: seconds between two status calls.
    :param end_time: the deadline as a Unix time (None: wait for ever).
    :param timeout: instead of ``end_time``: seconds after ``started_at`` (kept so that a trigger
        serialized by an earlier version, and callers passing ``timeout``, still work).
    """

    #: The Azure ML side has always failed at the third transient error in a row.
    transient_errors_tolerated = 2

    def __init__(
        self,
        job_name: str,
        azure_ml_conn_id: str = AzureMLHook.default_conn_name,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        *,
        timeout: float | None = None,
        started_at: float | None = None,
    ) -> None:
        # Wall-clock start, kept across triggerer restarts: the timeout message counts from it.
        started_at = started_at if started_at is not None else time.time()
        if end_time is None and timeout is not None:
            end_time = started_at + timeout
        super().__init__(poll_interval=poll_interval, end_time=end_time)
        self.started_at = started_at
        self.job_name = job_name
        self.azure_ml_conn_id = azure_ml_conn_id
        self._status: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"job_name": self.job_name, "azure_ml_conn_id": self.azure_ml_conn_id, "started_at": self.started_at}

    def subject(self) -> dict[str, Any]:
        return {"job_name": self.job_name, "job_status": self._status, "studio_url": ""}

    async def poll_once(self, hook: AzureMLHook) -> dict[str, Any] | None:
        job = await asyncio.to_thread(hook.get_job, self.job_name)
        status = job_status(job)
        self.progress(status, lambda: f"Azure ML job {self.job_name}: {self._status or '(start)'} -> {status}")
        self._status = status
        if status in JOB_TERMINAL_STATES:
            return await asyncio.to_thread(job_event, hook, job)
        return None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AzureMLHook]:
        yield AzureMLHook(self.azure_ml_conn_id)  # one hook, hence one MLClient, for the whole wait

    def waiting_on(self) -> str:
        return f"Azure ML job {self.job_name} is {self._status}"

    def timeout_message(self) -> str:
        return f"Azure ML job {self.job_name} still {self._status} after {(self.end_time or 0) - self.started_at:.0f}s"

    def event(self, status: str, message: str, **extra: Any) -> dict[str, Any]:
        if status == TIMEOUT:
            extra.setdefault("studio_url", AzureMLHook(self.azure_ml_conn_id).studio_url(self.job_name))
        return super().event(status, message, **extra)

    def error_message(self, err: BaseException) -> str:
        return f"polling Azure ML job {self.job_name} failed: {type(err).__name__}: {err}"


def job_event(hook: AzureMLHook, job: Any) -> dict[str, Any]:
    """The event payload for a job in a terminal state (also used by the non-deferred path).

    A Failed job's message carries the error the workspace reports (run history's details);
    NotResponding, Paused and Canceled say what they mean. The studio link goes with every one.
    """
    status = job_status(job)
    message = f"Azure ML job {job.name} ended {status}"
    if status == "Failed":
        error = hook.get_job_error(job.name)
        message += f": {error}" if error else " (the workspace reports no error; see its logs in studio)"
    elif status in JOB_STATE_HINTS:
        message += f": {JOB_STATE_HINTS[status]}"
    return {
        "status": SUCCESS if status in JOB_SUCCESS_STATES else FAILURE,
        "job_name": job.name,
        "job_status": status,
        "message": message,
        "studio_url": hook.studio_url(job.name),
    }
