"""Deferrable wait for an Azure ML job: polls its status from the triggerer."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from azure_compute.hooks.aml import (
    JOB_STATE_HINTS,
    JOB_SUCCESS_STATES,
    JOB_TERMINAL_STATES,
    AzureMLHook,
    job_status,
)

#: Transient poll errors (after the SDK's own retries) tolerated in a row before the wait fails.
MAX_CONSECUTIVE_POLL_FAILURES = 3


class AzureMLJobTrigger(BaseTrigger):
    """Poll an Azure ML job until it reaches a terminal state, then fire one event.

    The event is ``{"status", "job_name", "job_status", "message", "studio_url"}`` with
    status ``success`` (Completed), ``failure`` (Failed, Canceled, NotResponding or Paused), ``timeout`` or
    ``error`` (the job could not be read: wrong credential, no such job, or repeated
    transient errors). The SDK is synchronous, so each poll runs in a thread and never
    blocks the triggerer's event loop. Status changes are logged as they are seen.

    :param job_name: the Azure ML job to watch.
    :param azure_ml_conn_id: Airflow connection of type ``azure_ml``.
    :param poll_interval: seconds between two status calls.
    :param timeout: seconds after which the wait gives up (None: wait for ever).
    """

    def __init__(
        self,
        job_name: str,
        azure_ml_conn_id: str = AzureMLHook.default_conn_name,
        poll_interval: float = 30.0,
        timeout: float | None = None,
        started_at: float | None = None,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.azure_ml_conn_id = azure_ml_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        # Wall-clock start, kept across triggerer restarts so the timeout stays honest.
        self.started_at = started_at if started_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "azure_compute.triggers.aml.AzureMLJobTrigger",
            {
                "job_name": self.job_name,
                "azure_ml_conn_id": self.azure_ml_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "started_at": self.started_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

        hook = AzureMLHook(self.azure_ml_conn_id)
        last_status: str | None = None
        failures = 0
        while True:
            try:
                job = await asyncio.to_thread(hook.get_job, self.job_name)
                failures = 0
            except Exception as err:  # the event carries the reason to the worker, which fails the task
                failures += 1
                permanent = isinstance(err, (ClientAuthenticationError, ResourceNotFoundError, ValueError))
                if permanent or failures >= MAX_CONSECUTIVE_POLL_FAILURES:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "job_name": self.job_name,
                            "job_status": last_status,
                            "message": f"polling Azure ML job {self.job_name} failed: {type(err).__name__}: {err}",
                            "studio_url": "",
                        }
                    )
                    return
                self.log.warning("polling Azure ML job %s failed (%s), trying again", self.job_name, err)
                await asyncio.sleep(self.poll_interval)
                continue
            status = job_status(job)
            if status != last_status:
                self.log.info("Azure ML job %s: %s -> %s", self.job_name, last_status or "(start)", status)
                last_status = status
            if status in JOB_TERMINAL_STATES:
                yield TriggerEvent(await asyncio.to_thread(job_event, hook, job))
                return
            if self.timeout is not None and time.time() - self.started_at > self.timeout:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "job_name": self.job_name,
                        "job_status": status,
                        "message": f"Azure ML job {self.job_name} still {status} after {self.timeout:.0f}s",
                        "studio_url": hook.studio_url(self.job_name),
                    }
                )
                return
            await asyncio.sleep(self.poll_interval)


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
        "status": "success" if status in JOB_SUCCESS_STATES else "failure",
        "job_name": job.name,
        "job_status": status,
        "message": message,
        "studio_url": hook.studio_url(job.name),
    }
