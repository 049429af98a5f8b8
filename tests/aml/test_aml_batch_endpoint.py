"""A batch endpoint deployment of the real score.py (init()/run() with AZUREML_MODEL_DIR), invoked from Airflow."""
from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import pytest
from aml_helpers import upload_month

from azure_compute.hooks.aml import AzureMLHook, job_status

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def yolo_endpoint(local_aml, weights_path, airflow_db) -> str:
    """A batch endpoint whose deployment runs include/scoring/score.py with the weights as its model."""
    from azure.ai.ml.entities import (
        AmlCompute,
        BatchEndpoint,
        BatchRetrySettings,
        CodeConfiguration,
        Model,
        ModelBatchDeployment,
        ModelBatchDeploymentSettings,
    )
    from include.scoring.aml_environment import scoring_environment

    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_CONN_AZURE_ML_TEST", local_aml.connection_json())
    client = AzureMLHook("azure_ml_test").client
    local_aml.workspace_store.upload_blob("models/yolo/yolov8n.pt", weights_path.read_bytes(), overwrite=True)
    model = client.models.create_or_update(
        Model(name="yolov8n", version="1", type="custom_model",
              path="azureml://datastores/workspaceblobstore/paths/models/yolo/yolov8n.pt")
    )
    client.compute.begin_create_or_update(
        AmlCompute(name="gpu-cluster", size="Standard_NC4as_T4_v3", tier="low_priority", max_instances=2)
    ).result()
    name = f"yolo-{uuid.uuid4().hex[:6]}"
    client.batch_endpoints.begin_create_or_update(BatchEndpoint(name=name)).result()
    client.batch_deployments.begin_create_or_update(
        ModelBatchDeployment(
            name="score-v1",
            endpoint_name=name,
            model=f"azureml:{model.name}:{model.version}",
            code_configuration=CodeConfiguration(code=str(PROJECT_ROOT / "include" / "scoring"),
                                                 scoring_script="score.py"),
            environment=scoring_environment(),  # the same environment the pipeline job uses
            compute="gpu-cluster",
            settings=ModelBatchDeploymentSettings(
                mini_batch_size=2, instance_count=1, max_concurrency_per_instance=1,
                output_action="append_row", output_file_name="predictions.csv",
                retry_settings=BatchRetrySettings(max_retries=2, timeout=300), error_threshold=-1,
                environment_variables={"SCORING_DEVICE": "cpu"},
            ),
        )
    ).result()
    yield name
    mp.undo()


def test_batch_endpoint_scores_the_month_with_the_registered_model(
    yolo_endpoint, aml_conn_id, local_aml, assets_dir, capfd
):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "tests" / "plugin_dags")).dags["aml_batch_endpoint"]
    prefix = f"{uuid.uuid4().hex[:8]}/202405"
    upload_month(local_aml, prefix, {"bus.jpg": (assets_dir / "bus.jpg").read_bytes(),
                                     "zidane.jpg": (assets_dir / "zidane.jpg").read_bytes()})
    conf = {"endpoint": yolo_endpoint, "deployment": "score-v1", "input_path": prefix, "month": "2024-05",
            "job_name": f"endpoint-{uuid.uuid4().hex[:8]}"}
    run = dag.test(run_conf=conf)
    log = "".join(capfd.readouterr())
    assert str(run.state) == "success", log[-4000:]
    ti = run.get_task_instance("invoke")
    job_name = ti.xcom_pull(task_ids="invoke")
    assert job_status(AzureMLHook(aml_conn_id).get_job(job_name)) == "Completed"
    location = ti.xcom_pull(task_ids="invoke", key="predictions")
    assert location["path"] == f"azureml/{job_name}/score/predictions.csv"
    text = local_aml.workspace_store.download_blob(location["path"]).readall().decode()
    rows = list(csv.reader(io.StringIO(text), delimiter=" "))  # the driver's format: no header
    assert rows and all(len(row) == 12 for row in rows) and rows[0][0] != "image"
    assert any(row[:2] == ["bus.jpg", "ok"] and row[3] == "bus" for row in rows)
    assert any(row[:2] == ["zidane.jpg", "ok"] and row[3] == "tie" for row in rows)

    assert job_name == conf["job_name"]

    # The same job name again (what a retried task computes) finds the job instead of invoking a second one.
    again = dag.test(run_conf=conf)
    log = "".join(capfd.readouterr())
    assert str(again.state) == "success"
    assert f"Re-attaching to batch endpoint job {job_name}" in log


def test_unknown_deployment_is_named(yolo_endpoint, aml_conn_id, local_aml):
    from azure.ai.ml import Input

    client = AzureMLHook(aml_conn_id).client
    with pytest.raises(Exception, match="nosuch"):
        client.batch_endpoints.invoke(endpoint_name=yolo_endpoint, deployment_name="nosuch",
                                      input=Input(type="uri_folder", path="azureml://datastores/images/paths/x/"))


def test_invoke_outputs_must_be_uri_file(yolo_endpoint, aml_conn_id, local_aml, toy_code):
    """A batch endpoint job's output is the file the rows go to: uri_file; a folder is refused."""
    from azure.ai.ml import Input, Output
    from azure.core.exceptions import HttpResponseError

    from azure_compute.operators.aml import AzureMLInvokeBatchEndpointOperator, datastore_uri

    client = AzureMLHook(aml_conn_id).client
    images = Input(type="uri_folder", path="azureml://datastores/images/paths/x/")
    folder = datastore_uri("workspaceblobstore", "out/folder")
    with pytest.raises(HttpResponseError, match="must be of type uri_file"):
        client.batch_endpoints.invoke(endpoint_name=yolo_endpoint, input=images,
                                      outputs={"score": Output(type="uri_folder", path=folder)})
    # What our operator sends with an output_path: the file, as uri_file.
    prefix = f"{uuid.uuid4().hex[:8]}/202407"
    upload_month(local_aml, prefix, {"bus.jpg": b"not really an image"})
    operator = AzureMLInvokeBatchEndpointOperator(
        task_id="invoke", endpoint_name=yolo_endpoint, input_datastore="images", input_path=prefix,
        output_datastore="workspaceblobstore", output_path=f"out/{prefix}", output_file_name="rows.csv",
        job_name=f"uri-file-{uuid.uuid4().hex[:6]}", wait_for_completion=False, azure_ml_conn_id=aml_conn_id,
    )
    pushed = {}

    class TI:
        def xcom_push(self, key, value):
            pushed[key] = value

    name = operator.execute({"ti": TI(), "run_id": "manual", "dag_run": None})
    from aml_helpers import wait_with_trigger

    assert wait_with_trigger(aml_conn_id, name)["job_status"] == "Completed"
    assert pushed["predictions"]["path"] == f"out/{prefix}/rows.csv"
    assert local_aml.workspace_store.get_blob_client(f"out/{prefix}/rows.csv").exists()
