"""Wait for an Azure ML job, deferrable by default.

Checks once before deferring (a finished job needs no trigger), then waits in the
triggerer with `AzureMLJobTrigger`, holding no worker slot. A job that ends Failed or
Canceled fails the task with the job's error and its studio link.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from azure_compute.hooks.aml import JOB_TERMINAL_STATES, AzureMLHook, job_status
from azure_compute.links.aml import AzureMLStudioJobLink
from azure_compute.operators.aml import AzureMLBase, raise_for_event
from azure_compute.operators.base import DEFAULT_DEFERRABLE
from azure_compute.triggers.aml import AzureMLJobTrigger, job_event

if TYPE_CHECKING:
    from airflow.sdk import Context


class AzureMLJobSensor(AzureMLBase, BaseSensorOperator):
    """Succeed when the Azure ML job completes; fail when it ends Failed or Canceled.

    :param job_name: the job to wait for (templated; e.g. the submit task's XCom).
    :param azure_ml_conn_id: Airflow connection of type ``azure_ml``.
    :param deferrable: wait in the triggerer (default from ``operators.default_deferrable``).
    :param poke_interval: seconds between status checks.
    :param timeout: seconds before the sensor gives up.
    :param cancel_on_kill: cancel the job when the task is killed.
    :return: the job name (XCom).
    """

    template_fields: Sequence[str] = ("job_name",)
    operator_extra_links = (AzureMLStudioJobLink(),)

    def __init__(
        self,
        *,
        job_name: str,
        azure_ml_conn_id: str = AzureMLHook.default_conn_name,
        deferrable: bool = DEFAULT_DEFERRABLE,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 30)
        super().__init__(**kwargs)
        self.job_name = job_name
        self.azure_ml_conn_id = azure_ml_conn_id
        self.deferrable = deferrable
        self.cancel_on_kill = cancel_on_kill
        self._last_status: str | None = None

    def execute(self, context: Context) -> Any:
        hook = self.hook
        AzureMLStudioJobLink.persist(context, lambda: hook.studio_url(self.job_name))
        if not self.deferrable:
            super().execute(context)
            return self.job_name
        trigger = AzureMLJobTrigger(job_name=self.job_name, azure_ml_conn_id=self.azure_ml_conn_id,
                                    poll_interval=float(self.poke_interval), timeout=float(self.timeout))
        return self.wait_for(context, trigger, "execute_complete", float(self.timeout))

    def poke(self, context: Context) -> bool:
        hook = self.hook
        job = hook.get_job(self.job_name)
        status = job_status(job)
        if status != self._last_status:
            self.log.info("Azure ML job %s: %s -> %s", self.job_name, self._last_status or "(start)", status)
            self._last_status = status
        if status not in JOB_TERMINAL_STATES:
            return False
        raise_for_event(job_event(hook, job))
        return True

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        self.log.info("%s", event.get("message"))
        return raise_for_event(event)

    def on_kill(self) -> None:
        if self.cancel_on_kill:
            self.log.info("Cancelling Azure ML job %s", self.job_name)
            self.hook.cancel_job(self.job_name)
