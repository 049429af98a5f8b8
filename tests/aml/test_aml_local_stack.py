"""`make local-up` registers the DAG's datastores in the local workspace through MLClient, as a user would."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

from local_stack.processes import free_port

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stack(command: str, state_dir, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local_stack.stack", command, "--state-dir", str(state_dir)],
                          cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": PROJECT_ROOT, **env},
                          capture_output=True, text=True, timeout=180)


def test_local_up_registers_the_configured_datastores(tmp_path, monkeypatch):
    from azure_compute.hooks.aml import AzureMLHook

    env = {"LOCAL_AZURITE_PORT": str(free_port()), "LOCAL_BATCH_PORT": str(free_port()),
           "LOCAL_AML_PORT": str(free_port()), "MONTHLY_DETECTION_AML_IMAGES_DATASTORE": "month_images",
           # what a shell (or this test session) inherits once an MLClient talked to another local endpoint
           "AZUREML_CURRENT_CLOUD": "Custom@http://127.0.0.1:1"}
    try:
        up = _stack("up", tmp_path, env)
        assert up.returncode == 0, up.stderr
        assert "datastores month_images, work registered" in up.stdout
        line = next(l for l in (tmp_path / "services.env").read_text().splitlines()
                    if l.startswith("export AIRFLOW_CONN_AZURE_ML_DEFAULT="))
        monkeypatch.setenv("AIRFLOW_CONN_AZURE_ML_STACK", shlex.split(line.partition("=")[2])[0])
        client = AzureMLHook("azure_ml_stack").client
        stores = {store.name: store for store in client.datastores.list()}
        assert set(stores) == {"workspaceblobstore", "month_images", "work"}
        assert stores["month_images"].container_name == "images"  # the setting's name, the container's own
        assert stores["work"].account_name == "devstoreaccount1"
    finally:
        down = _stack("down", tmp_path, env)
    assert down.returncode == 0, down.stderr
