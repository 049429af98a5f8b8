"""Auto pools (`poolInfo.autoPoolSpecification`) with `poolLifetimeOption: job`.

As the azure-batch 15.1 docstrings say: the service creates the pool when the job is created, with an
id it assigns (the optional `autoPoolIdPrefix`, up to 20 characters, then a unique part), and deletes
it when the job completes (or is deleted) unless `keepAlive` is true. The job's
`executionInfo.poolId` names the pool. Job schedules (the other lifetime) are not implemented.
"""
from __future__ import annotations

import uuid

from local_stack.batch_service import job_prep
from local_stack.batch_service.errors import invalid_property


def create_for_job(engine, job_id: str, spec: dict) -> str:
    prefix = spec.get("autoPoolIdPrefix") or ""
    if len(prefix) > 20:
        raise invalid_property("poolInfo.autoPoolSpecification.autoPoolIdPrefix", prefix, "The prefix can be up to 20 characters long.")
    pool_id = f"{prefix}_{uuid.uuid4()}" if prefix else str(uuid.uuid4())
    engine.create_pool({**(spec.get("pool") or {}), "id": pool_id}, auto=True)
    return pool_id


def pool_id(job: dict) -> str | None:
    """The pool a job runs on: its own poolId, or the auto pool made for it."""
    return (job.get("poolInfo") or {}).get("poolId") or (job.get("executionInfo") or {}).get("poolId")


def reap(engine) -> None:
    """Delete auto pools whose job has completed or is gone (keepAlive pools stay). Called under the lock."""
    owners = {}
    for job in engine.jobs.values():
        if (job.get("poolInfo") or {}).get("autoPoolSpecification") and not job["poolInfo"].get("poolId"):
            owners[(job.get("executionInfo") or {}).get("poolId")] = job
    for pool in list(engine.pools.values()):
        if not pool.get("_autoPool"):
            continue
        job = owners.get(pool["id"])
        keep = job is not None and job["poolInfo"]["autoPoolSpecification"].get("keepAlive")
        if (job is None or job["state"] == "completed") and not keep and not job_prep.releasing(job):
            engine.delete_pool(pool["id"])
