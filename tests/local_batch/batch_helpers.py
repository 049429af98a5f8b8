"""Helpers for the local Batch service tests: unique ids, pools/jobs, waiting on real state."""
from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable

from azure.batch import BatchClient, models

_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


def wait_until(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """Poll condition() until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_tasks(client: BatchClient, job_id: str, total: int, timeout: float = 120.0) -> models.BatchTaskCounts:
    """Wait until `total` tasks of the job are completed; return the counts."""
    def done():
        counts = client.get_job_task_counts(job_id).task_counts
        return counts if counts.completed >= total else None

    return wait_until(done, timeout, 0.2, f"{total} completed tasks in {job_id}")


def make_pool(client: BatchClient, nodes: int = 1, slots: int = 2, start_task: models.BatchStartTask | None = None,
              low_priority: int = 0) -> str:
    pool_id = unique("pool")
    client.create_pool(models.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=nodes, target_low_priority_nodes=low_priority,
        task_slots_per_node=slots, start_task=start_task,
    ))
    return pool_id


def make_job(client: BatchClient, pool_id: str, **kwargs) -> str:
    job_id = unique("job")
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool_id), **kwargs))
    return job_id


def read_file(client: BatchClient, job_id: str, task_id: str, name: str) -> str:
    return b"".join(client.download_task_file(job_id, task_id, name)).decode()
