"""`stack up|status|down`: idempotent start, a usable services.env, and stopping only what it started."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from azure.batch import models
from azure.storage.blob import BlobServiceClient

from batch_helpers import unique, wait_for_tasks
from local_stack.processes import ServiceProcess, free_port

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stack(command: str, state_dir, ports: dict[str, int]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PROJECT_ROOT, "LOCAL_AZURITE_PORT": str(ports["azurite"]),
           "LOCAL_BATCH_PORT": str(ports["batch"]), "LOCAL_AML_PORT": str(ports["aml"])}
    return subprocess.run([sys.executable, "-m", "local_stack.stack", command, "--state-dir", str(state_dir)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180)


def _read_env(path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            values[name] = shlex.split(value)[0]
    return values


def test_stack_up_is_idempotent_writes_services_env_and_down_stops_it(tmp_path, monkeypatch):
    ports = {"azurite": free_port(), "batch": free_port(), "aml": free_port()}
    try:
        first = _stack("up", tmp_path, ports)
        assert first.returncode == 0, first.stderr
        pids = {name: ServiceProcess(name, tmp_path).pid() for name in ("azurite", "batch", "aml")}
        assert all(pids.values())

        second = _stack("up", tmp_path, ports)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert {name: ServiceProcess(name, tmp_path).pid() for name in pids} == pids

        env_file = tmp_path / "services.env"
        assert oct(env_file.stat().st_mode & 0o777) == "0o600", "services.env holds keys"
        values = _read_env(env_file)
        assert set(values) >= {"AZURE_STORAGE_CONNECTION_STRING", "AZURE_BATCH_URL", "AZURE_BATCH_ACCOUNT",
                               "AZURE_BATCH_KEY", "AIRFLOW_CONN_AZURE_BATCH_DEFAULT", "AIRFLOW_CONN_WASB_DEFAULT",
                               "AZURE_ML_URL", "AIRFLOW_CONN_AZURE_ML_DEFAULT"}
        assert values["AZURE_BATCH_URL"] == f"http://127.0.0.1:{ports['batch']}"
        account = json.loads((tmp_path / "batch-account.json").read_text())
        assert values["AZURE_BATCH_KEY"] == account["key"]

        blobs = BlobServiceClient.from_connection_string(values["AZURE_STORAGE_CONNECTION_STRING"])
        assert {"images", "work", "predictions"} <= {c.name for c in blobs.list_containers()}

        # the Airflow connections in services.env work with the stock provider hooks
        for name in ("AIRFLOW_CONN_AZURE_BATCH_DEFAULT", "AIRFLOW_CONN_WASB_DEFAULT"):
            monkeypatch.setenv(name, values[name])
        from airflow.providers.microsoft.azure.hooks.batch import AzureBatchHook
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        assert WasbHook(wasb_conn_id="wasb_default").check_for_prefix("images", "") is False
        client = AzureBatchHook().get_conn()
        pool_id = unique("stackpool")
        client.create_pool(models.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1))
        client.create_job(models.BatchJobCreateOptions(id="stack-job", pool_info=models.BatchPoolInfo(pool_id=pool_id)))
        client.create_task("stack-job", models.BatchTaskCreateOptions(id="t", command_line="echo up"))
        assert wait_for_tasks(client, "stack-job", 1).succeeded == 1

        status = _stack("status", tmp_path, ports)
        assert status.returncode == 0 and status.stdout.count("answers") == len(ports)
    finally:
        down = _stack("down", tmp_path, ports)
    assert down.returncode == 0, down.stderr
    assert all(ServiceProcess(name, tmp_path).pid() is None for name in ("azurite", "batch"))
    assert not (tmp_path / "services.env").exists()
    assert _stack("status", tmp_path, ports).returncode == 1
