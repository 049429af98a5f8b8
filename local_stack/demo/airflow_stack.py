"""A real Airflow (``airflow standalone``: API server, scheduler, DAG processor,
triggerer) on this machine, and a small client of its REST API.

``make up`` / ``make down`` / ``make backfill`` and the scheduler tests use it,
so the deferred waits really go through a triggerer and runs are created the
way the UI and ``airflow backfill create`` create them.

    scripts/local-env python -m local_stack.demo.airflow_stack up|down|status
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_stack.processes import ServiceProcess, wait_for_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT = int(os.environ.get("LOCAL_AIRFLOW_PORT", "8080"))
TERMINAL_STATES = {"success", "failed"}


def _service(state_dir: Path) -> ServiceProcess:
    return ServiceProcess("airflow-standalone", state_dir)


def start_standalone(state_dir: Path, port: int = DEFAULT_PORT, env: dict[str, str] | None = None,
                     timeout: float = 300) -> "AirflowAPI":
    """Start ``airflow standalone`` (idempotent) and wait until its API answers."""
    service = _service(state_dir)
    if service.pid() is None:
        environment = {
            "AIRFLOW__API__HOST": "127.0.0.1",  # loopback only
            "AIRFLOW__API__PORT": str(port),
            # Workers report to the API server's execution API; it must follow the port.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            **(env or {}),
        }
        service.start(["airflow", "standalone"], port=port, env=environment, timeout=timeout)
    else:
        wait_for_port(port, timeout=timeout)
    api = AirflowAPI(f"http://127.0.0.1:{port}")
    api.wait_healthy(timeout)
    return api


def stop_standalone(state_dir: Path) -> bool:
    return _service(state_dir).stop(timeout=30)


def admin_password(airflow_home: Path) -> str | None:
    """The password ``airflow standalone`` generated for ``admin`` (None when auth is off)."""
    path = airflow_home / "simple_auth_manager_passwords.json.generated"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("admin")


@dataclass
class AirflowAPI:
    """Just what we need of Airflow's REST API (v2), with a JWT from /auth/token."""

    base_url: str
    username: str = "admin"
    password: str | None = None
    _token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            raise RuntimeError(f"{method} {path} -> {err.code}: {detail}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def token(self) -> str:
        if self._token is None:
            body = {"username": self.username, "password": self.password or ""}
            self._token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
        return self._token

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                health = self._request("GET", "/api/v2/monitor/health", auth=False)
                if all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "triggerer")):
                    return
                last = health
            except (RuntimeError, OSError) as err:
                last = err
            time.sleep(2)
        raise TimeoutError(f"Airflow at {self.base_url} not healthy after {timeout:.0f}s: {last}")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the DAG processor has parsed the DAG (then unpause it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                return
            except RuntimeError as err:
                if "404" not in str(err):
                    raise
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f}s")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Trigger a run as the UI's "Trigger DAG w/ config" does; returns its run id."""
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        query = "?limit=100" + (f"&run_type={run_type}" if run_type else "")
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns{query}")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        data = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in data["task_instances"]}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        data = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true")
        if isinstance(data, dict):
            content = data.get("content", "")
            if isinstance(content, list):
                return "\n".join(item.get("event", "") if isinstance(item, dict) else str(item) for item in content)
            return str(content)
        return str(data)

    def wait_for_runs(self, dag_id: str, run_ids: list[str], timeout: float) -> dict[str, str]:
        """Until every run is success or failed; returns run id -> state."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {run_id: self.run(dag_id, run_id)["state"] for run_id in run_ids}
            if all(state in TERMINAL_STATES for state in states.values()):
                return states
            time.sleep(3)
        raise TimeoutError(f"runs not finished after {timeout:.0f}s: {states}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start or stop the local Airflow (airflow standalone).")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    home = Path(os.environ["AIRFLOW_HOME"])
    state_dir = PROJECT_ROOT / ".local"
    if args.command == "down":
        print("airflow: stopped" if stop_standalone(state_dir) else "airflow: was not running")
        return 0
    if args.command == "status":
        pid = _service(state_dir).pid()
        print(f"airflow: running (pid {pid})" if pid else "airflow: not running")
        return 0 if pid else 1
    api = start_standalone(state_dir)
    api.password = admin_password(home)
    api.wait_for_dag("monthly_detection")
    print(f"Airflow UI: http://127.0.0.1:{DEFAULT_PORT}  (user admin, password in "
          f"{home / 'simple_auth_manager_passwords.json.generated'})")
    print(f"logs: {_service(state_dir).log_file}; stop with `make down`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
