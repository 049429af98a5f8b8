"""The triggerer killed while the monthly run's `wait` is deferred, in a real Airflow
(``airflow standalone``: API server, scheduler, DAG processor, triggerer) on the local stack.

``airflow standalone`` does not restart a dead component, so the test plays the process
supervisor (systemd, Kubernetes): it SIGKILLs the triggerer and starts a new one. The new
triggerer adopts the orphaned trigger once the dead one's heartbeat is stale; the wait resumes
where it was. Nothing is resubmitted: one job, each task added once and run once.
"""
from __future__ import annotations

import signal
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest

from local_stack.demo.airflow_stack import start_standalone, stop_standalone
from local_stack.demo.seed import seed_month
from local_stack.processes import ServiceProcess, free_port
from include.monthly.layout import parse_month
from reliability_helpers import assert_each_image_once, month_images, published_rows

PROJECT_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
DAG_ID = "monthly_detection"


@pytest.fixture(scope="module")
def airflow_env(standalone_env) -> dict[str, str]:
    return {
        **standalone_env,
        # a dead triggerer's triggers are adopted after 10 s without a heartbeat (default 30 s)
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        "MONTHLY_DETECTION_SHARD_SIZE": "2",
        "MONTHLY_DETECTION_SPOT_NODES": "1",  # shards one after another: a wait long enough to kill into
    }


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, airflow_env):
    state_dir = tmp_path_factory.mktemp("airflow-process")
    port = free_port()
    replacement = ServiceProcess("triggerer-replacement", state_dir)
    try:
        api = start_standalone(state_dir, port=port, env=airflow_env, timeout=300)
        api.wait_for_dag(DAG_ID)
        api.state_dir, api.port, api.replacement = state_dir, port, replacement
        yield api
    finally:
        replacement.stop()
        stop_standalone(state_dir)


def _triggerers(root_pid: int) -> list[psutil.Process]:
    """The `airflow triggerer` process under the standalone, with its trigger runner children."""
    found = []
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            if "triggerer" in proc.cmdline():
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def _wait_until_deferred(api, run_id: str, task_id: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {t: ti["state"] for t, ti in api.task_instances(DAG_ID, run_id).items()}
        if states.get(task_id) == "deferred":
            return
        if api.run(DAG_ID, run_id)["state"] in ("success", "failed"):
            raise AssertionError(f"the run ended before {task_id} deferred: {states}")
        time.sleep(0.5)
    raise TimeoutError(f"{task_id} not deferred after {timeout} s")


def test_killing_the_triggerer_during_the_wait_resumes_it_and_resubmits_nothing(airflow, airflow_env, storage, local_batch):
    month = parse_month("2025-12")
    seed_month(storage, "images", month, count=7)  # 8 images to score: 4 shards of 2, one node
    local_batch.emulator("DELETE", "requests")
    run_id = airflow.trigger(DAG_ID, {"month": str(month)})

    _wait_until_deferred(airflow, run_id, "wait")
    root = ServiceProcess("airflow-standalone", airflow.state_dir).pid()
    killed = _triggerers(root)
    assert killed, "no triggerer process found under airflow standalone"
    for proc in killed:
        proc.send_signal(signal.SIGKILL)
    client = local_batch.client()
    (job,) = [j for j in client.list_jobs() if j.id.startswith(f"monthly-detection-{month.key}-")]
    assert job.state == "active", "the job finished before the triggerer was killed; nothing was tested"
    # The supervisor starts a new triggerer (same home and configuration).
    airflow.replacement.start(
        ["airflow", "triggerer"], port=int(airflow_env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"]),
        env={**airflow_env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{airflow.port}/execution/"},
        timeout=120,
    )

    states = airflow.wait_for_runs(DAG_ID, [run_id], timeout=900)

    assert states[run_id] == "success"
    tis = airflow.task_instances(DAG_ID, run_id)
    assert tis["wait"]["try_number"] == 1  # the same try resumed; the wait was not restarted ...
    assert tis["add_tasks"]["try_number"] == 1 and tis["create_job"]["try_number"] == 1
    assert [j.id for j in client.list_jobs() if j.id.startswith(f"monthly-detection-{month.key}-")] == [job.id]
    counts = local_batch.emulator("GET", "requests")
    assert counts["Job_Add"] == 1 and counts["Task_AddCollection"] == 1, counts  # ... and nothing was resubmitted
    tasks = list(client.list_tasks(job.id))
    assert sorted(t.id for t in tasks) == [f"shard-{i:05d}" for i in range(4)]
    assert all(t.execution_info.retry_count == 0 and t.execution_info.requeue_count == 0 for t in tasks)
    rows, _ = published_rows(storage, month)
    assert_each_image_once(rows, month_images(storage, month))


def test_the_airflow_api_listens_on_loopback_only(airflow):
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == airflow.port]
    assert listening and {c.laddr.ip for c in listening} <= {"127.0.0.1", "::1"}, listening
    assert urllib.parse.urlsplit(airflow.base_url).hostname == "127.0.0.1"
