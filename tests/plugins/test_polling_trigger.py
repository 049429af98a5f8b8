"""The rules every wait shares (``triggers/base.py``), driven by the Batch job trigger against the local Batch service.

Faults are injected into the service (``/_emulator/faults``). The SDK's own retry policy is
switched off for these waits (``retry_total=0``), so that each injected answer reaches the
trigger: in production the SDK absorbs short blips first, and what is left reaches these rules.
"""
from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from contextlib import asynccontextmanager

import pytest
from azure.batch import models as batch_models
from azure.core.credentials import AzureNamedKeyCredential

from azure_compute.triggers.aml import AzureMLJobTrigger
from azure_compute.triggers.base import AzurePollingTrigger
from azure_compute.triggers.batch import AzureBatchJobTrigger, AzureBatchPoolNodesTrigger, AzureBatchPoolSettledTrigger


class JobTriggerWithoutSdkRetries(AzureBatchJobTrigger):
    """The Batch job trigger, talking through a client that retries nothing itself."""

    service = None  # the LocalBatch under test, set by the fixture

    @asynccontextmanager
    async def session(self):
        from azure.batch.aio import BatchClient

        service = type(self).service
        client = BatchClient(endpoint=service.url, credential=AzureNamedKeyCredential(service.account, service.key),
                             retry_total=0)
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture()
def job_id(local_batch, batch_connections):
    suffix = uuid.uuid4().hex[:8]
    client = local_batch.client()
    client.create_pool(batch_models.BatchPoolCreateOptions(id=f"pool-{suffix}", vm_size="standard_d2s_v3"))
    client.create_job(batch_models.BatchJobCreateOptions(
        id=f"job-{suffix}", pool_info=batch_models.BatchPoolInfo(pool_id=f"pool-{suffix}")))
    JobTriggerWithoutSdkRetries.service = local_batch
    local_batch.emulator("DELETE", "/_emulator/faults")
    local_batch.emulator("DELETE", "/_emulator/requests")
    yield f"job-{suffix}"
    local_batch.emulator("DELETE", "/_emulator/faults")


def _fault(local_batch, job_id: str, status: int, count: int) -> None:
    local_batch.emulator("POST", "/_emulator/faults", {"kind": "http", "method": "GET",
                                                       "path": f"/jobs/{job_id}/taskcounts$",
                                                       "status": status, "count": count})


def _count_polls(local_batch) -> int:
    return local_batch.emulator("GET", "/_emulator/requests").get("Job_GetTaskCounts", 0)


def _wait(trigger: AzurePollingTrigger) -> dict:
    return asyncio.run(trigger.first_event())


def test_transient_errors_within_the_budget_do_not_end_the_wait(local_batch, job_id):
    tolerated = AzureBatchJobTrigger.transient_errors_tolerated
    _fault(local_batch, job_id, 503, tolerated)
    event = _wait(JobTriggerWithoutSdkRetries(job_id, 0, "azure_batch_default", 0.05, time.time() + 60))
    assert event["status"] == "success" and event["job_id"] == job_id, event
    assert _count_polls(local_batch) == tolerated + 1


def test_one_transient_error_more_than_the_budget_ends_the_wait_with_an_error(local_batch, job_id):
    tolerated = AzureBatchJobTrigger.transient_errors_tolerated
    _fault(local_batch, job_id, 503, tolerated + 5)
    event = _wait(JobTriggerWithoutSdkRetries(job_id, 0, "azure_batch_default", 0.05, time.time() + 60))
    assert event["status"] == "error" and "HttpResponseError" in event["message"], event
    assert _count_polls(local_batch) == tolerated + 1


def test_a_refused_request_is_final_at_the_first_answer(local_batch, job_id):
    _fault(local_batch, job_id, 403, 1)
    event = _wait(JobTriggerWithoutSdkRetries(job_id, 0, "azure_batch_default", 0.05, time.time() + 60))
    assert event["status"] == "error" and event["job_id"] == job_id, event
    assert _count_polls(local_batch) == 1


def test_the_deadline_ends_a_wait_that_never_finishes_with_what_it_saw(local_batch, job_id):
    # One task expected, none ever added: the job is never done.
    event = _wait(JobTriggerWithoutSdkRetries(job_id, 1, "azure_batch_default", 0.1, time.time() + 1))
    assert event["status"] == "timeout" and "did not finish before the wait's timeout" in event["message"], event
    assert event["counts"]["active"] == 0 and event["counts"]["succeeded"] == 0


@pytest.mark.parametrize("trigger", [
    AzureBatchJobTrigger("job-1", 3, "azure_batch_x", 5, 1_900_000_000.0, started_at=1_800_000_000.0, done_at_start=2),
    AzureBatchPoolNodesTrigger("pool-1", 2, "azure_batch_x", 5, None),
    AzureBatchPoolSettledTrigger("pool-1", "zero", "azure_batch_x", 5, 1_900_000_000.0),
    AzureMLJobTrigger("aml-job", "azure_ml_x", 5, 1_900_000_000.0),
], ids=lambda t: type(t).__name__)
def test_a_trigger_serializes_to_its_own_importable_class_and_back(trigger):
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert cls is type(trigger) and module.startswith("azure_compute.triggers.")
    assert cls(**kwargs).serialize() == (classpath, kwargs)


def test_an_azure_ml_trigger_serialized_with_timeout_and_start_keeps_its_deadline():
    """What an earlier version stored for a deferred wait (``timeout`` counted from ``started_at``)."""
    trigger = AzureMLJobTrigger(job_name="aml-job", azure_ml_conn_id="azure_ml_x", poll_interval=5,
                                timeout=600, started_at=1_800_000_000.0)
    assert trigger.end_time == 1_800_000_600.0
