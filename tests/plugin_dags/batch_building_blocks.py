"""A DAG made only of our Batch building blocks, driven by run conf (used by tests/plugins).

conf: pool_id, job_id, vm_size, tasks (count), fail_every (every Nth task exits 3
with a message on stderr), error_threshold, command (python executable), start_task
(the pool's start task command line; none by default).
"""
from __future__ import annotations

import pendulum

from airflow.sdk import DAG, get_current_context, task

from azure_compute.operators.batch import (
    AzureBatchAddTasksOperator,
    AzureBatchCreateJobOperator,
    AzureBatchEnsurePoolOperator,
    AzureBatchTeardownOperator,
)
from azure_compute.sensors.batch import AzureBatchJobSensor, AzureBatchPoolReadySensor

SCRIPT = (
    "import os, sys; i = int(os.environ['SHARD']); "
    "open('out.txt', 'w').write(f'shard {i} done\\n'); "
    "fail = int(os.environ['FAIL_EVERY']); "
    "sys.stderr.write(f'bad shard {i}: cannot decode input\\n') if fail and i % fail == 0 else None; "
    "sys.exit(3 if fail and i % fail == 0 else 0)"
)

with DAG(
    dag_id="batch_building_blocks",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    render_template_as_native_obj=True,
    default_args={"retries": 0},
    tags=["test"],
) as dag:

    @task
    def specs() -> list[dict]:
        conf = get_current_context()["dag_run"].conf
        return [
            {
                "id": f"shard-{i:05d}",
                "command_line": f"{conf['python']} -c \"{SCRIPT}\"",
                "environment": {"SHARD": str(i), "FAIL_EVERY": str(conf.get("fail_every", 0))},
                "output_files": [{"file_pattern": "out.txt", "container": "work",
                                  "path": f"{conf['job_id']}/{i:05d}.txt", "upload_condition": "tasksuccess"}],
            }
            for i in range(1, int(conf["tasks"]) + 1)
        ]

    pool = AzureBatchEnsurePoolOperator(
        task_id="ensure_pool", pool_id="{{ dag_run.conf['pool_id'] }}", vm_size="{{ dag_run.conf['vm_size'] }}",
        target_dedicated_nodes=2, task_slots_per_node=4, wait_for_nodes=False,
        start_task_command="{{ dag_run.conf.get('start_task') }}",
    )
    ready = AzureBatchPoolReadySensor(task_id="nodes_ready", pool_id="{{ dag_run.conf['pool_id'] }}",
                                      poke_interval=1, timeout=120, deferrable=True)
    job = AzureBatchCreateJobOperator(task_id="create_job", job_id="{{ dag_run.conf['job_id'] }}",
                                      pool_id="{{ dag_run.conf['pool_id'] }}", max_task_retry_count=0)
    add = AzureBatchAddTasksOperator(task_id="add_tasks", job_id="{{ dag_run.conf['job_id'] }}", tasks=specs())
    wait = AzureBatchJobSensor(
        task_id="wait", job_id="{{ dag_run.conf['job_id'] }}",
        expected_tasks="{{ ti.xcom_pull(task_ids='add_tasks')['task_count'] }}",
        error_threshold="{{ dag_run.conf.get('error_threshold', '0') }}",
        poke_interval=1, timeout=600, deferrable=True,
    )
    teardown = AzureBatchTeardownOperator(task_id="teardown", pool_id="{{ dag_run.conf['pool_id'] }}",
                                          job_id="{{ dag_run.conf['job_id'] }}", pool_action="resize_to_zero",
                                          poll_interval=1, deferrable=True)
    pool >> ready >> job >> add >> wait >> teardown.as_teardown(setups=pool)
