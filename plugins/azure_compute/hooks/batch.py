"""Azure Batch hook: the provider's authenticated ``BatchClient`` plus bulk helpers.

The provider's ``AzureBatchHook`` already turns an ``azure_batch`` connection
(shared key or Entra ID) into a ``BatchClient``; this hook adds what operators
running thousands of shards need: size-aware bulk adds that are safe to repeat,
one-call task counts, failed-task details with stderr tails, and an async client
for triggers. Both clients retry throttled writes (``batch_retry``).

State changes (resize, stop-resize, delete, terminate) are sent without the SDK's
``begin_*`` pollers: those start a thread that polls every ``polling_interval``
seconds and report a failed poll as status "Failed" without raising
(``azure/batch/_operations/_polling.py``). Callers wait with a trigger or
``wait_for_pool`` instead, at their own interval, and judge the pool themselves.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from azure.batch import BatchClient, models as batch_models
from azure.batch.models._models import BatchJobTerminateOptions  # not exported by azure-batch 15.1
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from airflow.providers.microsoft.azure.hooks.batch import AzureBatchHook

from azure_compute.batch_progress import JobProgress, PoolReadiness, wire_value
from azure_compute.hooks.batch_retry import AsyncBatchRetryPolicy, BatchRetryPolicy

#: Azure Batch accepts at most 100 tasks and 1 MB per add-collection request.
MAX_TASKS_PER_REQUEST = 100
MAX_REQUEST_BYTES = 1_000_000
#: Keep a margin for the envelope and for the SDK's serialisation differences.
_REQUEST_BYTES_BUDGET = 900_000
_SERVER_ERROR_ATTEMPTS = 3


class BatchTaskAddError(RuntimeError):
    """Some tasks could not be added for a reason a retry will not fix."""


@dataclass
class AddTasksResult:
    """What a bulk add did: new tasks, tasks that already existed, requests made."""

    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    requests: int = 0


@dataclass(frozen=True)
class FailedTask:
    """A completed task whose result is failure, with what a human needs to act."""

    task_id: str
    exit_code: int | None
    failure_code: str | None
    failure_message: str | None
    stderr_tail: str

    def describe(self) -> str:
        parts = [f"task {self.task_id}: exit code {self.exit_code}"]
        if self.failure_code:
            parts.append(f"{self.failure_code}: {self.failure_message or ''}".strip())
        text = "; ".join(parts)
        if self.stderr_tail:
            text += "\n--- stderr (tail) ---\n" + self.stderr_tail.rstrip()
        return text


@dataclass(frozen=True)
class FailedStartTask:
    """A node whose start task failed, with what a human needs to act (often an apt or pip error)."""

    node_id: str
    exit_code: int | None
    failure_code: str | None
    failure_message: str | None
    stderr_tail: str

    def describe(self) -> str:
        text = f"node {self.node_id}: start task exit code {self.exit_code}"
        if self.failure_code:
            text += f"; {self.failure_code}: {self.failure_message or ''}".rstrip()
        if self.stderr_tail:
            text += "\n--- start task stderr (tail) ---\n" + self.stderr_tail.rstrip()
        return text


def _task_size(task: batch_models.BatchTaskCreateOptions) -> int:
    return len(json.dumps(task.as_dict()).encode())


def chunk_tasks(tasks: list[batch_models.BatchTaskCreateOptions]) -> list[list[batch_models.BatchTaskCreateOptions]]:
    """Split tasks into add-collection requests within Azure's count and size limits."""
    chunks: list[list[batch_models.BatchTaskCreateOptions]] = []
    current: list[batch_models.BatchTaskCreateOptions] = []
    current_bytes = 0
    for task in tasks:
        size = _task_size(task)
        if size > _REQUEST_BYTES_BUDGET:
            raise BatchTaskAddError(f"task {task.id} is {size} bytes; Azure Batch accepts at most 1 MB per request")
        if current and (len(current) == MAX_TASKS_PER_REQUEST or current_bytes + size > _REQUEST_BYTES_BUDGET):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(task)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks


