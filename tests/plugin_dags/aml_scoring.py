"""A DAG of our Azure ML building blocks, driven by run conf (used by tests/aml).

conf: code_dir, entry_script, input_path (folder on the ``images`` datastore), month,
job_name (optional), program_arguments, mini_batch_size, error thresholds, max_retries,
retry_timeout_seconds, timeout (seconds; may differ per try), environment_variables.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum

from airflow.sdk import DAG

from azure_compute.operators.aml import (
    AzureMLEnsureComputeOperator,
    AzureMLInvokeBatchEndpointOperator,
    AzureMLSubmitPipelineJobOperator,
)
from azure_compute.sensors.aml import AzureMLJobSensor

CONN_ID = "azure_ml_test"

with DAG(
    dag_id="aml_scoring",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    render_template_as_native_obj=True,
    default_args={"retries": 0},
    tags=["test"],
) as dag:
    compute = AzureMLEnsureComputeOperator(
        task_id="ensure_compute",
        compute_name="gpu-cluster",
        size="Standard_NC4as_T4_v3",
        tier="low_priority",
        max_instances=2,
        azure_ml_conn_id=CONN_ID,
    )
    submit = AzureMLSubmitPipelineJobOperator(
        task_id="submit",
        input_datastore="images",
        input_path="{{ dag_run.conf['input_path'] }}",
        month="{{ dag_run.conf['month'] }}",
        job_name="{{ dag_run.conf.get('job_name') }}",
        compute="{{ ti.xcom_pull(task_ids='ensure_compute') }}",
        code_dir="{{ dag_run.conf['code_dir'] }}",
        entry_script="{{ dag_run.conf['entry_script'] }}",
        image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
        pip_packages=["ultralytics==8.4.*", "pandas"],
        program_arguments="{{ dag_run.conf.get('program_arguments', '') }}",
        weights="{{ dag_run.conf.get('weights') }}",
        mini_batch_size="{{ dag_run.conf.get('mini_batch_size', 2) }}",
        error_threshold="{{ dag_run.conf.get('error_threshold', -1) }}",
        mini_batch_error_threshold="{{ dag_run.conf.get('mini_batch_error_threshold', -1) }}",
        max_retries="{{ dag_run.conf.get('max_retries', 2) }}",
        retry_timeout_seconds="{{ dag_run.conf.get('retry_timeout_seconds', 300) }}",
        environment_variables="{{ dag_run.conf.get('environment_variables', {}) }}",
        timeout="{{ dag_run.conf.get('timeouts', [600, 600, 600])[ti.try_number - 1] }}",
        retries=1,  # a retry re-attaches to the job the first try submitted
        retry_delay=timedelta(seconds=0),
        deferrable=True,
        poll_interval=1,
        azure_ml_conn_id=CONN_ID,
    )
    wait_again = AzureMLJobSensor(
        task_id="sensor",
        job_name="{{ ti.xcom_pull(task_ids='submit') }}",
        deferrable=True,
        poke_interval=1,
        timeout=300,
        azure_ml_conn_id=CONN_ID,
    )
    compute >> submit >> wait_again


with DAG(
    dag_id="aml_batch_endpoint",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    render_template_as_native_obj=True,
    default_args={"retries": 0},
    tags=["test"],
) as endpoint_dag:
    AzureMLInvokeBatchEndpointOperator(
        task_id="invoke",
        endpoint_name="{{ dag_run.conf['endpoint'] }}",
        deployment_name="{{ dag_run.conf.get('deployment') }}",
        input_datastore="images",
        input_path="{{ dag_run.conf['input_path'] }}",
        month="{{ dag_run.conf['month'] }}",
        job_name="{{ dag_run.conf.get('job_name') }}",
        deferrable=True,
        poll_interval=1,
        timeout=600,
        azure_ml_conn_id=CONN_ID,
    )


with DAG(
    dag_id="aml_submit_then_poke",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    render_template_as_native_obj=True,
    default_args={"retries": 0},
    tags=["test"],
) as poke_dag:
    submitted = AzureMLSubmitPipelineJobOperator(
        task_id="submit",
        input_datastore="images",
        input_path="{{ dag_run.conf['input_path'] }}",
        month="{{ dag_run.conf['month'] }}",
        compute="gpu-cluster",
        code_dir="{{ dag_run.conf['code_dir'] }}",
        entry_script="toy_entry.py",
        image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
        mini_batch_size=1,
        max_retries=1,
        mini_batch_error_threshold="{{ dag_run.conf.get('mini_batch_error_threshold', -1) }}",
        wait_for_completion=False,
        azure_ml_conn_id=CONN_ID,
    )
    submitted >> AzureMLJobSensor(
        task_id="wait",
        job_name="{{ ti.xcom_pull(task_ids='submit') }}",
        deferrable=False,
        mode="poke",
        poke_interval=1,
        timeout=120,
        azure_ml_conn_id=CONN_ID,
    )
