"""Turn a DAG run's params into a validated plan, before anything touches Azure.

A person triggering the DAG from the UI, a backfill and the cron schedule all
go through here; a bad value fails the first task with a message naming it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from include.monthly.config import DagConfig
from include.monthly.layout import Month, job_id, parse_month, pool_id, run_key
from include.monthly.weights import WeightsRef

BACKENDS = ("batch", "aml")


@dataclass(frozen=True)
class RunPlan:
    """Everything one run needs to know, no secrets; ``as_dict`` is what XCom carries, ``from_dict`` reads it back.

    The month is parsed once, here in validate; tasks use ``plan.month`` (a ``Month``).
    """

    month: Month
    month_key: str
    backend: str
    run_id: str
    run_key: str
    job_id: str  # the Azure Batch job id and the Azure ML job name (include.monthly.layout.job_id)
    pool_id: str
    shard_size: int
    dedicated_nodes: int
    spot_nodes: int
    node_count: int
    aml_tier: str
    conf: float
    imgsz: int
    batch_size: int
    weights: str
    error_threshold: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: the month as ``YYYY-MM`` (templates read it as it is)."""
        return {**asdict(self), "month": str(self.month)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        """The plan validate returned, as a task pulls it from XCom."""
        return cls(**{**data, "month": parse_month(data["month"])})


def _int(params: dict[str, Any], name: str, minimum: int) -> int:
    value = params.get(name)
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"param {name}={value!r} is not a whole number") from None
    if number < minimum:
        raise ValueError(f"param {name}={number} must be >= {minimum}")
    return number


def resolve_month(value: Any, data_interval_start: dt.datetime | None) -> Month:
    """The month to process: the ``month`` param, else the data interval's month."""
    if value not in (None, ""):
        return parse_month(str(value))
    if data_interval_start is None:
        raise ValueError("param month is empty and the run has no data interval; give month as YYYY-MM")
    return Month.of(data_interval_start)


def plan_run(
    params: dict[str, Any],
    *,
    dag_id: str,
    run_id: str,
    data_interval_start: dt.datetime | None,
    config: DagConfig,
) -> RunPlan:
    """Validate every param and derive the run's ids (deterministic per dag, month and run)."""
    month = resolve_month(params.get("month"), data_interval_start)
    backend = str(params.get("backend") or "batch")
    if backend not in BACKENDS:
        raise ValueError(f"param backend={backend!r} must be one of {', '.join(BACKENDS)}")
    shard_size = _int(params, "shard_size", 1)
    dedicated = _int(params, "dedicated_nodes", 0)
    spot = _int(params, "spot_nodes", 0)
    if backend == "batch" and dedicated + spot == 0:
        raise ValueError("params dedicated_nodes and spot_nodes are both 0: the pool would have no node")
    if backend == "batch":
        from include.monthly.runtime import check_runtime

        check_runtime(config)  # before any pool exists: a pool without a scoring runtime fails every shard
    try:
        conf = float(params.get("conf"))
    except (TypeError, ValueError):
        raise ValueError(f"param conf={params.get('conf')!r} is not a number") from None
    if not 0 < conf <= 1:
        raise ValueError(f"param conf={conf} must be in (0, 1]")
    imgsz = _int(params, "imgsz", 32)
    if imgsz % 32:
        raise ValueError(f"param imgsz={imgsz} must be a multiple of 32")
    batch_size = _int(params, "batch_size", 1)
    weights = str(params.get("weights") or "").strip()
    if not weights:
        raise ValueError("param weights is empty")
    WeightsRef.of(weights)  # a folder that is not an OpenVINO export fails here, before anything runs
    threshold = str(params.get("error_threshold", "0"))
    from azure_compute.batch_progress import ErrorThreshold

    ErrorThreshold(threshold)
    key = run_key(run_id)
    return RunPlan(
        month=month, month_key=month.key, backend=backend, run_id=run_id, run_key=key,
        job_id=job_id(dag_id, month, run_id),
        pool_id=pool_id(config.pool_prefix, key),
        shard_size=shard_size, dedicated_nodes=dedicated, spot_nodes=spot, node_count=dedicated + spot,
        aml_tier="low_priority" if spot else "dedicated", conf=conf,
        imgsz=imgsz, batch_size=batch_size, weights=weights, error_threshold=threshold,
    )


def require_connections(*conn_ids: str) -> None:
    """Fail naming every Airflow connection the run needs that is not defined.

    Checked by the first task, so a missing connection stops the run before
    anything is staged in Blob Storage or created in Batch.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    missing = []
    for conn_id in conn_ids:
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            missing.append(repr(conn_id))
    if missing:
        raise ValueError(f"Airflow connection(s) {', '.join(missing)} not defined; add them "
                         "(Admin > Connections, or AIRFLOW_CONN_<ID> variables) before running")
