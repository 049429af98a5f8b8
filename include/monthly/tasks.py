"""What each task of the monthly DAG does, as plain functions of the pieces of context they need.

``dags/monthly_detection.py`` keeps the wiring: its ``@task`` wrappers pull the
plan and the upstream results from XCom and call one function here each. The
functions take the deployment's ``DagConfig``, the run's ``RunPlan`` and the
small dicts XCom carries, and return what the task pushes.

Airflow reaches this module only through the hooks, imported inside the
functions that call Azure (``WasbHook``, ``BatchHook``, ``AzureMLHook``), so
importing it at DAG parse time imports no Azure SDK beyond Blob Storage and
never ``azure.ai.ml``.
"""
from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient

from include.monthly.config import VM_PRICES_SOURCE, DagConfig
from include.monthly.plan import RunPlan, plan_run, require_connections
from include.monthly.staging import StageResult, load_staged
from include.monthly.weights import WeightsRef


def blob_service(config: DagConfig) -> BlobServiceClient:
    """The storage account of the ``wasb`` connection."""
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    return WasbHook(wasb_conn_id=config.wasb_conn_id).get_conn()


def staged_record(config: DagConfig, staged: dict[str, Any]) -> StageResult:
    """The stage record (shards, digests) that ``stage`` left in the run's work folder; XCom holds only its location."""
    return load_staged(blob_service(config).get_container_client(config.work_container), staged["stage"])


def validate(
    params: dict[str, Any], *, dag_id: str, run_id: str, data_interval_start: datetime | None, config: DagConfig,
) -> dict[str, Any]:
    """Check every param and the connections the backend needs, and derive the run's ids: the plan, for XCom.

    A bad param or a missing connection is a ValueError naming it (the DAG fails the task without retrying).
    """
    plan = plan_run(params, dag_id=dag_id, run_id=run_id, data_interval_start=data_interval_start, config=config)
    require_connections(config.wasb_conn_id,
                        config.azure_ml_conn_id if plan.backend == "aml" else config.azure_batch_conn_id,
                        *([config.container_registry_conn_id]
                          if plan.backend == "batch" and config.container_registry_conn_id else []))
    print(f"month {plan.month}: job {plan.job_id}, pool {plan.pool_id}, run key {plan.run_key}")
    return plan.as_dict()


def stage(config: DagConfig, plan: RunPlan) -> dict[str, Any]:
    """List the month's images into shard manifests and upload the run's weights.

    Batch tasks get the scoring zipapp from ``build_tasks``; Azure ML gets the
    code folder from ``submit``.

    The record and the manifests stay in Blob; the result (for XCom) is their
    location and counts, small for any month, and the staged weights (their blob,
    and their Azure ML URI on the work container's datastore).
    """
    from include.monthly.staging import stage_month

    service = blob_service(config)
    work = service.get_container_client(config.work_container)
    result = stage_month(service.get_container_client(config.input_container), work,
                         plan.month, plan.run_key, plan.shard_size)
    paths = result.paths
    weights = WeightsRef.of(plan.weights).stage(work, paths)
    print(f"staged {result.image_count} images of {plan.month} in {len(result.shards)} shards; "
          f"{result.skipped_count} other files skipped")
    return {"stage": result.reference(), "weights_blob": weights.blob,
            "weights_uri": weights.aml_uri(config.aml_work_datastore),
            "work_prefix": paths.prefix, "started_at": time.time()}


def _first_task(staged: dict[str, Any], backend: str) -> str:
    """The first task of the chosen backend; an empty month skips compute and goes straight to the merge."""
    if staged["stage"]["image_count"] == 0:
        return "merge"
    return "ensure_compute" if backend == "aml" else "ensure_pool"


def choose_path(staged: dict[str, Any], backend: str) -> str:
    """The branch's choice (``_first_task``), saying so when the month is empty."""
    first = _first_task(staged, backend)
    if first == "merge":
        print("no images in this month's folder: publishing an empty result, no compute is started")
    return first


def needs_batch_tasks(staged: dict[str, Any], backend: str) -> bool:
    """Whether the run adds Batch tasks: the branch goes to the pool."""
    return _first_task(staged, backend) == "ensure_pool"


def build_tasks(config: DagConfig, plan: RunPlan, staged: dict[str, Any]) -> dict[str, Any]:
    """Describe one Batch task per shard into the run's work folder; the blob and the count, for XCom."""
    from include.monthly.scoring_tasks import scoring_task_specs, write_task_specs

    service = blob_service(config)
    input_url = service.get_container_client(config.input_container).url
    stage_result = staged_record(config, staged)
    specs = scoring_task_specs(stage_result, plan, config, input_url, staged["weights_blob"])
    return write_task_specs(service.get_container_client(config.work_container), stage_result.paths, specs)


def shard_aml_output(config: DagConfig, staged: dict[str, Any], location: dict[str, str]) -> dict[str, int]:
    """Route Azure ML's appended rows (``location``: the submit task's ``predictions``) to the staged shards."""
    from azure_compute.hooks.aml import AzureMLHook
    from include.monthly.aml_results import appended_rows, output_container, split_into_shards

    service = blob_service(config)
    # The file is on the account its datastore points at, which need not be the wasb connection's.
    container = output_container(location, service, AzureMLHook(config.azure_ml_conn_id))
    rows = appended_rows(container, location["path"])
    report = split_into_shards(service.get_container_client(config.work_container), staged_record(config, staged), rows)
    print(f"Azure ML output routed to {len(report.rows_per_shard)} shards, {report.rows} rows; "
          f"{report.duplicate_rows} duplicate row(s) of re-run mini-batches left out")
    return report.rows_per_shard


