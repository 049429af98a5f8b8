"""AzureBatchAddTasksOperator reading its task descriptions from a blob (how the monthly DAG keeps XCom small)."""
from __future__ import annotations

import pytest

from azure_compute.operators.batch import AzureBatchAddTasksOperator


def test_exactly_one_source_of_tasks_is_accepted():
    with pytest.raises(ValueError, match="exactly one of tasks and tasks_blob"):
        AzureBatchAddTasksOperator(task_id="add", job_id="j", tasks=[], tasks_blob={"container": "work", "blob": "x"})
    with pytest.raises(ValueError, match="exactly one of tasks and tasks_blob"):
        AzureBatchAddTasksOperator(task_id="add", job_id="j")


def test_a_missing_or_short_task_blob_is_a_clear_error_naming_it(batch_connections, storage):
    work = storage.get_container_client("work")
    missing = AzureBatchAddTasksOperator(task_id="add", job_id="j",
                                         tasks_blob={"container": "work", "blob": "runs/none/tasks.jsonl"})
    with pytest.raises(ValueError, match="runs/none/tasks.jsonl does not exist"):
        missing.execute({})
    work.upload_blob("runs/short/tasks.jsonl", b'{"id": "shard-00000", "command_line": "true"}\n', overwrite=True)
    short = AzureBatchAddTasksOperator(task_id="add", job_id="j",
                                       tasks_blob={"container": "work", "blob": "runs/short/tasks.jsonl", "task_count": 2})
    with pytest.raises(ValueError, match="holds 1 tasks, expected 2"):
        short.execute({})
    work.upload_blob("runs/bad/tasks.jsonl", b'["not", "a", "task"]\n', overwrite=True)
    bad = AzureBatchAddTasksOperator(task_id="add", job_id="j", tasks_blob={"container": "work", "blob": "runs/bad/tasks.jsonl"})
    with pytest.raises(ValueError, match="line 1 is not a JSON object"):
        bad.execute({})
