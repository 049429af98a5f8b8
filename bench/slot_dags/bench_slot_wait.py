"""The worker-slot benchmark's DAG: one Batch job, waited for by two sensors at once.

conf: pool_id, job_id, seconds (the job's length). The job's
tasks sleep; ``wait_deferrable`` and ``wait_poke`` wait for the same job with
the same interval, one in the triggerer and one holding a worker slot.
"""
from __future__ import annotations

import pendulum

from airflow.sdk import DAG, get_current_context, task

from bench.config import SLOT_POKE_INTERVAL

from azure_compute.operators.batch import (
    AzureBatchAddTasksOperator,
    AzureBatchCreateJobOperator,
    AzureBatchEnsurePoolOperator,
    AzureBatchTeardownOperator,
)
from azure_compute.sensors.batch import AzureBatchJobSensor

POOL = "{{ dag_run.conf['pool_id'] }}"
JOB = "{{ dag_run.conf['job_id'] }}"
EXPECTED = "{{ ti.xcom_pull(task_ids='add_tasks')['task_count'] }}"
SHARDS = 4  # the shards finish one after another, the last after conf['seconds']

with DAG(
    dag_id="bench_slot_wait",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    render_template_as_native_obj=True,
    default_args={"retries": 0},
    tags=["bench"],
) as dag:

    @task
    def specs() -> list[dict]:
        seconds = int(get_current_context()["dag_run"].conf["seconds"])
        return [{"id": f"shard-{i:05d}", "command_line": f"sleep {seconds * (i + 1) // SHARDS}"} for i in range(SHARDS)]

    pool = AzureBatchEnsurePoolOperator(task_id="ensure_pool", pool_id=POOL, vm_size="Standard_NC4as_T4_v3",
                                        target_dedicated_nodes=1, task_slots_per_node=SHARDS, wait_for_nodes=False)
    job = AzureBatchCreateJobOperator(task_id="create_job", job_id=JOB, pool_id=POOL, max_task_retry_count=0)
    add = AzureBatchAddTasksOperator(task_id="add_tasks", job_id=JOB, tasks=specs())
    waits = [
        AzureBatchJobSensor(task_id="wait_deferrable", job_id=JOB, expected_tasks=EXPECTED, deferrable=True,
                            poke_interval=SLOT_POKE_INTERVAL, timeout=900),
        AzureBatchJobSensor(task_id="wait_poke", job_id=JOB, expected_tasks=EXPECTED, deferrable=False,
                            mode="poke", poke_interval=SLOT_POKE_INTERVAL, timeout=900),
    ]
    teardown = AzureBatchTeardownOperator(task_id="teardown", pool_id=POOL, job_id=JOB, pool_action="delete")
    pool >> job >> add >> waits >> teardown.as_teardown(setups=pool)