class BatchHook(AzureBatchHook):
    """Interact with Azure Batch through the provider's ``azure_batch`` connection.

    :param azure_batch_conn_id: Airflow connection of type ``azure_batch``: login is
        the account name, password the account key (or no key for Entra ID), and
        ``extra.account_url`` the account endpoint.
    """

    @property
    def client(self) -> BatchClient:
        return self.connection

    def get_conn(self) -> BatchClient:
        """The provider's client, with a retry policy that also retries throttled POSTs."""
        account_url, credential, identity = self._account(self.get_connection(self.conn_id))
        if credential is None:
            from airflow.providers.microsoft.azure.utils import get_sync_default_azure_credential

            credential = get_sync_default_azure_credential(**identity)
        return BatchClient(endpoint=account_url, credential=credential, retry_policy=BatchRetryPolicy())

    def _account(self, conn: Any) -> tuple[str, Any, dict[str, Any]]:
        """The connection's account URL, its shared key (None: Entra ID) and the identity options for Entra ID."""
        extras = conn.extra_dejson
        account_url = self._get_field(extras, "account_url")
        if not account_url:
            raise ValueError(f"connection {self.conn_id!r} has no extra 'account_url'")
        key = AzureNamedKeyCredential(conn.login, conn.password) if conn.login and conn.password else None
        identity = {name: extras.get(name) for name in ("managed_identity_client_id", "workload_identity_tenant_id")}
        return account_url, key, identity

    def account_portal_url(self) -> str:
        """The Batch account's page in the Azure portal, from the connection's extras (for links)."""
        from azure_compute.links.batch import batch_account_portal_url

        extras = self.get_connection(self.conn_id).extra_dejson
        return batch_account_portal_url(
            extras.get("account_url", ""), extras.get("subscription_id"), extras.get("resource_group")
        )

    # -- pools -------------------------------------------------------------
    def create_pool(self, options: batch_models.BatchPoolCreateOptions) -> None:
        self.client.create_pool(options)

    def enable_auto_scale(self, pool_id: str, formula: str, evaluation_interval: Any) -> None:
        self.client.enable_pool_auto_scale(
            pool_id,
            batch_models.BatchPoolEnableAutoScaleOptions(
                auto_scale_formula=formula, auto_scale_evaluation_interval=evaluation_interval,
            ),
        )

    def pool_readiness(self, pool_id: str) -> PoolReadiness:
        """The pool's allocation state, node states and resize errors (a GET and a node listing)."""
        pool = self.client.get_pool(pool_id)
        states = [node.state for node in self.client.list_nodes(pool_id, select=["id", "state"])]
        errors = [f"{e.code}: {e.message}" for e in (pool.resize_errors or [])]
        return PoolReadiness.from_pool(pool.allocation_state, states, errors)

    def pool_nodes(self, pool_id: str) -> list[batch_models.BatchNode]:
        """The pool's nodes now, with ``id``, ``is_dedicated``, ``allocation_time`` and ``state`` (for cost records)."""
        return list(self.client.list_nodes(pool_id, select=["id", "isDedicated", "allocationTime", "state"]))

    def get_pool(self, pool_id: str) -> batch_models.BatchPool | None:
        """The pool, or None when it does not exist (``pool_exists`` raises on a missing pool)."""
        try:
            return self.client.get_pool(pool_id)
        except ResourceNotFoundError:
            return None

    def request_resize(self, pool_id: str, dedicated: int = 0, low_priority: int = 0) -> str:
        """Ask for new node targets without waiting; returns what was done.

        ``"resizing"``: the resize was sent. ``"stopping"``: the pool was still resizing, so a
        stop-resize was sent instead (Azure resizes only a steady pool: Pool_Resize); call again once
        the pool is steady. ``"missing"``: there is no such pool. An autoscaled pool gets autoscale
        disabled first.
        """
        pool = self.get_pool(pool_id)
        if pool is None:
            return "missing"
        if pool.enable_auto_scale:
            self.client.disable_pool_auto_scale(pool_id)
        state = wire_value(pool.allocation_state)
        if state == "resizing":
            self.client._stop_pool_resize_internal(pool_id)  # noqa: SLF001 - no poller thread (see module doc)
            return "stopping"
        if state == "stopping":
            return "stopping"
        self.client._resize_pool_internal(  # noqa: SLF001
            pool_id,
            batch_models.BatchPoolResizeOptions(target_dedicated_nodes=dedicated, target_low_priority_nodes=low_priority),
        )
        return "resizing"

    def request_delete_pool(self, pool_id: str) -> bool:
        """Ask Azure to delete the pool, without waiting; False when it was already gone."""
        try:
            self.client._delete_pool_internal(pool_id)  # noqa: SLF001 - no poller thread (see module doc)
        except ResourceNotFoundError:
            return False
        return True

    def wait_for_pool(self, pool_id: str, settled, poll_interval: float, timeout: float):
        """GET the pool every ``poll_interval`` s until ``settled(pool or None)`` is true; returns that pool.

        For the few waits done in a worker; long waits belong in a trigger.
        """
        deadline = time.monotonic() + timeout
        while True:
            pool = self.get_pool(pool_id)
            if settled(pool):
                return pool
            if time.monotonic() >= deadline:
                raise TimeoutError(f"pool {pool_id} did not settle within {timeout:.0f}s")
            time.sleep(poll_interval)

    # -- jobs --------------------------------------------------------------
    def get_job(self, job_id: str) -> batch_models.BatchJob | None:
        try:
            return self.client.get_job(job_id)
        except ResourceNotFoundError:
            return None

    def create_job(self, options: batch_models.BatchJobCreateOptions) -> None:
        self.client.create_job(options)

    def terminate_job_when_tasks_complete(self, job_id: str) -> None:
        """Switch the job to ``onAllTasksComplete=terminatejob`` (once every task is in)."""
        self.client.update_job(job_id, batch_models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))

    def job_progress(self, job_id: str, expected_tasks: int) -> JobProgress:
        """Task counts, plus the job's state when tasks remain and none runs.

        A terminated job (by hand, or past its ``maxWallClockTime``) ends its running tasks and leaves
        the unstarted ones active for ever (``Job_Terminate``), so only a poll that sees nothing
        running needs the job's state: one request per poll while tasks run, two while none does.
        """
        counts = self.task_counts(job_id)
        progress = JobProgress.from_counts(counts)
        if progress.needs_job_state(expected_tasks):
            job = self.client.get_job(job_id, select=["id", "state", "executionInfo"])
            progress = JobProgress.from_counts(counts, job)
        return progress

    def terminate_job(self, job_id: str, reason: str) -> bool:
        """Terminate an active job; False when it is missing or already completed."""
        job = self.get_job(job_id)
        if job is None or wire_value(job.state) in ("completed", "terminating", "deleting"):
            return False
        self.client._terminate_job_internal(  # noqa: SLF001 - no poller thread (see module doc)
            job_id, options=BatchJobTerminateOptions(termination_reason=reason)
        )
        return True

    def delete_job(self, job_id: str) -> bool:
        try:
            self.client._delete_job_internal(job_id)  # noqa: SLF001 - no poller thread (see module doc)
        except ResourceNotFoundError:
            return False
        return True

    def active_jobs_on_pool(self, pool_id: str, exclude: str | None = None) -> list[str]:
        """Ids of active jobs that run on ``pool_id`` (other than ``exclude``)."""
        return [
            job.id
            for job in self.client.list_jobs(filter="state eq 'active'", select=["id", "poolInfo"])
            if job.pool_info and (job.pool_info.pool_id or "").lower() == pool_id.lower()
            and job.id.lower() != (exclude or "").lower()  # ids are case-insensitive
        ]

    # -- tasks -------------------------------------------------------------
    def add_tasks(self, job_id: str, tasks: list[batch_models.BatchTaskCreateOptions]) -> AddTasksResult:
        """Add tasks in as few add-collection requests as Azure allows; safe to repeat.

        A task that already exists (``TaskExists``, from an earlier attempt of the
        same Airflow task) counts as done, so a retry adds only what is missing.
        Server errors for single tasks are retried; any other refusal raises with
        every refused task id and Azure's reason.
        """
        result = AddTasksResult()
        pending = list(tasks)
        for _attempt in range(_SERVER_ERROR_ATTEMPTS):
            retry: list[batch_models.BatchTaskCreateOptions] = []
            refused: list[str] = []
            by_id = {task.id: task for task in pending}
            for chunk in chunk_tasks(pending):
                response = self.client.create_task_collection(
                    job_id, batch_models.BatchTaskGroup(task_values=chunk)
                )
                result.requests += 1
                for item in response.result_values or []:
                    # Real Batch writes "Success", which azure-batch 15.1 leaves a plain string.
                    status = wire_value(item.status)
                    code = item.error.code if item.error else None
                    if status == "success":
                        result.added.append(item.task_id)
                    elif code == "TaskExists":
                        result.existing.append(item.task_id)
                    elif status == "servererror":
                        retry.append(by_id[item.task_id])
                    else:
                        message = item.error.message.value if item.error and item.error.message else ""
                        refused.append(f"{item.task_id}: {code} {message}".strip())
            if refused:
                raise BatchTaskAddError(f"Azure Batch refused {len(refused)} task(s) of job {job_id}: " + "; ".join(refused))
            if not retry:
                return result
            pending = retry
        raise BatchTaskAddError(
            f"Azure Batch kept answering server errors for {len(pending)} task(s) of job {job_id}: "
            + ", ".join(task.id for task in pending[:20])
        )

    def task_counts(self, job_id: str) -> batch_models.BatchTaskCounts:
        """Task counts of a job in one request (never lists the tasks)."""
        return self.client.get_job_task_counts(job_id).task_counts

    def job_tasks(self, job_id: str) -> list[batch_models.BatchTask]:
        """Every task of the job with ``id``, ``execution_info``, ``node_info`` and ``state`` (for shard records)."""
        return list(self.client.list_tasks(job_id, select=["id", "executionInfo", "nodeInfo", "state"]))

    def failed_tasks(self, job_id: str, limit: int = 20, stderr_bytes: int = 2000) -> list[FailedTask]:
        """Completed tasks whose result is failure, with exit codes and stderr tails.

        Called once, when a wait ends with failures; it lists only completed tasks.
        """
        failed: list[FailedTask] = []
        for task in self.client.list_tasks(job_id, filter="state eq 'completed'", select=["id", "executionInfo"]):
            info = task.execution_info
            if info is None or wire_value(info.result) != "failure":
                continue
            failure = info.failure_info
            failed.append(
                FailedTask(
                    task_id=task.id,
                    exit_code=info.exit_code,
                    failure_code=failure.code if failure else None,
                    failure_message=failure.message if failure else None,
                    stderr_tail=self.stderr_tail(job_id, task.id, stderr_bytes) if len(failed) < limit else "",
                )
            )
        return failed

    def unfinished_tasks(self, job_id: str) -> list[str]:
        """Ids of the tasks that are not completed: after a terminate they never ran (or never finished)."""
        return sorted(task.id for task in self.client.list_tasks(job_id, filter="state ne 'completed'", select=["id"]))

    def stderr_tail(self, job_id: str, task_id: str, max_bytes: int = 2000) -> str:
        """The last bytes of a task's stderr.txt, or '' when the node no longer has it."""
        try:
            data = b"".join(self.client.download_task_file(job_id, task_id, "stderr.txt"))
        except HttpResponseError:
            return ""
        return data[-max_bytes:].decode("utf-8", errors="replace")

    def start_task_failures(self, pool_id: str, limit: int = 5, stderr_bytes: int = 2000) -> list[FailedStartTask]:
        """Nodes whose start task failed, each with its exit code, failure and stderr tail.

        The stderr is the node file ``startup/stderr.txt`` (the start task's folder on a node,
        files-and-directories.md), read with the node files API.
        """
        failed: list[FailedStartTask] = []
        for node in self.client.list_nodes(pool_id, filter="state eq 'starttaskfailed'", select=["id", "startTaskInfo"]):
            if len(failed) >= limit:
                break
            info = node.start_task_info
            failure = info.failure_info if info else None
            failed.append(FailedStartTask(
                node_id=node.id,
                exit_code=info.exit_code if info else None,
                failure_code=failure.code if failure else None,
                failure_message=failure.message if failure else None,
                stderr_tail=self.node_file_tail(pool_id, node.id, "startup/stderr.txt", stderr_bytes),
            ))
        return failed

    def node_file_tail(self, pool_id: str, node_id: str, path: str, max_bytes: int = 2000) -> str:
        """The last bytes of a file on a node, or '' when the node does not have it (any more)."""
        try:
            data = b"".join(self.client.download_node_file(pool_id, node_id, path))
        except HttpResponseError:
            return ""
        return data[-max_bytes:].decode("utf-8", errors="replace")

    # -- async -------------------------------------------------------------
    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[Any]:
        """An ``azure.batch.aio.BatchClient`` for triggers, from the same connection.

        Closing the client does not close an Entra ID credential (it holds its own HTTP session),
        so both are closed here when the block ends.
        """
        from azure.batch.aio import BatchClient as AsyncBatchClient

        from airflow.providers.common.compat.connection import get_async_connection

        account_url, credential, identity = self._account(await get_async_connection(self.conn_id, hook=self))
        if credential is None:
            from airflow.providers.microsoft.azure.utils import get_async_default_azure_credential

            credential = get_async_default_azure_credential(**identity)  # the sync path's rules, async
        client = AsyncBatchClient(endpoint=account_url, credential=credential, retry_policy=AsyncBatchRetryPolicy())
        try:
            yield client
        finally:
            await client.close()
            close = getattr(credential, "close", None)
            if close is not None:
                await close()
