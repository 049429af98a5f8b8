"""One ensure-pool step that reuses an existing pool (used by tests/plugins). conf: pool_id, nodes."""
from __future__ import annotations

import pendulum

from airflow.sdk import DAG

from azure_compute.operators.batch import AzureBatchEnsurePoolOperator

with DAG(
    dag_id="batch_pool_reuse",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    render_template_as_native_obj=True,
    default_args={"retries": 0},
    tags=["test"],
) as dag:
    AzureBatchEnsurePoolOperator(
        task_id="ensure_pool", pool_id="{{ dag_run.conf['pool_id'] }}", vm_size="Standard_NC4as_T4_v3",
        target_dedicated_nodes="{{ dag_run.conf['nodes'] }}", min_ready_nodes=1, poll_interval=1, deferrable=True,
    )
