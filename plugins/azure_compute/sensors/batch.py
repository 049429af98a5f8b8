"""Wait for every task of an Azure Batch job, deferrable by default.

Checks once before deferring (a finished job needs no trigger), then waits in
the triggerer with one task-counts request per poll (and a GET of the job while
tasks remain). The job is done when every task completed or when the job itself
completed: a terminated job (by hand, ``on_kill``, or its ``maxWallClockTime``)
leaves its unstarted tasks ``active`` for ever, and those count as failed. Then
the error threshold decides: within it, the failed and never-completed task ids
go to XCom so the merge can write ``error`` rows for their images; beyond it, the
task fails naming them (failed ones with exit code and stderr tail in the log).

Poke mode is Airflow's own sensor loop around ``poke``; deferred mode checks once with the
trigger's ``poll_once`` and defers (``operators/base.py``). Both judge in ``execute_complete``'s helpers.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from azure_compute.batch_progress import ErrorThreshold, JobProgress
from azure_compute.hooks.batch import BatchHook
from azure_compute.links.batch import AzureBatchJobLink
from azure_compute.operators.base import DEFAULT_DEFERRABLE, DEFER_MARGIN_BATCH_SENSOR
from azure_compute.operators.batch import AzureBatchBase
from azure_compute.triggers.base import SUCCESS
from azure_compute.triggers.batch import AzureBatchJobTrigger, AzureBatchPoolNodesTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class AzureBatchJobFailedError(AirflowFailException):
    """More tasks failed than the error threshold allows.

    Fails the sensor without Airflow retries: the job has finished, and waiting
    on it again would only reach the same verdict after the retry delays.
    """


class AzureBatchBaseSensor(AzureBatchBase, BaseSensorOperator):
    """A Batch sensor (the operators' hook and wait, with the sensors' defer margin)."""

    defer_margin = DEFER_MARGIN_BATCH_SENSOR


class AzureBatchJobSensor(AzureBatchBaseSensor):
    """Wait until all tasks of a Batch job completed, then judge failures.

    :param job_id: The job (templated).
    :param expected_tasks: How many tasks the job must hold when done (templated;
        usually the add operator's ``task_count``). Guards against calling a job
        done before all its tasks were added.
    :param error_threshold: Failed tasks allowed: ``0`` (default), a count, ``-1``
        for any, or a share like ``"5%"``.
    :param poke_interval: Seconds between polls.
    :param timeout: Seconds to wait in all before failing.
    :param deferrable: Wait in the triggerer, holding no worker slot.
    :param azure_batch_conn_id: The ``azure_batch`` connection.
    """

    template_fields: Sequence[str] = ("job_id", "expected_tasks", "error_threshold")
    operator_extra_links = (AzureBatchJobLink(),)
    ui_color = "#e6f1fb"

    def __init__(
        self,
        *,
        job_id: str,
        expected_tasks: int | str,
        error_threshold: int | str = 0,
        deferrable: bool = DEFAULT_DEFERRABLE,
        azure_batch_conn_id: str = BatchHook.default_conn_name,
        poke_interval: float = 30,
        timeout: float = 12 * 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.job_id = job_id
        self.expected_tasks = expected_tasks
        self.error_threshold = error_threshold
        self.deferrable = deferrable
        self.azure_batch_conn_id = azure_batch_conn_id
        self._started = time.time()
        self._done_at_start: int | None = None

    def _expected(self) -> int:
        try:
            expected = int(self.expected_tasks)
        except (TypeError, ValueError):
            raise ValueError(f"expected_tasks {self.expected_tasks!r} is not a whole number") from None
        if expected < 0:
            raise ValueError(f"expected_tasks must be >= 0, got {expected}")
        return expected

    def execute(self, context: Context) -> Any:
        ErrorThreshold(str(self.error_threshold))  # a bad value fails before any wait
        self._started = time.time()
        self.persist_job_link(context, self.job_id)
        if not self.deferrable:
            return super().execute(context)
        trigger = AzureBatchJobTrigger(
            job_id=self.job_id, expected_tasks=self._expected(),
            azure_batch_conn_id=self.azure_batch_conn_id, poll_interval=self.poke_interval,
            end_time=time.time() + float(self.timeout), started_at=self._started,
        )
        return self.wait_for(context, trigger, "execute_complete", float(self.timeout))

    def poke(self, context: Context) -> PokeReturnValue:
        expected = self._expected()
        progress = self.hook.job_progress(self.job_id, expected)
        if self._done_at_start is None:
            self._done_at_start = progress.completed  # the rate counts only what finishes while we watch
        self.log.info("job %s: %s", self.job_id,
                      progress.describe(expected, time.time() - self._started, self._done_at_start))
        if not progress.is_done(expected):
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._judge(progress))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status not in (SUCCESS, "done"):  # "done": the event of a trigger deferred before this version
            raise RuntimeError(f"waiting for job {self.job_id} ended with {status}: {event.get('message')}")
        return self._judge(JobProgress.from_counts(event["counts"]))

    def _judge(self, progress: JobProgress) -> dict[str, Any]:
        """Apply the error threshold to failed and never-completed tasks; name them when it is exceeded."""
        expected = self._expected()
        if progress.job_completed and not progress.counts_done(expected):
            # The job ended early: read the final counts (tasks that were running are completed now).
            fresh = JobProgress.from_counts(self.hook.task_counts(self.job_id))
            progress = JobProgress(fresh.active, fresh.running, fresh.succeeded, fresh.failed,
                                   job_completed=True, terminate_reason=progress.terminate_reason)
        missing = max(0, expected - progress.total)
        if missing:
            raise AzureBatchJobFailedError(
                f"job {self.job_id} completed ({progress.terminate_reason}) holding {progress.total} of its "
                f"{expected} tasks; {missing} were never added")
        failed_tasks = self.hook.failed_tasks(self.job_id) if progress.failed else []
        for failed in failed_tasks:
            self.log.warning("%s", failed.describe())
        unfinished = self.hook.unfinished_tasks(self.job_id) if progress.unfinished else []
        why = f"did not complete: job {self.job_id} ended ({progress.terminate_reason or 'no reason given'}) first"
        if unfinished:
            self.log.warning("job %s completed (%s) before %d task(s) ran to the end: %s", self.job_id,
                             progress.terminate_reason, len(unfinished), ", ".join(unfinished[:50]))
        result = {
            "job_id": self.job_id,
            "counts": progress.as_dict(),
            "failed_tasks": {
                **{f.task_id: f"exit code {f.exit_code}: {(f.stderr_tail or f.failure_message or '').strip()[-500:]}"
                   for f in failed_tasks},
                **{task_id: why for task_id in unfinished},
            },
            "unfinished_tasks": unfinished,
        }
        bad = progress.failed + len(unfinished)
        threshold = ErrorThreshold(str(self.error_threshold))
        if threshold.exceeded(bad, progress.total):
            summary = "; ".join([f"{f.task_id} (exit code {f.exit_code})" for f in failed_tasks[:20]]
                                + [f"{task_id} (never completed)" for task_id in unfinished[:20]])
            counted = (f"{progress.failed} failed and {len(unfinished)} never completed (the job ended: "
                       f"{progress.terminate_reason}) of {progress.total} tasks" if unfinished
                       else f"{progress.failed} of {progress.total} tasks failed")
            raise AzureBatchJobFailedError(
                f"job {self.job_id}: {counted}, more than the error threshold {self.error_threshold!r} allows: {summary}"
            )
        if unfinished:
            self.log.warning("job %s: %d failed and %d never-completed task(s) within the error threshold %r",
                             self.job_id, progress.failed, len(unfinished), self.error_threshold)
        elif bad:
            self.log.warning("job %s: %d failed task(s) within the error threshold %r",
                             self.job_id, progress.failed, self.error_threshold)
        return result

    def on_kill(self) -> None:
        self.hook.terminate_job(self.job_id, "Airflow task killed")


class AzureBatchPoolReadySensor(AzureBatchBaseSensor):
    """Wait until a pool has ``min_ready_nodes`` nodes idle or running (deferrable).

    Fails early, naming the cause, when the pool settles with only
    ``starttaskfailed``/``unusable`` nodes or with resize errors (no spot
    capacity, no GPU quota), instead of waiting for the timeout.

    :param pool_id: The pool (templated).
    :param min_ready_nodes: Ready nodes needed.
    :param poke_interval: Seconds between polls.
    :param timeout: Seconds to wait before failing.
    :param deferrable: Wait in the triggerer, holding no worker slot.
    :param azure_batch_conn_id: The ``azure_batch`` connection.
    """

    template_fields: Sequence[str] = ("pool_id",)
    ui_color = "#e6f1fb"

    def __init__(
        self,
        *,
        pool_id: str,
        min_ready_nodes: int = 1,
        deferrable: bool = DEFAULT_DEFERRABLE,
        azure_batch_conn_id: str = BatchHook.default_conn_name,
        poke_interval: float = 30,
        timeout: float = 30 * 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.pool_id = pool_id
        self.min_ready_nodes = min_ready_nodes
        self.deferrable = deferrable
        self.azure_batch_conn_id = azure_batch_conn_id

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        trigger = AzureBatchPoolNodesTrigger(
            pool_id=self.pool_id, min_ready_nodes=self.min_ready_nodes,
            azure_batch_conn_id=self.azure_batch_conn_id, poll_interval=self.poke_interval,
            end_time=time.time() + float(self.timeout),
        )
        return self.wait_for(context, trigger, "execute_complete", float(self.timeout))

    def poke(self, context: Context) -> bool:
        readiness = self.hook.pool_readiness(self.pool_id)
        self.log.info("pool %s: %s", self.pool_id, readiness.describe())
        verdict = readiness.verdict(self.min_ready_nodes)
        if verdict == "failed":
            raise RuntimeError(f"pool {self.pool_id} cannot run tasks: {readiness.describe()}{self._start_task_report()}")
        return verdict == "ready"

    def _start_task_report(self) -> str:
        """Each failed start task's exit code and stderr tail, logged and returned for the error."""
        failures = self.hook.start_task_failures(self.pool_id)
        for failure in failures:
            self.log.error("%s", failure.describe())
        return "".join(f"\n{failure.describe()}" for failure in failures)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        if event.get("status") != SUCCESS:
            raise RuntimeError(f"pool {self.pool_id}: {event.get('message')}{self._start_task_report()}")
        self.log.info("pool %s ready: %s", self.pool_id, event.get("message"))
        return self.pool_id
