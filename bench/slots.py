"""Worker-slot seconds: the same Batch job waited for in deferrable and in poke mode, in real Airflow.

Runs ``airflow standalone`` (scheduler, DAG processor, triggerer, API server;
LocalExecutor; SQLite) in a private AIRFLOW_HOME, triggers the
``bench_slot_wait`` DAG (bench/slot_dags/) once, and reads the records Airflow
keeps of the run from its metadata database:

- a task instance holds a worker slot while it is RUNNING. Airflow's event log
  (the ``log`` table) records a ``running`` event each time a worker starts the
  task (also when it resumes after deferral) and an event with the new state
  each time the worker hands it back (``deferred``, ``success``, ...). A
  task's slot time is the sum of those running intervals.
- ``task_instance.start_date``/``end_date`` give the whole wait for both
  sensors (the start is kept across a deferral), for context.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.config import PROJECT_ROOT, SLOT_JOB_SECONDS, SLOT_POKE_INTERVAL, SLOT_RUN_TIMEOUT
from local_stack.processes import ServiceProcess, free_port

DAG_ID = "bench_slot_wait"
SENSORS = ("wait_deferrable", "wait_poke")
HAND_BACK_EVENTS = frozenset({"deferred", "success", "failed", "up_for_retry", "up_for_reschedule", "skipped"})


def airflow_env(airflow_home: Path, api_port: int) -> dict[str, str]:
    """The private Airflow's settings, as environment variables for every component."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "bench" / "slot_dags"),
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
            {"name": "bench-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
             "kwargs": {"path": str(PROJECT_ROOT / "bench" / "slot_dags")}},
        ]),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")]),
    }


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _query(db: Path, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, args).fetchall()


def _wait_for(what: str, check, timeout: float, standalone: ServiceProcess) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if standalone.pid() is None:
            raise RuntimeError(f"airflow standalone exited while waiting for {what}; see {standalone.log_file}")
        try:
            found = check()
        except sqlite3.OperationalError:  # the table does not exist yet, or the file is locked
            found = None
        if found:
            return found
        time.sleep(2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; see {standalone.log_file}")


def running_intervals(events: list[sqlite3.Row]) -> list[tuple[dt.datetime, dt.datetime]]:
    """(start, end) pairs from a task's event log: each ``running`` to the next hand-back event."""
    intervals, started = [], None
    for row in events:
        when = _time(row["dttm"])
        if row["event"] == "running":
            started = when
        elif row["event"] in HAND_BACK_EVENTS and started is not None:
            intervals.append((started, when))
            started = None
    return intervals


def run(work_dir: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    """Start Airflow, run the DAG once, read slot times from the metadata DB, stop Airflow."""
    airflow_home = work_dir / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    db = airflow_home / "airflow.db"
    api_port = free_port()
    env = {**extra_env, **airflow_env(airflow_home, api_port)}
    standalone = ServiceProcess("airflow-standalone", work_dir)
    started = time.monotonic()
    standalone.start([str(Path(sys.executable).parent / "airflow"), "standalone"], port=api_port, env=env,
                     timeout=300)
    try:
        _wait_for("the DAG to be parsed",
                  lambda: _query(db, "SELECT 1 FROM dag WHERE dag_id = ? AND NOT is_paused", (DAG_ID,)),
                  240, standalone)
        startup_seconds = time.monotonic() - started
        suffix = secrets.token_hex(4)
        conf = {"pool_id": f"bench-slots-{suffix}", "job_id": f"bench-slots-{suffix}", "seconds": SLOT_JOB_SECONDS}
        trigger = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "dags", "trigger", DAG_ID, "--conf", json.dumps(conf),
             "--output", "json"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=180,
        )
        if trigger.returncode != 0:
            raise RuntimeError(f"airflow dags trigger failed: {trigger.stderr[-2000:]}")
        run_row = _wait_for(
            "the DAG run to finish",
            lambda: _query(db, "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND state IN ('success', 'failed')",
                           (DAG_ID,)),
            SLOT_RUN_TIMEOUT, standalone)[0]
        run_id = run_row["run_id"]
        tis = {row["task_id"]: row for row in _query(
            db, "SELECT task_id, state, start_date, end_date FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id))}
        if run_row["state"] != "success" or any(tis[s]["state"] != "success" for s in SENSORS):
            states = {task: row["state"] for task, row in tis.items()}
            raise RuntimeError(f"DAG run {run_id} ended {run_row['state']} ({states}); see {airflow_home}/logs")
        figures: dict[str, Any] = {}
        for sensor in SENSORS:
            events = _query(db, "SELECT event, dttm FROM log WHERE dag_id = ? AND run_id = ? AND task_id = ? "
                                "ORDER BY dttm, id", (DAG_ID, run_id, sensor))
            intervals = running_intervals(events)
            start, end = _time(tis[sensor]["start_date"]), _time(tis[sensor]["end_date"])
            figures[sensor] = {
                "slot_seconds": round(sum((b - a).total_seconds() for a, b in intervals), 2),
                "running_intervals": [round((b - a).total_seconds(), 2) for a, b in intervals],
                "wait_seconds": round((end - start).total_seconds(), 2),
                "events": [row["event"] for row in events],
            }
    finally:
        standalone.stop(timeout=30.0)
    deferrable, poke = figures["wait_deferrable"], figures["wait_poke"]
    return {
        "worker_slot_seconds_deferrable": deferrable["slot_seconds"],
        "worker_slot_seconds_poke": poke["slot_seconds"],
        "slot_context": {
            "job_seconds": SLOT_JOB_SECONDS, "poke_interval_s": SLOT_POKE_INTERVAL,
            "airflow_startup_seconds": round(startup_seconds, 1),
            "deferrable": deferrable, "poke": poke,
            "method": "sum of RUNNING intervals from Airflow's event log (log table): each 'running' event "
                      "to the next deferred/success/failed event of the same task instance",
        },
    }
