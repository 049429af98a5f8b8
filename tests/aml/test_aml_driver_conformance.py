"""The local Azure ML endpoint behaves as the parallel run driver and a workspace do (README table).

Each test names the behaviour the product relies on: the append_row file's format and name,
a mini-batch that runs twice, a job whose every mini-batch failed, datastores that must be
registered, NotResponding/Paused, the error a failed job reports, and uri_file outputs of
batch endpoint invocations.
"""
from __future__ import annotations

import io
import json
import textwrap
import uuid

import pandas as pd
import pytest
from aml_helpers import local_call, submit_direct, upload_month, wait_with_trigger

from azure_compute.hooks.aml import AzureMLHook

#: Values a real run() returns that a comma CSV reader, or a naive space splitter, would break.
ODD_VALUES = ["a b.jpg", "comma,name.jpg", 'quote"d.jpg', "ünïcode ✓.jpg", ""]

#: An entry script that returns, for each file, a DataFrame row with odd text and an NA, or a list.
ODD_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import pandas as pd

    ODD = %r

    def init():
        pass

    def run(mini_batch):
        if os.environ.get("RETURN_LIST"):
            return [f"{os.path.basename(p)} -> {len(p)}" for p in mini_batch]
        rows = []
        for i, path in enumerate(sorted(mini_batch)):
            name = os.path.basename(path)
            if name.startswith("bad"):
                raise ValueError(f"cannot score {name}")
            rows.append({"image": name, "odd": ODD[i %% len(ODD)], "count": None if i %% 2 else i,
                         "score": 0.5 + i})
        frame = pd.DataFrame(rows)
        return frame.astype({"count": "Int64"})
    """
) % (ODD_VALUES,)


@pytest.fixture(scope="module")
def odd_code(tmp_path_factory):
    code = tmp_path_factory.mktemp("odd-code")
    (code / "toy_entry.py").write_text(ODD_SCRIPT)
    return code


def month(local_aml, files: dict[str, bytes]) -> str:
    prefix = f"{uuid.uuid4().hex[:8]}/202406"
    upload_month(local_aml, prefix, files)
    return prefix


def raw_output(local_aml, job_name: str, file_name: str = "predictions.csv") -> bytes:
    return local_aml.workspace_store.download_blob(f"azureml/{job_name}/predictions/{file_name}").readall()


def test_append_row_output_is_the_drivers_format(aml_conn_id, local_aml, odd_code):
    """DataFrame rows: to_csv(sep=" ", header=None, index=None); names with spaces, quotes, unicode, NA."""
    hook = AzureMLHook(aml_conn_id)
    files = {f"img{i}.jpg": b"x" for i in range(5)}
    prefix = month(local_aml, files)
    name = submit_direct(hook, odd_code, prefix, mini_batch_size=5)
    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed"
    got = raw_output(local_aml, name)
    rows = [{"image": f"img{i}.jpg", "odd": ODD_VALUES[i % len(ODD_VALUES)], "count": None if i % 2 else i,
             "score": 0.5 + i} for i in range(5)]
    expected = pd.DataFrame(rows).astype({"count": "Int64"}).to_csv(sep=" ", header=None, index=None)
    assert got.decode("utf-8") == expected  # one mini batch, one process: exactly pandas' text
    assert not got.startswith(b"image")  # no header
    assert b'"a b.jpg"' in got and b'"quote""d.jpg"' in got  # minimal quoting, quotes doubled
    back = pd.read_csv(io.BytesIO(got), sep=" ", header=None, keep_default_na=False, dtype=str)
    assert list(back[1]) == ODD_VALUES  # every odd value round-trips, the empty one too


def test_a_returned_list_is_one_str_per_line(aml_conn_id, local_aml, odd_code):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"a.jpg": b"1", "b.jpg": b"2"})
    name = submit_direct(hook, odd_code, prefix, mini_batch_size=1, environment_variables={"RETURN_LIST": "1"})
    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed"
    lines = sorted(raw_output(local_aml, name).decode().splitlines())
    assert [line.split(" -> ")[0] for line in lines] == ["a.jpg", "b.jpg"]


def test_append_row_file_name_is_lower_cased_by_the_driver(aml_conn_id, local_aml, odd_code):
    import azure_compute.operators.aml as ops

    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"a.jpg": b"1"})
    name = submit_direct(hook, odd_code, prefix)
    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed"
    job = hook.get_job(name)
    step = next(iter(job.jobs.values()))
    assert "--append_row_file_name predictions.csv" in step.task.program_arguments
    # Our operator refuses a mixed-case name, which the driver would write lower-cased elsewhere.
    with pytest.raises(ValueError, match="'rows.csv'"):
        ops.ParallelScoringSettings(code_dir=str(odd_code), environment="azureml:x:1",
                                    output_file_name="Rows.CSV").validate()


def test_a_mini_batch_that_ran_twice_appends_its_rows_twice(aml_conn_id, local_aml, odd_code):
    """A worker that appended and then died (pre-emption): its mini batch runs again, rows appear twice."""
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {f"img{i}.jpg": b"x" for i in range(4)})
    local_call(local_aml.endpoint, "PUT", "/_local/faults", {"rerun_after_append": True})
    name = submit_direct(hook, odd_code, prefix, mini_batch_size=2, max_retries=3)
    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed"
    images = [row.split(" ")[0] for row in raw_output(local_aml, name).decode().splitlines()]
    assert sorted(set(images)) == [f"img{i}.jpg" for i in range(4)]
    assert len(images) == 6  # one mini batch of 2 images appended twice
    log = (local_aml.runs_dir / name / "runner.log").read_text()
    assert "worker died" in log and "concatenated 2 temp file(s)" in log  # two processes, two temp files


def test_a_job_whose_every_mini_batch_failed_ends_failed_without_output(aml_conn_id, local_aml, odd_code):
    from azure.core.exceptions import ResourceNotFoundError

    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"bad0.jpg": b"a", "bad1.jpg": b"b"})
    name = submit_direct(hook, odd_code, prefix, mini_batch_size=1, max_retries=1)  # thresholds -1: any number
    event = wait_with_trigger(aml_conn_id, name)
    assert event["job_status"] == "Failed"
    assert "no mini batch succeeded" in event["message"] and "cannot score bad" in event["message"]
    with pytest.raises(ResourceNotFoundError):
        raw_output(local_aml, name)


@pytest.mark.parametrize("status", ["NotResponding", "Paused"])
def test_not_responding_and_paused_end_the_wait_with_a_clear_message(aml_conn_id, local_aml, toy_code, status):
    hook = AzureMLHook(aml_conn_id)
    prefix = month(local_aml, {"slow0.jpg": b"a"})
    name = submit_direct(hook, toy_code, prefix, retry_timeout_seconds=120)
    local_call(local_aml.endpoint, "POST", f"/_local/jobs/{name}/status", {"status": status})
    event = wait_with_trigger(aml_conn_id, name, timeout=60)
    assert event["status"] == "failure" and event["job_status"] == status
    assert f"ended {status}: " in event["message"]
    assert event["studio_url"].startswith("https://ml.azure.com/runs/" + name)


def test_datastores_are_only_those_registered_and_named_by_azure_rule(aml_conn_id, local_aml):
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    from local_stack.aml_setup import register_blob_datastores
    from local_stack.azurite import ACCOUNT_KEY, ACCOUNT_NAME
    from include.monthly.config import DagConfig

    client = AzureMLHook(aml_conn_id).client
    names = {store.name for store in client.datastores.list()}
    assert names == {"workspaceblobstore", "images"}  # the endpoint made none of the product's own
    with pytest.raises(ResourceNotFoundError):
        client.datastores.get("work")
    with pytest.raises(HttpResponseError, match="lowercase letters, digits, and underscore"):
        register_blob_datastores(client, ACCOUNT_NAME, ACCOUNT_KEY, {"yolo-images": "yolo-images"}, protocol="http")
    # A container may have a '-' in its name; the datastore names are settings of their own.
    config = DagConfig.from_env({"MONTHLY_DETECTION_INPUT_CONTAINER": "yolo-images",
                                 "MONTHLY_DETECTION_AML_IMAGES_DATASTORE": "yolo_images"})
    assert config.aml_datastores()["yolo_images"] == "yolo-images"
    with pytest.raises(ValueError, match="MONTHLY_DETECTION_AML_IMAGES_DATASTORE='yolo-images'"):
        DagConfig.from_env({"MONTHLY_DETECTION_AML_IMAGES_DATASTORE": "yolo-images"})
    # The key is kept for listSecrets, never returned by a plain GET.
    assert not getattr(client.datastores.get("images").credentials, "account_key", None)
