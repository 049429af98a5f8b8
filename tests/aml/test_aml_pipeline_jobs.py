"""The Azure ML building blocks in real Airflow runs against the local Azure ML endpoint and Azurite.

Jobs really run: the endpoint downloads the code asset and the month folder from
Azurite, calls init()/run() of the entry script in worker processes, and uploads
the appended rows to the output location.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from aml_helpers import read_output, upload_month

from azure_compute.hooks.aml import AzureMLHook

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCORING_COLUMNS = "image,status,class_id,class_name,confidence,x1,y1,x2,y2,image_width,image_height,error".split(",")


@pytest.fixture(scope="module")
def aml_dag(local_aml, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "plugin_dags"))
    assert bag.import_errors == {}
    return bag.dags["aml_scoring"]


def run_dag(dag, capfd, **conf):
    run = dag.test(run_conf=conf)
    out, err = capfd.readouterr()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return str(run.state), states, out + err, run


def test_real_score_py_scores_every_image_of_the_month(aml_dag, aml_conn_id, local_aml, assets_dir, weights_path, capfd):
    prefix = f"{uuid.uuid4().hex[:8]}/202401"
    upload_month(local_aml, prefix, {
        "bus.jpg": (assets_dir / "bus.jpg").read_bytes(),
        "people/zidane.jpg": (assets_dir / "zidane.jpg").read_bytes(),
        "broken.jpg": b"not an image at all",
    })
    local_aml.workspace_store.upload_blob("models/yolo/yolov8n.pt", weights_path.read_bytes(), overwrite=True)
    code_dir = PROJECT_ROOT / "include" / "scoring"
    state, states, log, run = run_dag(
        aml_dag, capfd,
        input_path=prefix, month="2024-01", code_dir=str(code_dir), entry_script="score.py",
        program_arguments="--root ${{inputs.images}} --conf 0.25 --imgsz 640 --batch-size 2",
        weights="azureml://datastores/workspaceblobstore/paths/models/yolo/yolov8n.pt",
        environment_variables={"SCORING_DEVICE": "cpu", "YOLO_WEIGHTS": "/nonexistent/not-these.pt"},
        mini_batch_size=2,
    )
    assert state == "success", log[-4000:]
    assert states == {"ensure_compute": "success", "submit": "success", "sensor": "success"}
    job_name = run.get_task_instance("submit").xcom_pull(task_ids="submit")
    job = AzureMLHook(aml_conn_id).get_job(job_name)
    assert job.status == "Completed"
    assert job.tags["month"] == "2024-01" and job.tags["dag_id"] == "aml_scoring"
    assert job.tags["run_id"] == run.run_id
    assert "deferring the wait" in log and "Completed" in log

    location = run.get_task_instance("submit").xcom_pull(task_ids="submit", key="predictions")
    assert location["container"] == "azureml-blobstore"
    assert location["path"] == f"azureml/{job_name}/predictions/predictions.csv"
    rows = read_output(local_aml, job_name, SCORING_COLUMNS)  # the driver's format: space-separated, no header
    assert all(len(row) == len(SCORING_COLUMNS) for row in rows)
    by_image = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row)
    assert set(by_image) == {"bus.jpg", "people/zidane.jpg", "broken.jpg"}
    assert {r["class_name"] for r in by_image["bus.jpg"]} >= {"bus", "person"}
    assert {r["class_name"] for r in by_image["people/zidane.jpg"]} >= {"person", "tie"}
    assert [r["status"] for r in by_image["broken.jpg"]] == ["error"]


def test_a_retried_submit_reattaches_to_its_job(aml_dag, aml_conn_id, local_aml, toy_code, capfd):
    prefix = f"{uuid.uuid4().hex[:8]}/202402"
    upload_month(local_aml, prefix, {f"img{i}.jpg": b"x" * (i + 1) for i in range(4)} | {"slow0.jpg": b"s"})
    state, states, log, run = run_dag(
        aml_dag, capfd,
        input_path=prefix, month="2024-02", code_dir=str(toy_code), entry_script="toy_entry.py",
        program_arguments="--tag retried", mini_batch_size=1, retry_timeout_seconds=3, max_retries=1,
        mini_batch_error_threshold=1,
        timeouts=[1, 300],  # the first try gives up while the job still runs; the retry waits it out
    )
    assert state == "success", log[-4000:]
    assert "after 1s" in log  # try 1 timed out ...
    assert "Re-attaching to Azure ML job" in log  # ... and try 2 found the job try 1 submitted
    client = AzureMLHook(aml_conn_id).client
    ours = [j for j in client.jobs.list() if (j.tags or {}).get("run_id") == run.run_id]
    assert len(ours) == 1  # the retry submitted nothing new
    assert ours[0].status == "Completed"
    rows = read_output(local_aml, ours[0].name)
    # slow0.jpg exceeded the 3 s run() timeout: one failed mini batch, within mini_batch_error_threshold=1.
    assert sorted(r["image"] for r in rows) == ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg"]
    assert {r["tag"] for r in rows} == {"retried"}  # program arguments reach the entry script
    assert [int(r["bytes"]) for r in sorted(rows, key=lambda r: r["image"])] == [1, 2, 3, 4]


def test_poke_mode_sensor_fails_with_the_job_error_and_its_link(aml_conn_id, local_aml, toy_code, capfd):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "tests" / "plugin_dags")).dags["aml_submit_then_poke"]
    prefix = f"{uuid.uuid4().hex[:8]}/202404"
    upload_month(local_aml, prefix, {"img0.jpg": b"a", "bad0.jpg": b"b"})
    state, states, log, run = run_dag(dag, capfd, input_path=prefix, month="2024-04", code_dir=str(toy_code),
                                      mini_batch_error_threshold=0)
    assert states == {"submit": "success", "wait": "failed"}
    assert "AzureMLJobFailedError" in log
    # The job's error as run history reports it, not a property only the local endpoint sets.
    assert "ended Failed: UserError: mini batch 0 (bad0.jpg) failed after 1 tries: ValueError: cannot score bad0.jpg" in log
    assert "(see https://ml.azure.com/runs/" in log

    state, states, log, run = run_dag(dag, capfd, input_path=prefix, month="2024-04", code_dir=str(toy_code),
                                      mini_batch_error_threshold=1)
    assert states == {"submit": "success", "wait": "success"}, log[-3000:]
    assert "-> Completed" in log
