"""Start and stop the local Azure ML endpoint as a background process (like batch_service/batch_endpoint.py).

`make local-up` (local_stack/stack.py) uses `start_aml_service`,
`AmlEndpoint.answers` and `AmlEndpoint.environment`.
"""
from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from local_stack.processes import ServiceProcess

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAME = "aml"


@dataclass(frozen=True)
class AmlEndpoint:
    """Where a running local Azure ML endpoint answers, its workspace and its shared token."""

    port: int
    token: str
    state_dir: Path
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "local-rg"
    workspace: str = "local-ws"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def connection(self, token: str | None = None) -> dict:
        """The Airflow connection (conn_type azure_ml) for this endpoint, as a dict."""
        return {
            "conn_type": "azure_ml",
            "password": self.token if token is None else token,
            "extra": {
                "subscription_id": self.subscription_id,
                "resource_group": self.resource_group,
                "workspace_name": self.workspace,
                "resource_manager_url": self.url,
                "auth": "static_token",
            },
        }

    def environment(self) -> dict[str, str]:
        """The lines `make local-up` writes to .local/services.env for this endpoint."""
        return {
            "AZURE_ML_URL": self.url,
            "AZURE_ML_SUBSCRIPTION_ID": self.subscription_id,
            "AZURE_ML_RESOURCE_GROUP": self.resource_group,
            "AZURE_ML_WORKSPACE": self.workspace,
            "AZURE_ML_LOCAL_TOKEN": self.token,
            "AIRFLOW_CONN_AZURE_ML_DEFAULT": json.dumps(self.connection()),
        }

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}_local/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False


def start_aml_service(
    state_dir: Path,
    port: int,
    storage_connection_string: str,
    token: str,
) -> AmlEndpoint:
    """Run `python -m local_stack.aml_service` in the background; state under state_dir/aml.

    The workspace starts with only ``workspaceblobstore``; register other datastores through
    ``MLClient`` as on a real workspace (see `register_blob_datastores`).
    """
    endpoint = AmlEndpoint(port, token, state_dir)
    argv = [sys.executable, "-m", "local_stack.aml_service", "--port", str(port),
            "--state-dir", str(state_dir / SERVICE_NAME), "--storage-connection-string", storage_connection_string,
            "--subscription-id", endpoint.subscription_id, "--resource-group", endpoint.resource_group,
            "--workspace", endpoint.workspace]
    # the token goes through the environment, not argv, so `ps` does not show it
    ServiceProcess(SERVICE_NAME, state_dir).start(
        argv, port=port, env={"PYTHONPATH": str(PROJECT_ROOT), "AZURE_ML_LOCAL_TOKEN": token}
    )
    return endpoint


def stop_aml_service(state_dir: Path) -> bool:
    return ServiceProcess(SERVICE_NAME, state_dir).stop()
