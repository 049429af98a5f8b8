"""The month's summary.json: what was scored, what came out, and what it cost."""
from __future__ import annotations

from typing import Any

from include.monthly.merge import MergeReport
from include.monthly.schema import STATUS_ERROR
from include.monthly.staging import StageResult


def outcome(stage: StageResult, report: MergeReport) -> str:
    """A one-word verdict a person can read first: no-images, complete, or complete-with-errors."""
    if stage.image_count == 0:
        return "no-images"
    if report.status_counts.get(STATUS_ERROR, 0) or report.failed_shards:
        return "complete-with-errors"
    return "complete"


def build_summary(
    stage: StageResult,
    report: MergeReport,
    *,
    run_id: str,
    node_time_seconds: float,
    wall_time_seconds: float,
    compute: dict[str, Any] | None = None,
    shard_records: list[dict[str, Any]] | None = None,
    per_day: list[dict[str, Any]] | None = None,
    day_basis: str | None = None,
) -> dict[str, Any]:
    """The summary of one month's run (publish adds `published_at` and the CSV's digest).

    `node_time_seconds` is the compute time the backend charged (sum over
    tasks); `wall_time_seconds` is the run's elapsed time. Both come from the caller.
    `compute` (node time per priority, prices, cost: include.monthly.usage),
    `shard_records` (each shard's node and duration) and `per_day` (images and
    detections per day, by `day_basis`) feed the report.
    """
    if report.images != stage.image_count:
        raise ValueError(
            f"merge report has {report.images} image(s) but staging recorded {stage.image_count}"
        )
    return {
        "month": str(stage.month),
        "outcome": outcome(stage, report),
        "source": {"container": stage.source_container, "prefix": stage.source_prefix},
        "run_id": run_id,
        "run_key": stage.run_key,
        "images": report.images,
        "rows": report.rows,
        "detections": sum(report.detections_per_class.values()),
        "detections_per_class": dict(report.detections_per_class),
        "status_counts": dict(report.status_counts),
        "errors": report.status_counts.get(STATUS_ERROR, 0),
        "skipped": {
            "count": stage.skipped_count,
            "first": [{"name": item.name, "reason": item.reason} for item in stage.skipped],
        },
        "shards": report.shards,
        "shard_size": stage.shard_size,
        "failed_shards": dict(report.failed_shards),
        "node_time_seconds": round(float(node_time_seconds), 3),
        "wall_time_seconds": round(float(wall_time_seconds), 3),
        "compute": compute or {},
        "cost": (compute or {}).get("cost"),
        "currency": (compute or {}).get("currency"),
        "shard_records": list(shard_records or []),
        "per_day": list(per_day or []),
        "day_basis": day_basis or "unknown",
    }
