"""Azure Batch operators: ensure a pool, create a job, add tasks in bulk, tear down.

Each operator does one thing and is safe to retry: a retried Airflow task finds
the pool, job or tasks its earlier attempt created and carries on from there.
Waiting happens in ``azure_compute.sensors.batch`` (deferrable); the hook, its connection and
the check-once-then-defer wait come from ``operators/base.py``, every SDK call from the hook.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azure.batch import models as batch_models
from azure.core.exceptions import ResourceNotFoundError

from airflow.sdk import BaseOperator

from azure_compute.batch_progress import wire_value
from azure_compute.hooks.batch import BatchHook
from azure_compute.hooks.blob import READ_PERMISSIONS, WRITE_PERMISSIONS, BlobSasHook
from azure_compute.links.batch import AzureBatchJobLink, AzureBatchPoolLink
from azure_compute.operators.base import DEFAULT_DEFERRABLE, AzureComputeBase
from azure_compute.triggers.batch import AzureBatchPoolNodesTrigger, AzureBatchPoolSettledTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Azure Batch ids: letters, digits, hyphens and underscores, at most 64 characters.
BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

UBUNTU_2204 = {
    "publisher": "microsoft-dsvm",
    "offer": "ubuntu-hpc",
    "sku": "2204",
    "version": "latest",
    "node_agent_sku_id": "batch.node.ubuntu 22.04",
}


def check_batch_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not BATCH_ID.match(value):
        raise ValueError(f"{kind} {value!r} is not a valid Azure Batch id (1-64 of A-Z a-z 0-9 _ -)")
    return value


class AzureBatchBase(AzureComputeBase[BatchHook]):
    """A Batch operator or sensor: ``self.hook`` is a ``BatchHook`` for ``azure_batch_conn_id``."""

    hook_class = BatchHook
    conn_id_field = "azure_batch_conn_id"
    azure_batch_conn_id: str

    def persist_pool_link(self, context: Context, pool_id: str) -> None:
        AzureBatchPoolLink.persist(context, lambda: AzureBatchPoolLink.url(self.hook.account_portal_url(), pool_id))

    def persist_job_link(self, context: Context, job_id: str) -> None:
        AzureBatchJobLink.persist(context, lambda: AzureBatchJobLink.url(self.hook.account_portal_url(), job_id))


class AzureBatchBaseOperator(AzureBatchBase, BaseOperator):
    """A Batch operator."""


class AzureBatchEnsurePoolOperator(AzureBatchBaseOperator):
    """Create a Batch pool if it is missing, reuse it when compatible, and wait for nodes.

    An existing pool is reused only when its VM size and image match; otherwise
    the task fails naming both sides, since tasks built for a GPU image would
    fail on another one. A reused pool that was shrunk to zero (by our teardown)
    is scaled back to the requested targets.

    :param pool_id: Pool id (templated).
    :param vm_size: VM size, e.g. ``Standard_NC4as_T4_v3`` for one T4 GPU.
    :param image: Marketplace image: ``publisher``, ``offer``, ``sku``, ``version``
        and ``node_agent_sku_id``. Defaults to Ubuntu 22.04 HPC (GPU drivers included).
    :param target_dedicated_nodes: Dedicated nodes wanted.
    :param target_low_priority_nodes: Spot (low-priority) nodes wanted: cheap, may be evicted;
        Batch requeues the evicted tasks.
    :param auto_scale_formula: An autoscale formula instead of fixed targets.
    :param auto_scale_evaluation_interval: How often Azure evaluates the formula.
    :param task_slots_per_node: Tasks that may run at once on one node.
    :param container_image: A prebuilt image holding Python, ultralytics and the
        scoring code: nodes prefetch it (``containerConfiguration``), tasks run in it.
    :param container_registry_conn_id: An Airflow connection holding the image's
        registry login (host = registry server, login, password); sent to Batch
        as the pool's ``containerRegistries``, never logged.
        (A managed identity's ``identityReference`` needs the identity assigned to the
        pool, which only the Batch management API can do; pools made here cannot.)
    :param start_task_command: A start task command line (e.g. the venv recipe
        of ``include.monthly.runtime``). Runs elevated only when
        ``start_task_elevated`` is true.
    :param start_task_elevated: Run the start task as pool admin (needed for apt).
    :param wait_for_nodes: Wait until ``min_ready_nodes`` nodes are idle or running.
    :param min_ready_nodes: Nodes that must be ready before the task succeeds.
    :param node_wait_timeout: Seconds to wait for nodes before failing.
    :param poll_interval: Seconds between polls while waiting.
    :param deferrable: Wait in the triggerer instead of holding a worker slot.
    :param azure_batch_conn_id: The ``azure_batch`` connection.
    """

    template_fields: Sequence[str] = (
        "pool_id", "vm_size", "target_dedicated_nodes", "target_low_priority_nodes",
        "auto_scale_formula", "container_image", "start_task_command",
    )
    operator_extra_links = (AzureBatchPoolLink(),)
    ui_color = "#e6f1fb"

    def __init__(
        self,
        *,
        pool_id: str,
        vm_size: str,
        image: dict[str, str] | None = None,
        target_dedicated_nodes: int = 0,
        target_low_priority_nodes: int = 0,
        auto_scale_formula: str | None = None,
        auto_scale_evaluation_interval: timedelta = timedelta(minutes=5),
        task_slots_per_node: int = 1,
        container_image: str | None = None,
        container_registry_conn_id: str | None = None,
        start_task_command: str | None = None,
        start_task_elevated: bool = False,
        wait_for_nodes: bool = True,
        min_ready_nodes: int = 1,
        node_wait_timeout: float = 30 * 60,
        poll_interval: float = 30,
        deferrable: bool = DEFAULT_DEFERRABLE,
        azure_batch_conn_id: str = BatchHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_id = pool_id
        self.vm_size = vm_size
        self.image = {**UBUNTU_2204, **(image or {})}
        self.target_dedicated_nodes = target_dedicated_nodes
        self.target_low_priority_nodes = target_low_priority_nodes
        self.auto_scale_formula = auto_scale_formula
        self.auto_scale_evaluation_interval = auto_scale_evaluation_interval
        self.task_slots_per_node = task_slots_per_node
        self.container_image = container_image
        self.container_registry_conn_id = container_registry_conn_id
        self.start_task_command = start_task_command
        self.start_task_elevated = start_task_elevated
        self.wait_for_nodes = wait_for_nodes
        self.min_ready_nodes = min_ready_nodes
        self.node_wait_timeout = node_wait_timeout
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.azure_batch_conn_id = azure_batch_conn_id

    def _validate(self) -> None:
        check_batch_id("pool_id", self.pool_id)
        dedicated, spot = int(self.target_dedicated_nodes), int(self.target_low_priority_nodes)
        if dedicated < 0 or spot < 0:
            raise ValueError(f"node targets must be >= 0, got dedicated={dedicated} spot={spot}")
        if not self.auto_scale_formula and dedicated + spot == 0 and self.wait_for_nodes:
            raise ValueError(f"pool {self.pool_id}: no nodes requested (dedicated=0, spot=0) but wait_for_nodes is on")
        if int(self.task_slots_per_node) < 1:
            raise ValueError(f"task_slots_per_node must be >= 1, got {self.task_slots_per_node}")

    def _pool_options(self) -> batch_models.BatchPoolCreateOptions:
        vm_config = batch_models.VirtualMachineConfiguration(
            image_reference=batch_models.BatchVmImageReference(
                publisher=self.image["publisher"], offer=self.image["offer"],
                sku=self.image["sku"], version=self.image.get("version", "latest"),
            ),
            node_agent_sku_id=self.image["node_agent_sku_id"],
        )
        if self.container_image:
            vm_config.container_configuration = batch_models.BatchContainerConfiguration(
                type="dockerCompatible", container_image_names=[self.container_image],
                container_registries=self._container_registries(),
            )
        start_task = None
        if self.start_task_command:
            start_task = batch_models.BatchStartTask(
                command_line=self.start_task_command,
                wait_for_success=True,
                max_task_retry_count=1,
                user_identity=batch_models.UserIdentity(
                    auto_user=batch_models.AutoUserSpecification(
                        scope="pool", elevation_level="admin" if self.start_task_elevated else "nonadmin"
                    )
                ),
            )
        options = batch_models.BatchPoolCreateOptions(
            id=self.pool_id,
            vm_size=self.vm_size,
            virtual_machine_configuration=vm_config,
            task_slots_per_node=int(self.task_slots_per_node),
            start_task=start_task,
            metadata=[batch_models.BatchMetadataItem(name="created-by", value="airflow")],
        )
        if self.auto_scale_formula:
            options.enable_auto_scale = True
            options.auto_scale_formula = self.auto_scale_formula
            options.auto_scale_evaluation_interval = self.auto_scale_evaluation_interval
        else:
            options.target_dedicated_nodes = int(self.target_dedicated_nodes)
            options.target_low_priority_nodes = int(self.target_low_priority_nodes)
        return options

    def _container_registries(self) -> list[batch_models.ContainerRegistryReference] | None:
        """The login for the image's registry, from a connection (None: a public image)."""
        if self.container_registry_conn_id:
            conn = self.hook.get_connection(self.container_registry_conn_id)
            if not (conn.host and conn.login and conn.password):
                raise ValueError(f"connection {self.container_registry_conn_id!r} needs host (the registry server), "
                                 "login and password")
            return [batch_models.ContainerRegistryReference(
                registry_server=conn.host, username=conn.login, password=conn.password)]
        return None

    def _incompatibilities(self, pool: batch_models.BatchPool) -> list[str]:
        problems = []
        if (pool.vm_size or "").lower() != self.vm_size.lower():
            problems.append(f"vm_size is {pool.vm_size}, wanted {self.vm_size}")
        ref = pool.virtual_machine_configuration.image_reference if pool.virtual_machine_configuration else None
        for key in ("publisher", "offer", "sku"):
            have = (getattr(ref, key, None) or "").lower()
            if have != self.image[key].lower():
                problems.append(f"image {key} is {have or 'unset'}, wanted {self.image[key]}")
        container = pool.virtual_machine_configuration.container_configuration if pool.virtual_machine_configuration else None
        names = list((container.container_image_names if container else None) or [])
        if self.container_image and self.container_image not in names:
            problems.append(f"container images are {names or 'none'}, wanted {self.container_image}")
        if not self.container_image and names:
            problems.append(f"the pool runs containers ({', '.join(names)}), wanted none")
        if (pool.start_task.command_line if pool.start_task else None) != self.start_task_command:
            problems.append("its start task differs (another scoring runtime)")
        return problems

    def execute(self, context: Context) -> str:
        self._validate()
        self.persist_pool_link(context, self.pool_id)
        pool = self.hook.get_pool(self.pool_id)
        if pool is None:
            self.log.info("creating pool %s (%s)", self.pool_id, self.vm_size)
            try:
                self.hook.create_pool(self._pool_options())
            except Exception as err:
                if getattr(getattr(err, "error", None), "code", None) != "PoolExists":
                    raise
                pool = self.hook.get_pool(self.pool_id)  # created concurrently by another run
        if pool is not None:
            problems = self._incompatibilities(pool)
            if problems:
                raise ValueError(f"pool {self.pool_id} exists but cannot be reused: " + "; ".join(problems)
                                 + ". Use another pool_id or delete the pool.")
            if self._scale_up_if_needed(pool) == "stopping":
                # Azure resizes only a steady pool (Pool_Resize): wait for the stop, then resize.
                self.log.info("pool %s is still resizing; stopped that resize, waiting for it to settle", self.pool_id)
                return self._wait_steady(context)
        return self._after_scaling(context)

    def _wait_steady(self, context: Context) -> str:
        trigger = AzureBatchPoolSettledTrigger(
            pool_id=self.pool_id, want="steady", azure_batch_conn_id=self.azure_batch_conn_id,
            poll_interval=self.poll_interval, end_time=time.time() + self.node_wait_timeout,
        )
        return self.wait_for(context, trigger, "resume_after_steady", self.node_wait_timeout)

    def resume_after_steady(self, context: Context, event: dict[str, Any]) -> str:
        """The reused pool settled: resize it to the wanted targets (it may have vanished meanwhile)."""
        if event.get("status") != "success":
            raise RuntimeError(f"pool {self.pool_id}: {event.get('message')}")
        if event.get("gone"):
            raise RuntimeError(f"pool {self.pool_id} was deleted while this task waited for it; run the task again")
        pool = self.hook.get_pool(self.pool_id)
        if pool is None or self._scale_up_if_needed(pool) == "stopping":
            raise RuntimeError(f"pool {self.pool_id} kept resizing; try again when it is steady")
        return self._after_scaling(context)

    def _after_scaling(self, context: Context) -> str:
        if not self.wait_for_nodes:
            return self.pool_id
        return self._wait(context)

    def _scale_up_if_needed(self, pool: batch_models.BatchPool) -> str:
        """Point the reused pool at the wanted size; ``"stopping"`` when it must settle first."""
        if self.auto_scale_formula:
            if not pool.enable_auto_scale or pool.auto_scale_formula != self.auto_scale_formula:
                self.log.info("pool %s: enabling autoscale formula", self.pool_id)
                self.hook.enable_auto_scale(self.pool_id, self.auto_scale_formula, self.auto_scale_evaluation_interval)
            return "autoscale"
        wanted = (int(self.target_dedicated_nodes), int(self.target_low_priority_nodes))
        settling = wire_value(pool.allocation_state) != "steady"
        if settling or pool.enable_auto_scale or (pool.target_dedicated_nodes or 0, pool.target_low_priority_nodes or 0) != wanted:
            self.log.info("pool %s exists; resizing to dedicated=%d spot=%d", self.pool_id, *wanted)
            return self.hook.request_resize(self.pool_id, *wanted)
        self.log.info("pool %s exists and is compatible; reusing it", self.pool_id)
        return "reused"

    def _wait(self, context: Context) -> str:
        trigger = AzureBatchPoolNodesTrigger(
            pool_id=self.pool_id, min_ready_nodes=int(self.min_ready_nodes),
            azure_batch_conn_id=self.azure_batch_conn_id, poll_interval=self.poll_interval,
            end_time=time.time() + self.node_wait_timeout,
        )
        return self.wait_for(context, trigger, "execute_complete", self.node_wait_timeout)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        if event.get("status") != "success":
            raise RuntimeError(f"pool {self.pool_id}: {event.get('message')}")
        self.log.info("pool %s ready: %s", self.pool_id, event.get("message"))
        return self.pool_id


