"""How a job ends on the local Azure ML endpoint, seen through the hook and the trigger.

Failing mini batches within and beyond the thresholds, retries and run() timeouts,
a failing init(), cancel (also from on_kill), a wrong credential, and a restart of
the endpoint that keeps every job.
"""
from __future__ import annotations

import time
import uuid

from aml_helpers import read_output, submit_direct, upload_month, wait_with_trigger

from azure_compute.hooks.aml import AzureMLHook, job_status
from azure_compute.operators.aml import AzureMLSubmitPipelineJobOperator


def month(local_aml, files: dict[str, bytes]) -> str:
    prefix = f"{uuid.uuid4().hex[:8]}/202403"
    upload_month(local_aml, prefix, files)
    return prefix


def runner_log(local_aml, job_name: str) -> str:
    return (local_aml.runs_dir / job_name / "runner.log").read_text()


def test_failed_mini_batch_within_the_threshold_completes_with_the_other_rows(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"img0.jpg": b"a", "img1.jpg": b"bb", "bad0.jpg": b"c"})
    name = submit_direct(hook, toy_code, prefix, mini_batch_size=1, mini_batch_error_threshold=1, max_retries=2)
    event = wait_with_trigger(aml_conn_id, name)
    assert event["status"] == "success", event
    assert event["job_status"] == "Completed"
    assert sorted(r["image"] for r in read_output(local_aml, name)) == ["img0.jpg", "img1.jpg"]
    log = runner_log(local_aml, name)
    assert "try 1 failed" in log and "try 2 failed" in log and "try 3 failed" not in log  # max_retries=2 tries


def test_failed_mini_batch_beyond_the_threshold_fails_the_job_naming_it(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"img0.jpg": b"a", "bad0.jpg": b"c"})
    name = submit_direct(hook, toy_code, prefix, mini_batch_size=1, mini_batch_error_threshold=0, max_retries=1)
    event = wait_with_trigger(aml_conn_id, name)
    assert event["status"] == "failure"
    assert event["job_status"] == "Failed"
    assert "bad0.jpg" in event["message"] and "ValueError: cannot score bad0.jpg" in event["message"]
    assert "mini_batch_error_threshold=0" in event["message"]
    assert event["studio_url"].startswith("https://ml.azure.com/runs/" + name)
    # The error comes from run history (what a workspace offers), not from a property only our endpoint sets.
    assert hook.get_job_error(name) in event["message"]
    assert "azureml.error" not in (hook.get_job(name).properties or {})


def test_odd_file_names_reach_run_as_plain_paths(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    names = ["a b.jpg", "ünïcode.jpg", "$(touch pwned).jpg", "q'uote;`x`.jpg", "-dash.jpg", "deep/er/x.jpg"]
    prefix = month(local_aml, {name: b"z" for name in names})
    name = submit_direct(hook, toy_code, prefix, mini_batch_size=4)
    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed"
    assert sorted(r["image"] for r in read_output(local_aml, name)) == sorted(n.rsplit("/", 1)[-1] for n in names)
    assert not any(local_aml.runs_dir.glob(f"{name}/**/pwned"))  # no name ever went through a shell


def test_failed_files_beyond_error_threshold_fail_the_job(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"bad0.jpg": b"a", "bad1.jpg": b"b", "img0.jpg": b"c"})
    # Mini batches of 2: [bad0, bad1] fails as a whole -> 2 failed files > error_threshold=1.
    name = submit_direct(hook, toy_code, prefix, mini_batch_size=2, error_threshold=1, max_retries=1)
    event = wait_with_trigger(aml_conn_id, name)
    assert event["job_status"] == "Failed"
    assert "2 file(s) failed" in event["message"] and "error_threshold=1" in event["message"]


def test_run_timeout_counts_as_a_failed_try(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"slow0.jpg": b"a", "img0.jpg": b"b"})
    name = submit_direct(hook, toy_code, prefix, mini_batch_size=1, retry_timeout_seconds=2, max_retries=1,
                         mini_batch_error_threshold=0)
    event = wait_with_trigger(aml_conn_id, name)
    assert event["job_status"] == "Failed"
    assert "slow0.jpg" in event["message"] and "exceeded the timeout of 2s" in event["message"]


def test_weights_reach_the_entry_script_from_a_datastore_file_or_a_registered_model(aml_conn_id, local_aml, toy_code):
    from azure.ai.ml.entities import Model

    hook = AzureMLHook(aml_conn_id)
    local_aml.workspace_store.upload_blob("models/toy/weights.pt", b"w" * 42, overwrite=True)
    hook.client.models.create_or_update(
        Model(name="toy-weights", version="3", type="custom_model",
              path="azureml://datastores/workspaceblobstore/paths/models/toy/weights.pt")
    )
    prefix = month(local_aml, {"img0.jpg": b"a"})
    for weights in ("azureml://datastores/workspaceblobstore/paths/models/toy/weights.pt", "azureml:toy-weights:3"):
        name = submit_direct(hook, toy_code, prefix, weights=weights)
        assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed", weights
        assert [r["weights_bytes"] for r in read_output(local_aml, name)] == ["42"], weights


def test_failing_init_fails_the_job_with_its_error(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"img0.jpg": b"a"})
    name = submit_direct(hook, toy_code, prefix, environment_variables={"FAIL_INIT": "1"})
    event = wait_with_trigger(aml_conn_id, name)
    assert event["job_status"] == "Failed"
    assert "init() of entry script toy_entry.py failed: RuntimeError: model weights missing" in event["message"]


