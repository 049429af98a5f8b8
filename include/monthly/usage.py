"""Node time and cost of a month: from Batch's task and node records, or Azure ML's job record.

Azure bills a VM for the time it is allocated, whether a task runs on it or
not, so the cost counts each node from its ``allocationTime`` to when the job
was done (the teardown that follows takes seconds). The node records must be
read while the pool exists (teardown deletes it): the DAG reads them right
after the wait. Task records stay with the job, so shard durations and the
images each node scored are read at publish. Prices come from the settings'
table (``DagConfig.price_table``); a VM size without a price gives a cost of
``None`` (named in the summary), never a made-up figure.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

SPOT, DEDICATED = "spot", "dedicated"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def batch_node_records(pool_nodes: Iterable[Any], pool_id: str) -> dict[str, Any]:
    """The pool's nodes as Batch lists them now (``BatchHook.pool_nodes``: id, spot or dedicated,
    allocation time), JSON-safe."""
    now = dt.datetime.now(dt.timezone.utc)
    nodes = []
    for node in pool_nodes:
        nodes.append({
            "node_id": node.id,
            "priority": DEDICATED if node.is_dedicated else SPOT,
            "allocation_time": _iso(node.allocation_time),
            "state": str(getattr(node.state, "value", node.state)),
        })
    return {"pool_id": pool_id, "recorded_at": now.isoformat(), "nodes": nodes}


def batch_shard_records(job_tasks: Iterable[Any], images_per_shard: dict[str, int]) -> list[dict[str, Any]]:
    """One record per task (shard): the node it ran on, its duration and images, from the job's
    task list (``BatchHook.job_tasks``)."""
    shards = []
    for task in job_tasks:
        info, node = task.execution_info, task.node_info
        seconds = None
        if info and info.start_time and info.end_time:
            seconds = (info.end_time - info.start_time).total_seconds()
        shards.append({
            "shard": task.id,
            "node_id": node.node_id if node else None,
            "pool_id": node.pool_id if node else None,
            "start_time": _iso(info.start_time if info else None),
            "seconds": round(seconds, 3) if seconds is not None else None,
            "images": images_per_shard.get(task.id, 0),
            "exit_code": info.exit_code if info else None,
            "retries": info.retry_count if info else 0,
            "requeues": getattr(info, "requeue_count", 0) if info else 0,
        })
    return sorted(shards, key=lambda s: s["shard"])


def batch_usage(
    node_records: dict[str, Any] | None,
    shards: list[dict[str, Any]],
    *,
    vm_size: str,
    prices: dict[str, dict[str, float]],
    currency: str,
    default_priority: str,
) -> dict[str, Any]:
    """Per node: allocated and busy seconds, tasks and images; per priority: node seconds; and the cost.

    Without node records (the pool was already gone), a node counts for its busy
    time only, at ``default_priority``: the summary says which basis was used.
    """
    per_node: dict[str, dict[str, Any]] = {}
    end = _parse((node_records or {}).get("recorded_at"))
    for record in (node_records or {}).get("nodes", []):
        start = _parse(record.get("allocation_time"))
        allocated = max(0.0, (end - start).total_seconds()) if start and end else 0.0
        per_node[record["node_id"]] = {"node_id": record["node_id"], "priority": record["priority"],
                                       "allocated_seconds": round(allocated, 3), "busy_seconds": 0.0,
                                       "tasks": 0, "images": 0}
    for shard in shards:
        node_id = shard.get("node_id")
        if not node_id:
            continue
        node = per_node.setdefault(node_id, {"node_id": node_id, "priority": default_priority,
                                             "allocated_seconds": None, "busy_seconds": 0.0, "tasks": 0, "images": 0})
        node["busy_seconds"] = round(node["busy_seconds"] + (shard.get("seconds") or 0.0), 3)
        node["tasks"] += 1
        node["images"] += shard.get("images", 0)
    for node in per_node.values():
        node["images_per_second"] = round(node["images"] / node["busy_seconds"], 3) if node["busy_seconds"] else None
    basis = "node allocation (Batch node records)" if node_records else "task run time (no node records)"
    node_seconds = {SPOT: 0.0, DEDICATED: 0.0}
    for node in per_node.values():
        billed = node["allocated_seconds"] if node["allocated_seconds"] is not None else node["busy_seconds"]
        node_seconds[node["priority"]] += billed
    return {
        "backend": "batch",
        "vm_size": vm_size,
        "pool_id": (node_records or {}).get("pool_id"),
        "basis": basis,
        "nodes": sorted(per_node.values(), key=lambda n: n["node_id"]),
        **cost(node_seconds, vm_size=vm_size, prices=prices, currency=currency),
    }


def aml_usage(
    job: dict[str, Any] | None,
    *,
    vm_size: str,
    tier: str,
    instance_count: int,
    prices: dict[str, dict[str, float]],
    currency: str,
) -> dict[str, Any]:
    """Node time of an Azure ML parallel job: its instances times the job's run time (start to end).

    ``job`` holds ``start_time``/``end_time`` (ISO-8601) from the job's run-history
    record. An upper bound rather than a measure: instances may join after the start,
    and the cluster holds nodes a little longer (idle time before scale-down).
    """
    start, end = _parse((job or {}).get("start_time")), _parse((job or {}).get("end_time"))
    seconds = max(0.0, (end - start).total_seconds()) * instance_count if start and end else 0.0
    priority = SPOT if tier == "low_priority" else DEDICATED
    node_seconds = {SPOT: 0.0, DEDICATED: 0.0}
    node_seconds[priority] = seconds
    usage = {
        "backend": "aml", "vm_size": vm_size, "instance_count": instance_count,
        "basis": ("job run time x instances (Azure ML run history)" if seconds
                  else "unknown: no run times in Azure ML's run history for this job"),
        "nodes": [], **cost(node_seconds, vm_size=vm_size, prices=prices, currency=currency),
    }
    if not seconds:  # unknown is not free
        usage["cost"] = None
        usage["cost_missing_prices"] = ["Azure ML node time (no run times recorded)"]
    return usage


def cost(node_seconds: dict[str, float], *, vm_size: str, prices: dict[str, dict[str, float]],
         currency: str) -> dict[str, Any]:
    """Node seconds per priority priced per hour; ``cost`` is None when a used priority has no price."""
    table = prices.get(vm_size, {})
    missing = [kind for kind, seconds in node_seconds.items() if seconds and kind not in table]
    total = None if missing else round(sum(s / 3600 * table.get(k, 0.0) for k, s in node_seconds.items()), 6)
    return {
        "node_seconds": {k: round(v, 3) for k, v in node_seconds.items()},
        "node_time_seconds": round(sum(node_seconds.values()), 3),
        "price_per_hour": {k: table[k] for k in (SPOT, DEDICATED) if k in table},
        "currency": currency,
        "cost": total,
        "cost_missing_prices": [f"{vm_size} {kind}" for kind in missing],
    }
