"""Monthly YOLOv8 detection over a month's Blob folder, on Azure Batch GPU spot nodes or Azure ML.

backend=batch: validate → stage → [ensure pool (setup)] → nodes ready → create job → add tasks
               → wait (deferrable) → merge → publish → [teardown], teardown running whatever failed.
backend=aml:   validate → stage → ensure compute → submit pipeline job (deferrable wait)
               → shard the output → merge → publish. The cluster scales to zero by itself.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.timetables.interval import CronDataIntervalTimetable

from azure_compute.operators.aml import AzureMLEnsureComputeOperator, AzureMLSubmitPipelineJobOperator
from azure_compute.operators.batch import (
    AzureBatchAddTasksOperator,
    AzureBatchCreateJobOperator,
    AzureBatchEnsurePoolOperator,
    AzureBatchTeardownOperator,
)
from azure_compute.links.blob import MonthlyReportLink
from azure_compute.sensors.batch import AzureBatchJobSensor, AzureBatchPoolReadySensor
from include.monthly import tasks
from include.monthly.config import DagConfig
from include.monthly.plan import BACKENDS, RunPlan
from include.monthly.runtime import SCORING_DIR, start_task as pool_start_task
from include.scoring.aml_environment import CONDA_FILE

DAG_ID = "monthly_detection"
CONFIG = DagConfig.from_env()
START_TASK = pool_start_task(CONFIG)  # the scoring runtime's start task (include/monthly/runtime.py), if any
PREDICTIONS = Asset(name="monthly_predictions", uri=f"wasb://{CONFIG.output_container}/predictions.csv")

DOC = """
### Monthly detection
Scores every image under `YYYYMM/` in the `images` container with YOLOv8 on an
Azure Batch GPU spot pool and publishes `predictions/YYYYMM/predictions.csv`
and `summary.json`. The run at the start of a month processes the month before
(the data interval). Trigger with params to pick a month (`2024-01`) or to
override the shard size, node counts, confidence or weights. Backfill with
`airflow backfill create --dag-id monthly_detection --from-date 2024-01-01 --to-date 2024-03-31`
(one run per month whose first day falls in the window; locally `make backfill FROM=2024-01 TO=2024-03`).
Teardown deletes the run's pool whatever happened. With `backend=aml` the same
scoring script runs as an Azure ML parallel job on a low-priority cluster, and the
same merge and publish give the same CSV.
"""


def _plan(ti) -> RunPlan:
    """The plan validate pushed (its month parsed once, back into a ``Month``)."""
    return RunPlan.from_dict(ti.xcom_pull(task_ids="validate"))


def _data_interval_start(ctx):
    """The run's data interval start; a run triggered with no logical date gets the last complete month's."""
    start = ctx.get("data_interval_start")
    if start is None:
        start = ctx["dag"].timetable.infer_manual_data_interval(run_after=ctx["dag_run"].run_after).start
    return start


def plan_value(field: str) -> str:
    """A template for one field of the validated run plan (rendered natively: ints stay ints)."""
    return "{{ ti.xcom_pull(task_ids='validate')['%s'] }}" % field


with DAG(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable(CONFIG.schedule_cron, timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=3,
    doc_md=DOC,
    tags=list(CONFIG.tags),
    default_args={
        "owner": CONFIG.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
    params={
        # Optional (null or a string): the UI's Trigger form submits an empty field as null, so the
        # default is triggerable; a string must still be YYYY-MM (the form names the param otherwise).
        "month": Param(None, type=["null", "string"], pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                       title="month",
                       description="Month to process, YYYY-MM. Empty: the run's data interval (the month before the run's date)."),
        "backend": Param("batch", enum=list(BACKENDS), description="Where to score: Azure Batch or Azure ML."),
        "shard_size": Param(CONFIG.shard_size, type="integer", minimum=1, description="Images per Batch task."),
        "dedicated_nodes": Param(CONFIG.dedicated_nodes, type="integer", minimum=0),
        "spot_nodes": Param(CONFIG.spot_nodes, type="integer", minimum=0),
        "conf": Param(CONFIG.conf, type="number", exclusiveMinimum=0, maximum=1, description="Detection confidence threshold."),
        "imgsz": Param(CONFIG.imgsz, type="integer", minimum=32),
        "batch_size": Param(CONFIG.batch_size, type="integer", minimum=1),
        "weights": Param(CONFIG.weights, type="string", description="Weights on the Airflow worker, uploaded for the run: a .pt file, or an "
                         "OpenVINO export folder (*_openvino_model, CPU pools); else an Ultralytics model name."),
        "error_threshold": Param(CONFIG.error_threshold, type="string",
                                 description="Failed shards allowed: 0, a count, -1 for any, or a share like '5%'."),
    },
    render_template_as_native_obj=True,
) as dag:

    @task
    def validate() -> dict:
        """Check every param and derive the run's ids before anything touches Azure."""
        ctx = get_current_context()
        try:
            return tasks.validate(dict(ctx["params"]), dag_id=ctx["dag"].dag_id, run_id=ctx["run_id"],
                                  data_interval_start=_data_interval_start(ctx), config=CONFIG)
        except ValueError as err:  # a bad param or a missing connection stays bad: no retry
            raise AirflowFailException(str(err)) from None

    @task
    def stage() -> dict:
        """List the month's images into shard manifests and upload the run's weights (Batch tasks get score.pyz from build_tasks, Azure ML the code folder from submit)."""
        return tasks.stage(CONFIG, _plan(get_current_context()["ti"]))

    @task.branch
    def choose_path(staged: dict) -> str:
        """The chosen backend; an empty month skips compute entirely and publishes an empty result."""
        return tasks.choose_path(staged, _plan(get_current_context()["ti"]).backend)

    @task
    def build_tasks(staged: dict) -> dict:
        """Describe one Batch task per shard into the run's work folder; XCom gets the blob and the count.

        It runs beside the pool's start-up, so it is not behind the branch; it skips itself
        where the branch adds no Batch tasks (Azure ML, an empty month).
        """
        plan = _plan(get_current_context()["ti"])
        if not tasks.needs_batch_tasks(staged, plan.backend):
            raise AirflowSkipException(f"backend {plan.backend} with {staged['stage']['image_count']} images: "
                                       "no Batch tasks to describe")
        return tasks.build_tasks(CONFIG, plan, staged)

    @task
    def shard_aml_output(staged: dict) -> dict:
        """Route Azure ML's appended rows to the staged shards, so both backends share one merge."""
        location = get_current_context()["ti"].xcom_pull(task_ids="submit", key="predictions")
        return tasks.shard_aml_output(CONFIG, staged, location)

    @task(trigger_rule="none_failed_min_one_success")
    def merge(staged: dict) -> dict:
        """Stream the shard CSVs into one predictions.csv, accounting for every staged image."""
        waited = get_current_context()["ti"].xcom_pull(task_ids="wait") or {}
        return tasks.merge(CONFIG, staged, waited.get("failed_tasks") or {})

    @task
    def record_nodes() -> dict | None:
        """Read the pool's node records (spot or dedicated, allocation time) before teardown deletes the pool."""
        return tasks.record_nodes(CONFIG, _plan(get_current_context()["ti"]))

    @task(outlets=[PREDICTIONS], trigger_rule="none_failed_min_one_success")
    def publish(staged: dict, merged: dict) -> dict:
        """Publish predictions.csv and .parquet atomically, then report.html and summary.json beside them."""
        ctx = get_current_context()
        ti = ctx["ti"]
        written = tasks.publish(CONFIG, _plan(ti), staged, merged, node_records=ti.xcom_pull(task_ids="record_nodes"),
                                aml_job_name=ti.xcom_pull(task_ids="submit"))
        MonthlyReportLink.persist(ctx, written["report"]["url"])
        ctx["outlet_events"][PREDICTIONS].extra = tasks.asset_extra(CONFIG, written)
        return written

    validated = validate()
    staged = stage()
    validated >> staged
    branch = choose_path(staged)

    ensure_pool = AzureBatchEnsurePoolOperator(
        task_id="ensure_pool",
        pool_id=plan_value("pool_id"),
        vm_size=CONFIG.vm_size,
        target_dedicated_nodes=plan_value("dedicated_nodes"),
        target_low_priority_nodes=plan_value("spot_nodes"),
        task_slots_per_node=CONFIG.task_slots_per_node,
        container_image=CONFIG.container_image if CONFIG.scoring_runtime == "container" else None,
        container_registry_conn_id=CONFIG.container_registry_conn_id or None,
        start_task_command=(START_TASK or {}).get("command_line"),
        start_task_elevated=bool((START_TASK or {}).get("elevated")),
        wait_for_nodes=False,  # waiting is its own step, so teardown runs even when nodes fail
        poll_interval=CONFIG.poll_interval_s,
        deferrable=True,  # a reused pool still resizing is waited for in the triggerer
        azure_batch_conn_id=CONFIG.azure_batch_conn_id,
    )
    nodes_ready = AzureBatchPoolReadySensor(
        task_id="nodes_ready",
        pool_id=plan_value("pool_id"),
        min_ready_nodes=1,
        poke_interval=CONFIG.poll_interval_s,
        timeout=CONFIG.node_wait_timeout_s,
        deferrable=True,
        azure_batch_conn_id=CONFIG.azure_batch_conn_id,
    )
    create_job = AzureBatchCreateJobOperator(
        task_id="create_job",
        job_id=plan_value("job_id"),
        pool_id=plan_value("pool_id"),
        max_task_retry_count=CONFIG.max_task_retry_count,
        max_wall_clock_time=timedelta(seconds=CONFIG.job_timeout_s),
        metadata={"month": plan_value("month"), "dag_id": DAG_ID},
        azure_batch_conn_id=CONFIG.azure_batch_conn_id,
    )
    add_tasks = AzureBatchAddTasksOperator(
        task_id="add_tasks",
        job_id=plan_value("job_id"),
        tasks_blob=build_tasks(staged),
        sas_expiry=timedelta(seconds=CONFIG.job_timeout_s),
        max_task_retry_count=CONFIG.max_task_retry_count,
        max_wall_clock_time=timedelta(seconds=CONFIG.task_timeout_s),
        azure_batch_conn_id=CONFIG.azure_batch_conn_id,
        wasb_conn_id=CONFIG.wasb_conn_id,
    )
    wait = AzureBatchJobSensor(
        task_id="wait",
        job_id=plan_value("job_id"),
        expected_tasks="{{ ti.xcom_pull(task_ids='add_tasks')['task_count'] }}",
        error_threshold=plan_value("error_threshold"),
        poke_interval=CONFIG.poll_interval_s,
        timeout=CONFIG.job_timeout_s,
        deferrable=True,
        azure_batch_conn_id=CONFIG.azure_batch_conn_id,
    )
    ensure_compute = AzureMLEnsureComputeOperator(
        task_id="ensure_compute",
        compute_name=CONFIG.aml_compute,
        size=CONFIG.vm_size,
        tier=plan_value("aml_tier"),
        min_instances=0,
        max_instances=plan_value("node_count"),
        azure_ml_conn_id=CONFIG.azure_ml_conn_id,
    )
    submit = AzureMLSubmitPipelineJobOperator(
        task_id="submit",
        input_datastore=CONFIG.aml_images_datastore,
        input_path="{{ ti.xcom_pull(task_ids='stage')['stage']['source_prefix'] }}",
        compute="{{ ti.xcom_pull(task_ids='ensure_compute') }}",
        code_dir=str(SCORING_DIR),
        entry_script="score.py",
        # The Environment is built when the task runs: azure.ai.ml stays out of DAG parsing.
        image=CONFIG.aml_image,
        conda_file=str(CONDA_FILE),
        program_arguments=(
            "--root {% raw %}${{inputs.images}}{% endraw %}"  # Azure ML's own expression, not Jinja
            " --conf {{ ti.xcom_pull(task_ids='validate')['conf'] }}"
            " --imgsz {{ ti.xcom_pull(task_ids='validate')['imgsz'] }}"
            " --batch-size {{ ti.xcom_pull(task_ids='validate')['batch_size'] }}"
        ),
        # The run's copy of the weights, through the datastore of the work container.
        weights="{{ ti.xcom_pull(task_ids='stage')['weights_uri'] }}",  # None: the nodes load the model by name
        mini_batch_size=plan_value("shard_size"),
        instance_count=plan_value("node_count"),
        max_concurrency_per_instance=CONFIG.aml_max_concurrency_per_instance,
        error_threshold=-1,  # failed files become error rows; the merge accounts for every image
        mini_batch_error_threshold=-1,
        output_datastore=CONFIG.aml_work_datastore,
        output_path="{{ ti.xcom_pull(task_ids='stage')['work_prefix'] }}aml/",
        month=plan_value("month"),
        job_name=plan_value("job_id"),  # the Batch job id's rule (include/monthly/layout.py)
        deferrable=True,
        poll_interval=CONFIG.poll_interval_s,
        timeout=CONFIG.job_timeout_s,
        azure_ml_conn_id=CONFIG.azure_ml_conn_id,
    )
    aml_rows = shard_aml_output(staged)
    merged = merge(staged)
    published = publish(staged, merged)
    published.operator.operator_extra_links = (MonthlyReportLink(),)  # the report's button on the publish task
    nodes = record_nodes()
    teardown = AzureBatchTeardownOperator(
        task_id="teardown",
        pool_id=plan_value("pool_id"),
        job_id=plan_value("job_id"),
        pool_action=CONFIG.pool_teardown,
        poll_interval=CONFIG.poll_interval_s,
        deferrable=True,
        azure_batch_conn_id=CONFIG.azure_batch_conn_id,
    )

    branch >> [ensure_pool, ensure_compute, merged]
    ensure_compute >> submit >> aml_rows >> merged
    ensure_pool >> nodes_ready >> create_job >> add_tasks >> wait >> merged >> published
    ensure_pool >> teardown.as_teardown(setups=ensure_pool)
    wait >> teardown
    wait >> nodes >> [teardown, published]