def test_a_job_on_an_unregistered_datastore_fails_naming_it(aml_conn_id, local_aml, toy_code):
    """A workspace accepts the job and its step fails: 404 (Could not find datastore: <name>.)."""
    import azure_compute.operators.aml as ops

    hook = AzureMLHook(aml_conn_id)
    job = ops.build_scoring_pipeline(
        settings=ops.ParallelScoringSettings(code_dir=str(toy_code), entry_script="toy_entry.py",
                                             environment=ops.make_environment("python:3.11-slim")),
        input_path=ops.datastore_uri("nosuchstore", "202401"), output_path=None, compute="gpu-cluster",
        job_name=f"bad-{uuid.uuid4().hex[:8]}", experiment_name="tests",
    )
    hook.submit_job(job)
    event = wait_with_trigger(aml_conn_id, job.name)
    assert event["job_status"] == "Failed"
    assert "404 (Could not find datastore: nosuchstore.)" in event["message"]


def test_unknown_registered_environment_is_refused_at_submit(aml_conn_id, local_aml, toy_code):
    from azure.core.exceptions import HttpResponseError

    import azure_compute.operators.aml as ops

    hook = AzureMLHook(aml_conn_id)
    job = ops.build_scoring_pipeline(
        settings=ops.ParallelScoringSettings(code_dir=str(toy_code), entry_script="toy_entry.py",
                                             environment="azureml:no-such-env:7"),
        input_path=ops.datastore_uri("images", "202401"), output_path=None, compute="gpu-cluster",
        job_name=f"noenv-{uuid.uuid4().hex[:8]}", experiment_name="tests",
    )
    try:
        hook.submit_job(job)
    except HttpResponseError as err:
        assert "no-such-env" in str(err)
    else:
        raise AssertionError("a job with a missing environment was accepted")


def test_cancel_ends_the_job_canceled(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"slow0.jpg": b"a"})
    name = submit_direct(hook, toy_code, prefix, retry_timeout_seconds=120)
    deadline = time.monotonic() + 60
    while hook.get_job_status(name) != "Running" and time.monotonic() < deadline:
        time.sleep(0.3)
    hook.cancel_job(name)
    event = wait_with_trigger(aml_conn_id, name)
    assert event["status"] == "failure" and event["job_status"] == "Canceled"


def test_on_kill_cancels_the_submitted_job(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"slow0.jpg": b"a"})
    name = submit_direct(hook, toy_code, prefix, retry_timeout_seconds=120)
    operator = AzureMLSubmitPipelineJobOperator(
        task_id="submit", input_datastore="images", input_path=prefix, compute="gpu-cluster",
        code_dir=str(toy_code), entry_script="toy_entry.py", environment="azureml:any:1",
        azure_ml_conn_id=aml_conn_id,
    )
    operator._submitted_job = name  # what execute() records once the job exists
    operator.on_kill()
    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Canceled"


def test_trigger_reports_a_wrong_credential(local_aml, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AZURE_ML_WRONG", local_aml.connection_json(token="wrong"))
    event = wait_with_trigger("azure_ml_wrong", "any-job")
    assert event["status"] == "error"
    assert "ClientAuthenticationError" in event["message"] and "InvalidAuthenticationToken" in event["message"]


def wait_for_status(hook: AzureMLHook, name: str, wanted: str, limit: float = 120) -> list[str]:
    """Poll the job until it reaches `wanted` (or ends); returns the states seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = hook.get_job_status(name)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == wanted or status in ("Completed", "Failed", "Canceled"):
            return seen
        time.sleep(0.1)
    return seen


def test_job_moves_through_its_states_in_order(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"nap0.jpg": b"a", "nap1.jpg": b"b", "nap2.jpg": b"c", "nap3.jpg": b"d"})
    name = submit_direct(hook, toy_code, prefix, mini_batch_size=2, instance_count=2, max_concurrency_per_instance=1)
    seen = wait_for_status(hook, name, "Completed")
    order = ["NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed"]
    assert seen[-1] == "Completed" and "Running" in seen
    assert seen == sorted(seen, key=order.index)  # never backwards
    assert "2 mini batch(es) of up to 2 file(s), 2 worker process(es) (2 instance(s) x 1 per instance)" in (
        runner_log(local_aml, name)
    )
    # Run history's record (what the DAG's node time reads) has the run's times, through the SDK's model.
    run = hook.client.jobs._runs_operations.get_run(name)
    assert run.run_id == name and run.status == "Completed"
    assert run.created_utc <= run.start_time_utc <= run.end_time_utc
    assert run.last_start_time_utc == run.start_time_utc
    # The hook hands the DAG these times as ISO strings, the shape the usage module reads.
    assert hook.get_job_times(name) == {"start_time": run.start_time_utc.isoformat(),
                                        "end_time": run.end_time_utc.isoformat()}


def test_restart_during_a_run_runs_the_job_again_to_completion(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"nap0.jpg": b"a", "nap1.jpg": b"b", "nap2.jpg": b"c"})
    name = submit_direct(hook, toy_code, prefix, mini_batch_size=1)
    assert wait_for_status(hook, name, "Running")[-1] == "Running"
    local_aml.restart()
    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed"
    assert sorted(r["image"] for r in read_output(local_aml, name)) == ["nap0.jpg", "nap1.jpg", "nap2.jpg"]


def test_restart_of_the_endpoint_keeps_jobs(aml_conn_id, local_aml, toy_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"img0.jpg": b"a"})
    name = submit_direct(hook, toy_code, prefix)
    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed"
    local_aml.restart()
    job = AzureMLHook(aml_conn_id).get_job(name)
    assert job_status(job) == "Completed"
    assert [r["image"] for r in read_output(local_aml, name)] == ["img0.jpg"]
