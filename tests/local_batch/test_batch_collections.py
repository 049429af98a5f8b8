"""Add task collection limits, per-task results, and OData paging/filtering through the SDK's pager."""
from __future__ import annotations

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError

from batch_helpers import make_job, wait_for_tasks


def _tasks(n: int, prefix: str = "t", command: str = "true") -> list[models.BatchTaskCreateOptions]:
    return [models.BatchTaskCreateOptions(id=f"{prefix}{i:04d}", command_line=command) for i in range(n)]


def _count(local_batch, operation: str) -> int:
    return local_batch.emulator("GET", "requests").get(operation, 0)


def test_250_tasks_are_added_in_chunks_of_at_most_100_and_filtered_listing_pages_through_them(batch, pool, local_batch):
    job_id = make_job(batch, pool)
    adds_before = _count(local_batch, "Task_AddCollection")
    result = batch.create_tasks(job_id, _tasks(250))
    assert len(result.result_values) == 250
    assert {r.status for r in result.result_values} == {"Success"}  # as real Batch writes it
    assert _count(local_batch, "Task_AddCollection") - adds_before == 3

    counts = wait_for_tasks(batch, job_id, 250)
    assert counts.succeeded == 250

    lists_before = _count(local_batch, "Task_List")
    listed = list(batch.list_tasks(job_id, filter="state eq 'completed' and executionInfo/result eq 'success'",
                                   max_results=60, select=["id", "state"]))
    assert _count(local_batch, "Task_List") - lists_before == 5, "250 results at 60 a page follow 4 nextLinks"
    assert sorted(t.id for t in listed) == [f"t{i:04d}" for i in range(250)]
    assert {t.state for t in listed} == {"completed"}
    assert all(t.command_line is None for t in listed), "$select keeps only the fields asked for"

    assert list(batch.list_tasks(job_id, filter="state eq 'active'")) == []
    prefixed = list(batch.list_tasks(job_id, filter="startswith(id, 't001')"))
    assert sorted(t.id for t in prefixed) == [f"t{i:04d}" for i in range(10, 20)]


def test_collection_over_100_tasks_is_rejected_and_nothing_is_added(batch, pool):
    job_id = make_job(batch, pool)
    with pytest.raises(HttpResponseError) as err:
        batch.create_task_collection(job_id, models.BatchTaskGroup(task_values=_tasks(101)))
    assert err.value.status_code == 400
    assert err.value.error.code == "InvalidPropertyValue"
    assert list(batch.list_tasks(job_id)) == []


def test_body_over_1mb_gets_request_body_too_large_and_the_sdk_helper_splits(batch, pool):
    job_id = make_job(batch, pool)
    big = "x" * 20_000
    tasks = [models.BatchTaskCreateOptions(id=f"big{i:03d}", command_line="true",
                                           environment_settings=[models.NameValuePair(name="PAD", value=big)])
             for i in range(60)]
    with pytest.raises(HttpResponseError) as err:
        batch.create_task_collection(job_id, models.BatchTaskGroup(task_values=tasks))
    assert (err.value.status_code, err.value.error.code) == (413, "RequestBodyTooLarge")
    result = batch.create_tasks(job_id, tasks)
    assert sorted(r.task_id for r in result.result_values if r.status == "Success") == sorted(t.id for t in tasks)


def test_duplicate_ids_get_task_exists_per_task_and_the_rest_are_added(batch, pool):
    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="t0001", command_line="true"))
    result = batch.create_task_collection(job_id, models.BatchTaskGroup(task_values=_tasks(3)))
    by_id = {r.task_id: r for r in result.result_values}
    assert by_id["t0001"].status == "clienterror"
    assert by_id["t0001"].error.code == "TaskExists"
    assert by_id["t0000"].status == by_id["t0002"].status == "Success"
    assert by_id["t0000"].location.endswith(f"/jobs/{job_id}/tasks/t0000")
    # re-adding the same shard set is idempotent for callers that treat TaskExists as done
    again = batch.create_tasks(job_id, _tasks(3))
    assert {r.task_id for r in again.result_values} == {"t0000", "t0001", "t0002"}


def test_invalid_filter_is_a_400_naming_the_query_parameter(batch, pool):
    job_id = make_job(batch, pool)
    with pytest.raises(HttpResponseError) as err:
        list(batch.list_tasks(job_id, filter="state equals 'x'"))
    assert err.value.status_code == 400
    assert err.value.error.code == "InvalidQueryParameterValue"


def test_malformed_task_in_a_collection_is_a_client_error_not_a_crash(local_batch, batch, pool):
    from azure.core.rest import HttpRequest

    job_id = make_job(batch, pool)
    request = HttpRequest("POST", f"{local_batch.url}/jobs/{job_id}/addtaskcollection",
                          params={"api-version": "2025-06-01"},
                          json={"value": [42, {"id": "ok", "commandLine": "true"}, {"id": "nocmd"}]})
    response = batch.send_request(request)
    assert response.status_code == 200
    results = {r.get("taskId"): r for r in response.json()["value"]}
    assert results[None]["error"]["code"] == "InvalidPropertyValue"
    assert results["ok"]["status"] == "Success"
    assert results["nocmd"]["error"]["code"] == "MissingRequiredProperty"
