"""Airflow operators for Azure Machine Learning: compute cluster, parallel scoring pipeline, batch endpoint.

The scoring pipeline has one `parallel_run_function` step that runs an entry script
with the Azure ML batch contract (``init()`` once per worker, ``run(mini_batch)`` per
mini batch) over every file of a ``uri_folder`` and appends the rows that ``run``
returns to one output file (``append_row_to``).

Every operator here is an ``AzureMLBaseOperator`` (``operators/base.py``): one cached
``AzureMLHook`` that makes every SDK call, and one check-once-then-defer wait.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from azure_compute.hooks.aml import AzureMLHook, job_status
from azure_compute.links.aml import AzureMLStudioJobLink
from azure_compute.operators.base import DEFAULT_DEFERRABLE, DEFER_MARGIN_AZURE_ML, AzureComputeBase
from azure_compute.triggers.aml import AzureMLJobTrigger
from azure_compute.triggers.base import SUCCESS

if TYPE_CHECKING:
    from airflow.sdk import Context
    from azure.ai.ml.entities import Environment, PipelineJob

#: Output name of the pipeline (and of its parallel step) that receives the appended rows.
PREDICTIONS_OUTPUT = "predictions"
#: Input name of the parallel step: the folder whose files are scored.
IMAGES_INPUT = "images"
#: Input name of the model weights handed to the entry script (optional).
WEIGHTS_INPUT = "weights"
#: Program argument with which Azure ML's parallel runner names the append_row file.
APPEND_ROW_FILE_ARG = "--append_row_file_name"


@dataclass
class ParallelScoringSettings:
    """Everything the parallel step needs; each field maps to one Azure ML setting.

    :param code_dir: local folder uploaded as the step's code asset (holds the entry script).
    :param entry_script: file in code_dir with ``init()`` and ``run(mini_batch)``.
    :param program_arguments: extra arguments the entry script reads (e.g. ``--conf 0.25``).
    :param environment: an ``Environment`` or a registered one (``azureml:name:version`` / ``name@latest``).
    :param mini_batch_size: files per ``run()`` call.
    :param instance_count: nodes of the compute cluster used.
    :param max_concurrency_per_instance: worker processes per node.
    :param error_threshold: failed files tolerated over the whole job (-1 = any number).
    :param mini_batch_error_threshold: failed mini batches tolerated (-1 = any number).
    :param max_retries: tries of a mini batch in all, failed or timed out (Azure ML counts the first one).
    :param retry_timeout_seconds: time limit of one ``run()`` call.
    :param output_file_name: the file the appended rows go to.
    :param environment_variables: environment of the worker processes.
    :param logging_level: the parallel runner's log level.
    """

    code_dir: str
    environment: Any
    entry_script: str = "score.py"
    program_arguments: str = ""
    mini_batch_size: int = 10
    instance_count: int = 1
    max_concurrency_per_instance: int = 1
    error_threshold: int = -1
    mini_batch_error_threshold: int = -1
    max_retries: int = 3
    retry_timeout_seconds: int = 600
    output_file_name: str = "predictions.csv"
    environment_variables: dict[str, str] = field(default_factory=dict)
    logging_level: str = "INFO"

    def validate(self) -> None:
        """Fail early, naming the bad setting, before anything reaches Azure."""
        for name in ("mini_batch_size", "instance_count", "max_concurrency_per_instance", "retry_timeout_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("error_threshold", "mini_batch_error_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < -1:
                raise ValueError(f"{name} must be -1 (no limit) or a count >= 0, got {value!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 1:
            raise ValueError(f"max_retries (tries in all) must be >= 1, got {self.max_retries!r}")
        if not re.fullmatch(r"[\w.-]+", self.output_file_name):
            raise ValueError(f"output_file_name must be a plain file name, got {self.output_file_name!r}")
        if self.output_file_name != self.output_file_name.lower():
            # The driver lower-cases --append_row_file_name: a mixed-case name would land elsewhere.
            raise ValueError(f"output_file_name {self.output_file_name!r}: use lower case (Azure ML's parallel "
                             f"run driver writes {self.output_file_name.lower()!r})")
        if APPEND_ROW_FILE_ARG in self.program_arguments:
            raise ValueError(f"set output_file_name instead of {APPEND_ROW_FILE_ARG} in program_arguments")


def make_environment(
    image: str,
    *,
    conda_file: str | dict | None = None,
    pip_packages: Sequence[str] = (),
    python_version: str = "3.11",
    name: str | None = None,
) -> Environment:
    """An Azure ML environment: a container image, plus conda/pip packages when given."""
    from azure.ai.ml.entities import Environment

    if conda_file is None and pip_packages:
        conda_file = {
            "name": "scoring",
            "channels": ["conda-forge"],
            "dependencies": [f"python={python_version}", "pip", {"pip": list(pip_packages)}],
        }
    return Environment(name=name, image=image, conda_file=conda_file)


def build_scoring_pipeline(
    *,
    settings: ParallelScoringSettings,
    input_path: str,
    output_path: str | None,
    compute: str,
    job_name: str,
    experiment_name: str,
    tags: dict[str, str] | None = None,
    display_name: str | None = None,
    weights: str | None = None,
    weights_argument: str = "--weights",
) -> PipelineJob:
    """A pipeline job with one parallel step scoring every file under input_path.

    input_path is a ``uri_folder`` such as ``azureml://datastores/<ds>/paths/202401/``;
    output_path is where the appended rows file is written (None: the workspace default).
    weights, when given, is a second input handed to the entry script as
    ``<weights_argument> <local path>``: a file on a datastore
    (``azureml://datastores/<ds>/paths/models/yolov8n.pt``), a folder on a datastore
    (a path ending in ``/``, e.g. an OpenVINO export) or a registered model
    (``azureml:<name>:<version>``).
    """
    from azure.ai.ml import Input, Output, dsl
    from azure.ai.ml.entities import RetrySettings
    from azure.ai.ml.parallel import RunFunction, parallel_run_function

    settings.validate()
    program_arguments = settings.program_arguments
    inputs = {IMAGES_INPUT: Input(type="uri_folder", mode="ro_mount")}
    weights_input = None
    if weights:
        if re.fullmatch(r"azureml:[^/]+:[^/]+", weights):
            weights_type = "custom_model"
        elif weights.startswith("azureml://datastores/"):
            weights_type = "uri_folder" if weights.endswith("/") else "uri_file"
        else:
            raise ValueError(
                f"weights {weights!r}: give azureml://datastores/<ds>/paths/<file or folder/> "
                "or azureml:<model>:<version>"
            )
        inputs[WEIGHTS_INPUT] = Input(type=weights_type, mode="download")
        weights_input = Input(type=weights_type, path=weights)
        program_arguments = f"{program_arguments} {weights_argument} ${{{{inputs.{WEIGHTS_INPUT}}}}}"
    program_arguments = f"{program_arguments} {APPEND_ROW_FILE_ARG} {settings.output_file_name}".strip()
    step = parallel_run_function(
        name="parallel_scoring",
        display_name="Score every image (init/run)",
        inputs=inputs,
        outputs={PREDICTIONS_OUTPUT: Output(type="uri_folder", mode="rw_mount")},
        input_data=f"${{{{inputs.{IMAGES_INPUT}}}}}",
        instance_count=settings.instance_count,
        max_concurrency_per_instance=settings.max_concurrency_per_instance,
        mini_batch_size=str(settings.mini_batch_size),
        error_threshold=settings.error_threshold,
        mini_batch_error_threshold=settings.mini_batch_error_threshold,
        retry_settings=RetrySettings(max_retries=settings.max_retries, timeout=settings.retry_timeout_seconds),
        logging_level=settings.logging_level,
        environment_variables=dict(settings.environment_variables),
        task=RunFunction(
            code=settings.code_dir,
            entry_script=settings.entry_script,
            program_arguments=program_arguments,
            environment=settings.environment,
            # append_row_to belongs here, on the run function: elsewhere it is silently dropped.
            append_row_to=f"${{{{outputs.{PREDICTIONS_OUTPUT}}}}}",
        ),
    )

    images = Input(type="uri_folder", path=input_path)
    # No annotations below: the dsl reads them, and with postponed evaluation they are strings.
    if weights_input is None:

        @dsl.pipeline(name="parallel_scoring_pipeline", compute=compute, description="Parallel scoring")
        def scoring_pipeline(images):
            return {PREDICTIONS_OUTPUT: step(images=images).outputs[PREDICTIONS_OUTPUT]}

        job = scoring_pipeline(images=images)
    else:

        @dsl.pipeline(name="parallel_scoring_pipeline", compute=compute, description="Parallel scoring")
        def scoring_pipeline_with_weights(images, weights):
            return {PREDICTIONS_OUTPUT: step(images=images, weights=weights).outputs[PREDICTIONS_OUTPUT]}

        job = scoring_pipeline_with_weights(images=images, weights=weights_input)
    job.name = job_name
    job.display_name = display_name or job_name
    job.experiment_name = experiment_name
    job.tags = dict(tags or {})
    if output_path:
        job.outputs[PREDICTIONS_OUTPUT] = Output(type="uri_folder", path=output_path, mode="rw_mount")
    return job


def deterministic_job_name(*parts: str) -> str:
    """A job name that is the same for the same parts (so a retried task finds its job).

    Azure ML job names allow letters, digits, '-' and '_' and at most 255 characters.
    """
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts)).strip("-_")[:80]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]
    return f"{readable}-{digest}" if readable else digest


class AzureMLJobFailedError(RuntimeError):
    """An Azure ML job ended Failed or Canceled (the message carries its error and studio link)."""


def raise_for_event(event: dict[str, Any]) -> str:
    """The job name of a successful trigger event; raises AzureMLJobFailedError otherwise."""
    if event.get("status") == SUCCESS:
        return event["job_name"]
    link = f" (see {event['studio_url']})" if event.get("studio_url") else ""
    raise AzureMLJobFailedError(f"{event.get('message')}{link}")


class AzureMLBase(AzureComputeBase[AzureMLHook]):
    """An Azure ML operator or sensor: ``self.hook`` is an ``AzureMLHook`` for ``azure_ml_conn_id``."""

    hook_class = AzureMLHook
    conn_id_field = "azure_ml_conn_id"
    defer_margin = DEFER_MARGIN_AZURE_ML
    azure_ml_conn_id: str


class AzureMLBaseOperator(AzureMLBase, BaseOperator):
    """An Azure ML operator."""


class _WaitsForJob(AzureMLBaseOperator):
    """Waits for the job it submitted: check once, then defer to the trigger or poll in the worker."""

    poll_interval: float
    timeout: float | None

    def _wait(self, context: Context, job_name: str) -> str:
        timeout = float(self.timeout) if self.timeout else None
        trigger = AzureMLJobTrigger(job_name=job_name, azure_ml_conn_id=self.azure_ml_conn_id,
                                    poll_interval=float(self.poll_interval), timeout=timeout)
        return self.wait_for(context, trigger, "execute_complete", timeout)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        self.log.info("%s", event.get("message"))
        return raise_for_event(event)


def asyncio_run_first_event(trigger: AzureMLJobTrigger) -> dict[str, Any]:
    """Run the trigger in this process until its first event (kept for callers of the old name)."""
    import asyncio

    return asyncio.run(trigger.first_event())


class AzureMLEnsureComputeOperator(AzureMLBaseOperator):
    """Create an Azure ML compute cluster (AmlCompute) if it is missing; reuse it when compatible.

    An existing cluster is reused when its VM size and tier match (Azure cannot change
    them in place); its scale settings are updated when they differ. A cluster of
    another size, tier or type fails the task naming both sides.

    :param compute_name: cluster name (2-16 characters: letters, digits, '-').
    :param size: VM size, e.g. ``Standard_NC4as_T4_v3`` (a T4 GPU).
    :param tier: ``low_priority`` (spot-like, cheaper) or ``dedicated``.
    :param min_instances: nodes kept when idle (0: the cluster costs nothing idle).
    :param max_instances: most nodes the cluster scales to.
    :param idle_time_before_scale_down: seconds a node idles before it is released.
    :param azure_ml_conn_id: Airflow connection of type ``azure_ml``.
    :return: the compute name (XCom).
    """

    template_fields: Sequence[str] = ("compute_name", "size", "tier", "min_instances", "max_instances")

    def __init__(
        self,
        *,
        compute_name: str,
        size: str = "Standard_NC4as_T4_v3",
        tier: str = "low_priority",
        min_instances: int = 0,
        max_instances: int = 4,
        idle_time_before_scale_down: int = 300,
        azure_ml_conn_id: str = AzureMLHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.compute_name = compute_name
        self.size = size
        self.tier = tier
        self.min_instances = min_instances
        self.max_instances = max_instances
        self.idle_time_before_scale_down = idle_time_before_scale_down
        self.azure_ml_conn_id = azure_ml_conn_id

    def _validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{1,15}", str(self.compute_name)):
            raise ValueError(f"compute_name {self.compute_name!r}: 2-16 letters, digits or '-', starting with a letter")
        if self.tier not in ("low_priority", "dedicated"):
            raise ValueError(f"tier must be 'low_priority' or 'dedicated', got {self.tier!r}")
        if not (0 <= int(self.min_instances) <= int(self.max_instances)) or int(self.max_instances) < 1:
            raise ValueError(
                f"need 0 <= min_instances <= max_instances and max_instances >= 1, "
                f"got min {self.min_instances}, max {self.max_instances}"
            )

    def execute(self, context: Context) -> str:
        from azure.ai.ml.entities import AmlCompute

        self._validate()
        wanted = AmlCompute(
            name=self.compute_name,
            size=self.size,
            tier=self.tier,
            min_instances=int(self.min_instances),
            max_instances=int(self.max_instances),
            idle_time_before_scale_down=int(self.idle_time_before_scale_down),
        )
        existing = self.hook.find_compute(self.compute_name)
        if existing is None:
            self.log.info("Creating compute cluster %s (%s, %s, %s-%s nodes)", self.compute_name, self.size,
                          self.tier, self.min_instances, self.max_instances)
            self.hook.create_or_update_compute(wanted)
            return self.compute_name
        problems = []
        if getattr(existing, "type", None) != "amlcompute":
            problems.append(f"type is {getattr(existing, 'type', None)!r}, not 'amlcompute'")
        if str(getattr(existing, "size", "")).lower() != self.size.lower():
            problems.append(f"size is {getattr(existing, 'size', None)!r}, wanted {self.size!r}")
        if str(getattr(existing, "tier", "")).lower() != self.tier.lower():
            problems.append(f"tier is {getattr(existing, 'tier', None)!r}, wanted {self.tier!r}")
        if problems:
            raise ValueError(
                f"compute {self.compute_name!r} exists but cannot be reused: {'; '.join(problems)}. "
                "Delete it or choose another compute_name."
            )
        scale = (existing.min_instances, existing.max_instances, int(existing.idle_time_before_scale_down or 0))
        if scale != (wanted.min_instances, wanted.max_instances, wanted.idle_time_before_scale_down):
            self.log.info("Updating the scale settings of compute %s from %s", self.compute_name, scale)
            self.hook.create_or_update_compute(wanted)
        else:
            self.log.info("Reusing compute cluster %s", self.compute_name)
        return self.compute_name


class AzureMLSubmitPipelineJobOperator(_WaitsForJob):
    """Submit the parallel scoring pipeline for one folder, and (by default) wait for it.

    Idempotent: the job name is derived from the DAG, the run and the month (or given),
    so a retried task finds the job its earlier try submitted and waits for it instead
    of submitting a second one.

    :param input_datastore: datastore holding the images (e.g. the month folders' container).
    :param input_path: folder on that datastore, e.g. ``202401/``.
    :param compute: compute cluster name (see AzureMLEnsureComputeOperator).
    :param code_dir: local folder uploaded as the code asset (holds entry_script).
    :param entry_script: the ``init()``/``run(mini_batch)`` script in code_dir.
    :param environment: a registered environment (``azureml:name:version``) or an Environment;
        when None, one is built from ``image`` plus ``conda_file`` or ``pip_packages``.
    :param output_datastore: datastore that receives the predictions file.
    :param output_path: folder on output_datastore (default ``azureml/<job name>/predictions``).
    :param output_file_name: name of the appended-rows file.
    :param program_arguments: arguments for the entry script; ``${{inputs.images}}`` is the input folder.
    :param weights: model weights as a second input: ``azureml://datastores/<ds>/paths/<file>``,
        ``azureml://datastores/<ds>/paths/<folder>/`` or
        ``azureml:<model>:<version>``; the entry script gets ``--weights <local path>``.
    :param mini_batch_size, instance_count, max_concurrency_per_instance, error_threshold,
        mini_batch_error_threshold, max_retries, retry_timeout_seconds, environment_variables,
        logging_level: the parallel step's settings (see ParallelScoringSettings).
    :param experiment_name: experiment the job is filed under.
    :param month: the month processed (``YYYY-MM`` or ``YYYYMM``), part of the job name and tags.
    :param job_name: explicit job name (default: derived from dag_id, run_id, task_id and month).
    :param tags: extra job tags (dag_id, run_id, task_id and month are always added).
    :param wait_for_completion: wait until the job ends (else return right after submitting).
    :param deferrable: wait in the triggerer (default from ``operators.default_deferrable``).
    :param poll_interval: seconds between status checks while waiting.
    :param timeout: seconds to wait before failing (None: no limit).
    :param azure_ml_conn_id: Airflow connection of type ``azure_ml``.
    :return: the job name (XCom); also pushes ``predictions`` (where the file lands).
    """

    template_fields: Sequence[str] = (
        "input_datastore", "input_path", "output_datastore", "output_path", "compute", "month",
        "job_name", "experiment_name", "tags", "program_arguments", "mini_batch_size", "instance_count",
        "max_concurrency_per_instance", "error_threshold", "mini_batch_error_threshold", "max_retries",
        "retry_timeout_seconds", "environment_variables", "code_dir", "entry_script", "timeout", "weights",
    )
    operator_extra_links = (AzureMLStudioJobLink(),)

    def __init__(
        self,
        *,
        input_datastore: str,
        input_path: str,
        compute: str,
        code_dir: str,
        entry_script: str = "score.py",
        environment: Any = None,
        image: str | None = None,
        conda_file: str | dict | None = None,
        pip_packages: Sequence[str] = (),
        output_datastore: str = "workspaceblobstore",
        output_path: str | None = None,
        output_file_name: str = "predictions.csv",
        program_arguments: str = "",
        weights: str | None = None,
        mini_batch_size: int = 10,
        instance_count: int = 1,
        max_concurrency_per_instance: int = 1,
        error_threshold: int = -1,
        mini_batch_error_threshold: int = -1,
        max_retries: int = 3,
        retry_timeout_seconds: int = 600,
        environment_variables: dict[str, str] | None = None,
        logging_level: str = "INFO",
        experiment_name: str = "monthly-detection",
        month: str | None = None,
        job_name: str | None = None,
        tags: dict[str, str] | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = DEFAULT_DEFERRABLE,
        poll_interval: float = 30.0,
        timeout: float | None = None,
        azure_ml_conn_id: str = AzureMLHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_datastore = input_datastore
        self.input_path = input_path
        self.compute = compute
        self.code_dir = code_dir
        self.entry_script = entry_script
        self.environment = environment
        self.image = image
        self.conda_file = conda_file
        self.pip_packages = list(pip_packages)
        self.output_datastore = output_datastore
        self.output_path = output_path
        self.output_file_name = output_file_name
        self.program_arguments = program_arguments
        self.weights = weights
        self.mini_batch_size = mini_batch_size
        self.instance_count = instance_count
        self.max_concurrency_per_instance = max_concurrency_per_instance
        self.error_threshold = error_threshold
        self.mini_batch_error_threshold = mini_batch_error_threshold
        self.max_retries = max_retries
        self.retry_timeout_seconds = retry_timeout_seconds
        self.environment_variables = environment_variables or {}
        self.logging_level = logging_level
        self.experiment_name = experiment_name
        self.month = month
        self.job_name = job_name
        self.tags = tags or {}
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.azure_ml_conn_id = azure_ml_conn_id
        self._submitted_job: str | None = None
        if environment is None and not image:
            raise ValueError(f"task {self.task_id}: give environment=... or image=... for the scoring step")

    def settings(self) -> ParallelScoringSettings:
        environment = self.environment or make_environment(
            self.image, conda_file=self.conda_file, pip_packages=self.pip_packages
        )
        return ParallelScoringSettings(
            code_dir=self.code_dir,
            entry_script=self.entry_script,
            environment=environment,
            program_arguments=self.program_arguments,
            mini_batch_size=int(self.mini_batch_size),
            instance_count=int(self.instance_count),
            max_concurrency_per_instance=int(self.max_concurrency_per_instance),
            error_threshold=int(self.error_threshold),
            mini_batch_error_threshold=int(self.mini_batch_error_threshold),
            max_retries=int(self.max_retries),
            retry_timeout_seconds=int(self.retry_timeout_seconds),
            output_file_name=self.output_file_name,
            environment_variables={str(k): str(v) for k, v in self.environment_variables.items()},
            logging_level=self.logging_level,
        )

    def resolved_job_name(self, context: Context) -> str:
        if self.job_name:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", self.job_name):
                raise ValueError(f"job_name {self.job_name!r}: use letters, digits, '-' and '_' only")
            return self.job_name
        month = self.month or ""
        return deterministic_job_name(self.dag_id, context["run_id"], self.task_id, month)

    def job_tags(self, context: Context) -> dict[str, str]:
        tags = {str(k): str(v) for k, v in self.tags.items()}
        tags.update({"dag_id": self.dag_id, "run_id": context["run_id"], "task_id": self.task_id})
        if self.month:
            tags["month"] = str(self.month)
        return tags

    def build(self, context: Context, job_name: str) -> PipelineJob:
        output_path = (self.output_path or f"azureml/{job_name}/predictions").strip("/")
        return build_scoring_pipeline(
            settings=self.settings(),
            input_path=datastore_uri(self.input_datastore, self.input_path),
            output_path=datastore_uri(self.output_datastore, output_path),
            compute=self.compute,
            job_name=job_name,
            experiment_name=self.experiment_name,
            tags=self.job_tags(context),
            weights=self.weights or None,
        )

    def execute(self, context: Context) -> str:
        hook = self.hook
        job_name = self.resolved_job_name(context)
        job = self.build(context, job_name)  # builds (and validates) even when re-attaching: bad input fails early
        existing = hook.find_job(job_name)
        if existing is not None:
            theirs = (existing.tags or {}).get("run_id")
            if theirs and theirs != context["run_id"]:
                raise ValueError(f"Azure ML job {job_name} belongs to run {theirs!r}, not {context['run_id']!r}")
            self.log.info("Re-attaching to Azure ML job %s (%s), submitted by an earlier try", job_name, job_status(existing))
        else:
            self.log.info("Submitting Azure ML pipeline job %s for %s/%s", job_name, self.input_datastore, self.input_path)
            hook.submit_job(job, experiment_name=self.experiment_name)
        self._submitted_job = job_name
        AzureMLStudioJobLink.persist(context, lambda: hook.studio_url(job_name))
        context["ti"].xcom_push(key="predictions", value=predictions_location(hook, job, self.output_file_name))
        if not self.wait_for_completion:
            return job_name
        return self._wait(context, job_name)

    def on_kill(self) -> None:
        if self._submitted_job:
            self.log.info("Cancelling Azure ML job %s", self._submitted_job)
            self.hook.cancel_job(self._submitted_job)


def predictions_location(hook: AzureMLHook, job: PipelineJob, file_name: str) -> dict[str, str]:
    """Where the appended-rows file lands: its azureml:// URI, datastore, container and blob path."""
    folder = job.outputs[PREDICTIONS_OUTPUT].path.rstrip("/")
    datastore, path = folder.removeprefix("azureml://datastores/").split("/paths/", 1)
    return output_file_location(hook, datastore, f"{path}/{file_name}")


def output_file_location(hook: AzureMLHook, datastore: str, path: str) -> dict[str, str]:
    """A file on a datastore, with the storage container behind it (what a merge step reads)."""
    return {"uri": f"azureml://datastores/{datastore}/paths/{path}", "datastore": datastore,
            **hook.datastore_location(datastore), "path": path}


def datastore_uri(datastore: str, path: str) -> str:
    """``azureml://datastores/<datastore>/paths/<path>/`` for a folder on a datastore."""
    if not re.fullmatch(r"[a-z0-9_]+", datastore or ""):
        raise ValueError(f"datastore name {datastore!r}: lowercase letters, digits and '_' only (Azure ML's rule)")
    clean = (path or "").strip("/")
    if not clean or ".." in clean.split("/"):
        raise ValueError(f"path {path!r} on datastore {datastore!r} must be a non-empty folder without '..'")
    return f"azureml://datastores/{datastore}/paths/{clean}/"


class AzureMLInvokeBatchEndpointOperator(_WaitsForJob):
    """Invoke a batch endpoint deployment (the init()/run() scoring contract) for one folder, and wait.

    The deployment (code, scoring script, environment, model, mini batch size, retries,
    output file) is set up once in the workspace; each run only names the folder.
    Idempotent like the pipeline operator: a retried task re-attaches to its job.

    :param endpoint_name: the batch endpoint.
    :param deployment_name: the deployment (default: the endpoint's default deployment).
    :param input_datastore: datastore holding the images.
    :param input_path: folder on that datastore, e.g. ``202401/``.
    :param output_datastore: datastore for the results (with output_path; default: the workspace's).
    :param output_path: folder for the results (default: Azure ML's ``azureml/<job>/score``).
    :param output_file_name: the deployment's output file name (only used to report where it lands).
    :param experiment_name: experiment the job is filed under.
    :param month: the month processed, part of the job name.
    :param job_name: explicit job name (default: derived from dag_id, run_id, task_id and month).
    :param wait_for_completion, deferrable, poll_interval, timeout: as for the pipeline operator.
    :param azure_ml_conn_id: Airflow connection of type ``azure_ml``.
    :return: the job name (XCom); also pushes ``predictions`` (where the file lands).
    """

    template_fields: Sequence[str] = (
        "endpoint_name", "deployment_name", "input_datastore", "input_path", "output_datastore",
        "output_path", "experiment_name", "month", "job_name", "timeout",
    )
    operator_extra_links = (AzureMLStudioJobLink(),)

    def __init__(
        self,
        *,
        endpoint_name: str,
        input_datastore: str,
        input_path: str,
        deployment_name: str | None = None,
        output_datastore: str = "workspaceblobstore",
        output_path: str | None = None,
        output_file_name: str = "predictions.csv",
        experiment_name: str | None = None,
        month: str | None = None,
        job_name: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = DEFAULT_DEFERRABLE,
        poll_interval: float = 30.0,
        timeout: float | None = None,
        azure_ml_conn_id: str = AzureMLHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint_name = endpoint_name
        self.deployment_name = deployment_name
        self.input_datastore = input_datastore
        self.input_path = input_path
        self.output_datastore = output_datastore
        self.output_path = output_path
        self.output_file_name = output_file_name
        self.experiment_name = experiment_name
        self.month = month
        self.job_name = job_name
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.azure_ml_conn_id = azure_ml_conn_id
        self._submitted_job: str | None = None

    def execute(self, context: Context) -> str:
        from azure.ai.ml import Input, Output

        hook = self.hook
        job_name = self.job_name or deterministic_job_name(self.dag_id, context["run_id"], self.task_id, self.month or "")
        input_uri = datastore_uri(self.input_datastore, self.input_path)
        output_folder = (self.output_path or f"azureml/{job_name}/score").strip("/")
        file_name = self.output_file_name.lower()  # as the driver names it
        outputs = None
        if self.output_path:
            # A batch endpoint job's output is the file the rows are appended to: type uri_file.
            outputs = {"score": Output(type="uri_file",
                                       path=datastore_uri(self.output_datastore, output_folder).rstrip("/")
                                       + f"/{file_name}")}
        if hook.find_job(job_name) is not None:
            self.log.info("Re-attaching to batch endpoint job %s, started by an earlier try", job_name)
        else:
            self.log.info("Invoking batch endpoint %s (%s) for %s", self.endpoint_name,
                          self.deployment_name or "default deployment", input_uri)
            hook.invoke_batch_endpoint(
                endpoint_name=self.endpoint_name,
                deployment_name=self.deployment_name,
                input=Input(type="uri_folder", path=input_uri),
                outputs=outputs,
                job_name=job_name,
                experiment_name=self.experiment_name,
            )
        self._submitted_job = job_name
        AzureMLStudioJobLink.persist(context, lambda: hook.studio_url(job_name))
        context["ti"].xcom_push(
            key="predictions",
            value=output_file_location(hook, self.output_datastore, f"{output_folder}/{file_name}"),
        )
        if not self.wait_for_completion:
            return job_name
        return self._wait(context, job_name)

    def on_kill(self) -> None:
        if self._submitted_job:
            self.log.info("Cancelling Azure ML job %s", self._submitted_job)
            self.hook.cancel_job(self._submitted_job)