class AzureBatchCreateJobOperator(AzureBatchBaseOperator):
    """Create a Batch job with a deterministic id, or re-attach to it on retry.

    The id comes from the DAG, the month and the run (see the DAG), so a retried
    Airflow task finds the job its first attempt created instead of making a
    second one. The job is created with ``onAllTasksComplete=noaction``; the add
    tasks operator switches it to ``terminatejob`` once every task is in.

    :param job_id: Job id (templated), 1-64 of ``A-Z a-z 0-9 _ -``.
    :param pool_id: Pool the job runs on (templated).
    :param max_task_retry_count: Retries per task after a non-zero exit.
    :param max_wall_clock_time: Longest the whole job may run.
    :param task_max_wall_clock_time: Longest one task may run (set on each task by
        the add operator when not given per task).
    :param metadata: Name/value pairs recorded on the job (e.g. the month).
    :param azure_batch_conn_id: The ``azure_batch`` connection.
    """

    template_fields: Sequence[str] = ("job_id", "pool_id", "metadata")
    operator_extra_links = (AzureBatchJobLink(),)
    ui_color = "#e6f1fb"

    def __init__(
        self,
        *,
        job_id: str,
        pool_id: str,
        max_task_retry_count: int = 2,
        max_wall_clock_time: timedelta = timedelta(hours=12),
        metadata: dict[str, str] | None = None,
        azure_batch_conn_id: str = BatchHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.pool_id = pool_id
        self.max_task_retry_count = max_task_retry_count
        self.max_wall_clock_time = max_wall_clock_time
        self.metadata = metadata or {}
        self.azure_batch_conn_id = azure_batch_conn_id

    def execute(self, context: Context) -> str:
        check_batch_id("job_id", self.job_id)
        check_batch_id("pool_id", self.pool_id)
        if self.max_task_retry_count < -1:
            raise ValueError(f"max_task_retry_count must be >= -1, got {self.max_task_retry_count}")
        hook = self.hook
        self.persist_job_link(context, self.job_id)
        job = hook.get_job(self.job_id)
        if job is None:
            try:
                hook.create_job(
                    batch_models.BatchJobCreateOptions(
                        id=self.job_id,
                        pool_info=batch_models.BatchPoolInfo(pool_id=self.pool_id),
                        constraints=batch_models.BatchJobConstraints(
                            max_task_retry_count=self.max_task_retry_count,
                            max_wall_clock_time=self.max_wall_clock_time,
                        ),
                        all_tasks_complete_mode="noaction",
                        metadata=[batch_models.BatchMetadataItem(name=k, value=str(v)) for k, v in self.metadata.items()],
                    )
                )
                self.log.info("created job %s on pool %s", self.job_id, self.pool_id)
                return self.job_id
            except Exception as err:
                if getattr(getattr(err, "error", None), "code", None) != "JobExists":
                    raise
                job = hook.get_job(self.job_id)
        job_pool = job.pool_info.pool_id if job and job.pool_info else None
        if job_pool != self.pool_id:
            raise ValueError(f"job {self.job_id} exists on pool {job_pool}, not {self.pool_id}; refusing to reuse it")
        self.log.info("job %s already exists (state %s); re-attaching", self.job_id, getattr(job.state, "value", job.state))
        return self.job_id


class AzureBatchAddTasksOperator(AzureBatchBaseOperator):
    """Add one Batch task per shard, in bulk, adding only what is missing.

    Tasks are described without any credential; this operator mints the SAS
    tokens at run time (read+list for inputs, create+write for outputs,
    expiring after ``sas_expiry``), so no secret ever sits in XCom or in a
    rendered template. Each task is a dict::

        {"id": "shard-00000",
         "command_line": "python3 score.py --images manifest.txt ...",   # trusted values only
         "resource_files": [{"container": "work", "blob": "runs/.../shard-00000.txt", "file_path": "manifest.txt"}],
         "output_files": [{"file_pattern": "predictions.csv", "container": "work",
                           "path": "runs/.../results/shard-00000.csv", "upload_condition": "taskcompletion"}],
         "environment": {"NAME": "value"},
         "sas_environment": {"SCORING_SAS_TOKEN": {"container": "images", "access": "read"}},
         "container_image": "myregistry.azurecr.io/scoring:1"}             # optional

    Adds go out in as few requests as Azure allows (100 tasks and 1 MB each); a
    task that already exists from an earlier attempt is left alone. When every
    task is in, the job is switched to ``onAllTasksComplete=terminatejob``.

    Alternatively ``tasks_blob`` names a blob holding the task dicts as JSON
    lines (``{"container": "work", "blob": "runs/.../tasks.jsonl", "task_count": 200}``;
    ``task_count`` optional, checked when given), read with the ``wasb``
    connection: a month's descriptions then never pass through XCom or the
    rendered templates, whose size would otherwise grow with the month.

    :param job_id: The job (templated).
    :param tasks: Task dicts as above (templated; usually an XComArg).
    :param tasks_blob: Where the task dicts are, instead of ``tasks`` (templated).
    :param sas_expiry: Lifetime of the SAS tokens: the job's time limit.
    :param max_task_retry_count: Retries per task (None: the job's default).
    :param max_wall_clock_time: Longest one task may run.
    :param azure_batch_conn_id: The ``azure_batch`` connection.
    :param wasb_conn_id: The ``wasb`` connection of the storage account.
    """

    template_fields: Sequence[str] = ("job_id", "tasks", "tasks_blob")
    operator_extra_links = (AzureBatchJobLink(),)
    ui_color = "#e6f1fb"

    def __init__(
        self,
        *,
        job_id: str,
        tasks: list[dict[str, Any]] | Any = None,
        tasks_blob: dict[str, Any] | Any = None,
        sas_expiry: timedelta = timedelta(hours=24),
        max_task_retry_count: int | None = None,
        max_wall_clock_time: timedelta | None = timedelta(hours=2),
        azure_batch_conn_id: str = BatchHook.default_conn_name,
        wasb_conn_id: str = "wasb_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (tasks is None) == (tasks_blob is None):
            raise ValueError("give exactly one of tasks and tasks_blob")
        self.job_id = job_id
        self.tasks = tasks
        self.tasks_blob = tasks_blob
        self.sas_expiry = sas_expiry
        self.max_task_retry_count = max_task_retry_count
        self.max_wall_clock_time = max_wall_clock_time
        self.azure_batch_conn_id = azure_batch_conn_id
        self.wasb_conn_id = wasb_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        check_batch_id("job_id", self.job_id)
        specs = self._specs_from_blob() if self.tasks_blob is not None else list(self.tasks or [])
        ids = [check_batch_id("task id", spec.get("id")) for spec in specs]
        duplicates = sorted({task_id for task_id in ids if ids.count(task_id) > 1})
        if duplicates:
            raise ValueError(f"duplicate task ids: {', '.join(duplicates[:10])}")
        hook = self.hook
        self.persist_job_link(context, self.job_id)
        job = hook.get_job(self.job_id)
        if job is None:
            raise ValueError(f"job {self.job_id} does not exist; create it first")
        if not specs:
            self.log.info("no tasks to add to job %s", self.job_id)
            return {"job_id": self.job_id, "task_count": 0, "added": 0, "existing": 0}
        if wire_value(job.state) != "active":
            total = hook.task_counts(self.job_id)
            have = total.active + total.running + total.completed
            if have >= len(specs):
                self.log.info("job %s is %s and already holds its %d tasks; nothing to add",
                              self.job_id, getattr(job.state, "value", job.state), have)
                return {"job_id": self.job_id, "task_count": len(specs), "added": 0, "existing": len(specs)}
            raise RuntimeError(f"job {self.job_id} is {getattr(job.state, 'value', job.state)} with {have} of {len(specs)} tasks; "
                               "it cannot take new tasks. Delete the job to run this month again.")
        sas = _SasCache(BlobSasHook(wasb_conn_id=self.wasb_conn_id), self.sas_expiry)
        result = hook.add_tasks(self.job_id, [self._task(spec, sas) for spec in specs])
        self.log.info("job %s: %d tasks added, %d already there (%d requests)",
                      self.job_id, len(result.added), len(result.existing), result.requests)
        hook.terminate_job_when_tasks_complete(self.job_id)
        return {"job_id": self.job_id, "task_count": len(specs), "added": len(result.added), "existing": len(result.existing)}

    def _specs_from_blob(self) -> list[dict[str, Any]]:
        """The task dicts of ``tasks_blob`` (JSON lines), checked against its ``task_count``."""
        ref = self.tasks_blob
        if not isinstance(ref, dict) or not ref.get("container") or not ref.get("blob"):
            raise ValueError(f"tasks_blob must be a dict with 'container' and 'blob', got {ref!r}")
        try:
            text = BlobSasHook(wasb_conn_id=self.wasb_conn_id).read_text(ref["container"], ref["blob"])
        except ResourceNotFoundError:
            raise ValueError(f"tasks_blob {ref['container']}/{ref['blob']} does not exist") from None
        specs = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                spec = json.loads(line)
            except ValueError as error:
                raise ValueError(f"tasks_blob {ref['blob']} line {number} is not JSON: {error}") from None
            if not isinstance(spec, dict):
                raise ValueError(f"tasks_blob {ref['blob']} line {number} is not a JSON object")
            specs.append(spec)
        expected = ref.get("task_count")
        if expected is not None and int(expected) != len(specs):
            raise ValueError(f"tasks_blob {ref['blob']} holds {len(specs)} tasks, expected {expected}")
        self.log.info("read %d task descriptions from %s/%s", len(specs), ref["container"], ref["blob"])
        return specs

    def _task(self, spec: dict[str, Any], sas: "_SasCache") -> batch_models.BatchTaskCreateOptions:
        unknown = set(spec) - {"id", "command_line", "resource_files", "output_files", "environment",
                               "sas_environment", "container_image", "display_name"}
        if unknown:
            raise ValueError(f"task {spec['id']}: unknown keys {sorted(unknown)}")
        if not spec.get("command_line"):
            raise ValueError(f"task {spec['id']}: command_line is empty")
        env = [batch_models.EnvironmentSetting(name=k, value=str(v)) for k, v in (spec.get("environment") or {}).items()]
        for name, ref in (spec.get("sas_environment") or {}).items():
            env.append(batch_models.EnvironmentSetting(name=name, value=sas.token(ref["container"], ref.get("access", "read"))))
        resource_files = []
        for ref in spec.get("resource_files") or []:
            if "blob" in ref:
                url = sas.hook.blob_sas_url(ref["container"], ref["blob"], sas.token(ref["container"], "read"))
                resource_files.append(batch_models.ResourceFile(http_url=url, file_path=ref["file_path"]))
            else:
                resource_files.append(batch_models.ResourceFile(
                    storage_container_url=sas.url(ref["container"], "read"),
                    blob_prefix=ref.get("prefix"), file_path=ref.get("file_path"),
                ))
        output_files = [
            batch_models.OutputFile(
                file_pattern=out["file_pattern"],
                destination=batch_models.OutputFileDestination(
                    container=batch_models.OutputFileBlobContainerDestination(
                        container_url=sas.url(out["container"], "write"), path=out["path"]
                    )
                ),
                upload_options=batch_models.OutputFileUploadConfiguration(
                    upload_condition=out.get("upload_condition", "taskcompletion")
                ),
            )
            for out in spec.get("output_files") or []
        ]
        container_settings = None
        if spec.get("container_image"):
            container_settings = batch_models.BatchTaskContainerSettings(
                image_name=spec["container_image"], working_directory="taskWorkingDirectory"
            )
        return batch_models.BatchTaskCreateOptions(
            id=spec["id"],
            display_name=spec.get("display_name"),
            command_line=spec["command_line"],
            resource_files=resource_files or None,
            output_files=output_files or None,
            environment_settings=env or None,
            container_settings=container_settings,
            constraints=batch_models.BatchTaskConstraints(
                max_task_retry_count=self.max_task_retry_count, max_wall_clock_time=self.max_wall_clock_time
            ),
            # A non-admin auto-user: tasks never need root to score images.
            user_identity=batch_models.UserIdentity(
                auto_user=batch_models.AutoUserSpecification(scope="task", elevation_level="nonadmin")
            ),
        )

    def on_kill(self) -> None:
        self.hook.terminate_job(self.job_id, "Airflow task killed")


class _SasCache:
    """One SAS per container and access per run of the operator."""

    _PERMISSIONS = {"read": READ_PERMISSIONS, "write": WRITE_PERMISSIONS}

    def __init__(self, hook: BlobSasHook, expires_in: timedelta) -> None:
        self.hook = hook
        self.expires_in = expires_in
        self._tokens: dict[tuple[str, str], str] = {}

    def token(self, container: str, access: str) -> str:
        if access not in self._PERMISSIONS:
            raise ValueError(f"access {access!r} must be 'read' or 'write'")
        key = (container, access)
        if key not in self._tokens:
            self._tokens[key] = self.hook.container_sas(container, self._PERMISSIONS[access], self.expires_in)
        return self._tokens[key]

    def url(self, container: str, access: str) -> str:
        return f"{self.hook.container_url(container)}?{self.token(container, access)}"


class AzureBatchTeardownOperator(AzureBatchBaseOperator):
    """Stop paying: end the job and shrink (or delete) the pool, even after failures.

    Use it as an Airflow teardown task (``.as_teardown(setups=...)``) so it runs
    whatever happened upstream. Every step tolerates what is already gone. A pool
    that another active job still uses (a concurrent run sharing it) is left alone.
    The task succeeds only once a GET of the pool confirms the end state (gone, or
    steady at zero nodes); it waits at ``poll_interval`` in the triggerer when
    deferrable, since a GPU pool takes minutes to drain.

    :param pool_id: The pool (templated).
    :param job_id: The job, if one was created (templated; may be None).
    :param job_action: ``terminate`` (keep history), ``delete``, or ``keep``.
    :param pool_action: ``resize_to_zero`` (keep the pool definition), ``delete``, or ``keep``.
    :param poll_interval: Seconds between GETs of the pool while waiting.
    :param timeout: Seconds to wait for the pool's end state before failing.
    :param deferrable: Wait in the triggerer, holding no worker slot.
    :param azure_batch_conn_id: The ``azure_batch`` connection.
    """

    template_fields: Sequence[str] = ("pool_id", "job_id")
    ui_color = "#fdecea"

    def __init__(
        self,
        *,
        pool_id: str,
        job_id: str | None = None,
        job_action: str = "terminate",
        pool_action: str = "resize_to_zero",
        poll_interval: float = 30,
        timeout: float = 30 * 60,
        deferrable: bool = DEFAULT_DEFERRABLE,
        azure_batch_conn_id: str = BatchHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if job_action not in ("terminate", "delete", "keep"):
            raise ValueError(f"job_action {job_action!r} must be terminate, delete or keep")
        if pool_action not in ("resize_to_zero", "delete", "keep"):
            raise ValueError(f"pool_action {pool_action!r} must be resize_to_zero, delete or keep")
        self.pool_id = pool_id
        self.job_id = job_id
        self.job_action = job_action
        self.pool_action = pool_action
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = deferrable
        self.azure_batch_conn_id = azure_batch_conn_id

    def execute(self, context: Context) -> None:
        hook = self.hook
        if self.job_id and self.job_action == "terminate":
            if hook.terminate_job(self.job_id, "teardown"):
                self.log.info("terminated job %s", self.job_id)
        elif self.job_id and self.job_action == "delete":
            if hook.delete_job(self.job_id):
                self.log.info("deleted job %s", self.job_id)
        if self.pool_action == "keep":
            return
        others = hook.active_jobs_on_pool(self.pool_id, exclude=self.job_id)
        if others:
            self.log.warning("pool %s left as it is: other active jobs still use it (%s)",
                             self.pool_id, ", ".join(others[:10]))
            return
        if self.pool_action == "resize_to_zero":
            return self._shrink(context, hook)
        if not hook.request_delete_pool(self.pool_id):
            self.log.info("pool %s was already gone", self.pool_id)
            return None
        self.log.info("deleting pool %s", self.pool_id)
        return self._wait_pool(context, "gone", "pool_settled")

    def _shrink(self, context: Context, hook: BatchHook) -> None:
        action = hook.request_resize(self.pool_id, 0, 0)
        if action == "missing":
            self.log.info("pool %s was already gone", self.pool_id)
            return None
        if action == "stopping":  # Azure resizes only a steady pool: stop what runs, then shrink
            self.log.info("pool %s was resizing; stopping that first", self.pool_id)
            return self._wait_pool(context, "steady", "shrink_when_steady")
        self.log.info("resizing pool %s to zero nodes", self.pool_id)
        return self._wait_pool(context, "zero", "pool_settled")

    def _wait_pool(self, context: Context, want: str, method_name: str) -> None:
        trigger = AzureBatchPoolSettledTrigger(
            pool_id=self.pool_id, want=want, azure_batch_conn_id=self.azure_batch_conn_id,
            poll_interval=self.poll_interval, end_time=time.time() + self.timeout,
        )
        return self.wait_for(context, trigger, method_name, self.timeout)

    def shrink_when_steady(self, context: Context, event: dict[str, Any]) -> None:
        self._check(event)
        if event.get("gone"):
            self.log.info("pool %s is gone", self.pool_id)
            return None
        return self._shrink(context, self.hook)

    def pool_settled(self, context: Context, event: dict[str, Any]) -> None:
        """The pool's end state, as a GET of it showed: gone, or steady at zero nodes."""
        self._check(event)
        self.log.info("pool %s: %s", self.pool_id, event.get("message"))
        return None

    def _check(self, event: dict[str, Any]) -> None:
        if event.get("status") != "success":
            raise RuntimeError(f"teardown of pool {self.pool_id} not confirmed, it may still bill: {event.get('message')}")
