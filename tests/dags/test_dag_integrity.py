"""The DAG folder imports cleanly and the monthly DAG keeps the promises users rely on."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert "monthly_detection" in dagbag.dags


def test_every_dag_has_tags_owner_retries_and_docs(dagbag: DagBag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"


def test_monthly_schedule_covers_the_previous_calendar_month(dagbag: DagBag) -> None:
    import pendulum

    dag = dagbag.dags["monthly_detection"]
    assert dag.catchup is False
    interval = dag.timetable.infer_manual_data_interval(run_after=pendulum.datetime(2024, 2, 10, tz="UTC"))
    assert (interval.start, interval.end) == (pendulum.datetime(2024, 1, 1, 3, tz="UTC"), pendulum.datetime(2024, 2, 1, 3, tz="UTC"))


def test_teardown_runs_after_the_pool_is_used_and_waits_are_deferrable(dagbag: DagBag) -> None:
    dag = dagbag.dags["monthly_detection"]
    teardown = dag.get_task("teardown")
    assert teardown.is_teardown
    assert dag.get_task("ensure_pool").is_setup
    assert "wait" in teardown.upstream_task_ids
    for task_id in ("wait", "nodes_ready"):
        assert dag.get_task(task_id).deferrable, task_id
    # The triggers must live where the triggerer can import them: the plugins package.
    assert type(dag.get_task("wait")).__module__ == "azure_compute.sensors.batch"


def test_the_azure_ml_job_is_named_like_the_batch_job(dagbag: DagBag) -> None:
    """One naming rule (include.monthly.layout.job_id): the submit task takes the plan's job id as its job name."""
    dag = dagbag.dags["monthly_detection"]
    assert dag.get_task("submit").job_name == dag.get_task("create_job").job_id
    assert "'job_id'" in dag.get_task("submit").job_name


def test_parsing_the_dag_folder_does_not_import_the_azure_ml_sdk(tmp_path: Path) -> None:
    """The DAG processor parses every file again and again under a time limit; ``azure.ai.ml``
    costs seconds to import and, on import, resolves the cloud named in ``AZUREML_CURRENT_CLOUD``
    (which MLClient writes process-wide), so importing it at parse time made a DAG processor that
    inherited a local endpoint's cloud name fail to load the DAG at all."""
    probe = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "assert bag.import_errors == {}, bag.import_errors\n"
        "print(sorted(m for m in sys.modules if m.startswith('azure.ai.ml')))\n"
    )
    root = DAGS.parent
    env = {**os.environ, "PYTHONPATH": f"{root}:{root / 'plugins'}",
           "AZUREML_CURRENT_CLOUD": "Custom@http://127.0.0.1:9", "AIRFLOW_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