def merge(config: DagConfig, staged: dict[str, Any], failed_tasks: dict[str, str]) -> dict[str, Any]:
    """Stream the shard CSVs into the run's merged predictions.csv, accounting for every staged image."""
    from include.monthly.merge import merge_shards

    stage_result = staged_record(config, staged)
    work = blob_service(config).get_container_client(config.work_container)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predictions.csv"
        report = merge_shards(work, stage_result, out, failed_shards=failed_tasks)
        with open(out, "rb") as fh:
            work.upload_blob(stage_result.paths.merged_predictions, fh, overwrite=True)
    print(f"merged {report.images} images, {report.rows} rows, statuses {report.status_counts}")
    return report.to_dict()


def record_nodes(config: DagConfig, plan: RunPlan) -> dict[str, Any] | None:
    """The pool's node records (spot or dedicated, allocation time), read before teardown deletes the pool.

    None when they cannot be read: the cost then falls back to task time, and the summary says so.
    """
    from azure_compute.hooks.batch import BatchHook
    from include.monthly.usage import batch_node_records

    try:
        hook = BatchHook(azure_batch_conn_id=config.azure_batch_conn_id)
        records = batch_node_records(hook.pool_nodes(plan.pool_id), plan.pool_id)
    except Exception as err:
        print(f"could not read the nodes of pool {plan.pool_id}: {err}")
        return None
    print(f"pool {plan.pool_id}: {len(records['nodes'])} node(s) recorded")
    return records


def publish(
    config: DagConfig,
    plan: RunPlan,
    staged: dict[str, Any],
    merged: dict[str, Any],
    *,
    node_records: dict[str, Any] | None,
    aml_job_name: str | None,
) -> dict[str, Any]:
    """Publish predictions.csv and .parquet atomically, then report.html and summary.json beside them.

    ``node_records`` is what ``record_nodes`` pushed (Batch), ``aml_job_name`` what
    ``submit`` pushed (Azure ML); returns the summary as written.
    """
    from include.monthly.dates import image_days, per_day
    from include.monthly.merge import MergeReport
    from include.monthly.publish import publish as publish_month
    from include.monthly.summary import build_summary

    stage_result = staged_record(config, staged)
    service = blob_service(config)
    work = service.get_container_client(config.work_container)
    compute, shard_records = compute_usage(config, plan, stage_result, node_records=node_records,
                                           aml_job_name=aml_job_name)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "predictions.csv"
        with open(local, "wb") as fh:
            work.get_blob_client(stage_result.paths.merged_predictions).download_blob().readinto(fh)
        days, day_basis = image_days(service.get_container_client(config.input_container), stage_result.month)
        summary = build_summary(
            stage_result, MergeReport(**merged), run_id=plan.run_id,
            node_time_seconds=compute["node_time_seconds"], wall_time_seconds=time.time() - staged["started_at"],
            compute=compute, shard_records=shard_records, per_day=per_day(local, days), day_basis=day_basis,
        )
        written = publish_month(service.get_container_client(config.output_container),
                                stage_result.month, local, summary)
    print(f"report: {written['report']['url']}")
    print(json.dumps({k: written[k] for k in ("month", "outcome", "images", "detections", "errors")}
                     | {"cost": compute["cost"], "currency": compute["currency"]}))
    return written


def asset_extra(config: DagConfig, written: dict[str, Any]) -> dict[str, Any]:
    """The predictions asset event's extra for a published month: its counts and where its files are."""
    return {
        "month": written["month"], "images": written["images"],
        "report": f"wasb://{config.output_container}/{written['report']['blob']}",
        "report_url": written["report"]["url"],
        "parquet": f"wasb://{config.output_container}/{written['predictions_parquet']['blob']}",
    }


def compute_usage(
    config: DagConfig,
    plan: RunPlan,
    stage_result: StageResult,
    *,
    node_records: dict[str, Any] | None,
    aml_job_name: str | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The month's node time and cost (see include.monthly.usage), and the Batch shard records."""
    from include.monthly.usage import aml_usage, batch_shard_records, batch_usage, cost

    prices, currency = config.price_table(), config.price_currency
    source = ("MONTHLY_DETECTION_VM_PRICES over the defaults: " if config.vm_prices else "") + VM_PRICES_SOURCE
    shards: list[dict[str, Any]] = []
    if not stage_result.image_count:
        compute = {"backend": plan.backend, "vm_size": config.vm_size, "basis": "no compute started", "nodes": [],
                   **cost({"spot": 0.0, "dedicated": 0.0}, vm_size=config.vm_size, prices=prices, currency=currency)}
    elif plan.backend == "batch":
        from azure_compute.hooks.batch import BatchHook

        hook = BatchHook(azure_batch_conn_id=config.azure_batch_conn_id)
        shards = batch_shard_records(hook.job_tasks(plan.job_id), {s.id: s.image_count for s in stage_result.shards})
        compute = batch_usage(node_records, shards, vm_size=config.vm_size, prices=prices,
                              currency=currency, default_priority="spot" if plan.spot_nodes else "dedicated")
    else:
        compute = aml_usage(aml_job_times(config, aml_job_name), vm_size=config.vm_size, tier=plan.aml_tier,
                            instance_count=plan.node_count, prices=prices, currency=currency)
    compute["price_source"] = source
    return compute, shards


def aml_job_times(config: DagConfig, job_name: str | None) -> dict[str, Any] | None:
    """Start and end of the Azure ML job from its run-history record (None when there is none)."""
    from azure_compute.hooks.aml import AzureMLHook

    if not job_name:
        return None
    try:
        return AzureMLHook(azure_ml_conn_id=config.azure_ml_conn_id).get_job_times(job_name)
    except Exception as err:  # no run history here: node time stays unknown, and the summary says so
        print(f"no run-history record for Azure ML job {job_name}: {type(err).__name__}: {str(err)[:200]}")
        return None
