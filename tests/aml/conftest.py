"""Fixtures for the Azure ML tests: the real local Azure ML endpoint on the session's Azurite."""
from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from include.local_azure.azurite import AzuriteEndpoint
from include.local_azure.processes import ServiceProcess, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Datastore of the local endpoint that maps the Azurite container holding the month folders.
IMAGES_DATASTORE = "images"
IMAGES_CONTAINER = "aml-test-images"
TOKEN = "aml-test-token"


@dataclass
class LocalAml:
    """A running local Azure ML endpoint and what a client needs to reach it."""

    url: str
    token: str
    state_dir: Path
    storage: BlobServiceClient
    azurite: AzuriteEndpoint
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "local-rg"
    workspace: str = "local-ws"

    def connection_json(self, token: str | None = None) -> str:
        """An Airflow connection (JSON form, for AIRFLOW_CONN_*) pointing at this endpoint."""
        return json.dumps(
            {
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
        )

    def restart(self) -> None:
        """Stop the endpoint and start it again on the same port and state (a crash and restart)."""
        port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        ServiceProcess("aml", self.state_dir).stop()
        start_local_aml(self.state_dir, self.azurite, port)

    @property
    def images(self) -> ContainerClient:
        return self.storage.get_container_client(IMAGES_CONTAINER)

    @property
    def workspace_store(self) -> ContainerClient:
        return self.storage.get_container_client("azureml-blobstore")


def start_local_aml(state_dir: Path, azurite: AzuriteEndpoint, port: int | None = None) -> int:
    port = port or free_port()
    ServiceProcess("aml", state_dir).start(
        [
            sys.executable, "-m", "include.local_azure.aml_service",
            "--port", str(port),
            "--state-dir", str(state_dir),
            "--storage-connection-string", azurite.connection_string,
            "--token", TOKEN,
            "--datastore", f"{IMAGES_DATASTORE}={IMAGES_CONTAINER}",
        ],
        port=port,
        env={"PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    return port


@pytest.fixture(scope="session")
def local_aml(tmp_path_factory: pytest.TempPathFactory, azurite: AzuriteEndpoint) -> Iterator[LocalAml]:
    """The local Azure ML endpoint (a real HTTP service) for the whole session."""
    state_dir = tmp_path_factory.mktemp("aml-state")
    port = start_local_aml(state_dir, azurite)
    yield LocalAml(
        url=f"http://127.0.0.1:{port}/",
        token=TOKEN,
        state_dir=state_dir,
        storage=BlobServiceClient.from_connection_string(azurite.connection_string),
        azurite=azurite,
    )
    ServiceProcess("aml", state_dir).stop()


@pytest.fixture
def aml_conn_id(local_aml: LocalAml, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow connection id (from the environment) for the local endpoint."""
    conn_id = "azure_ml_test"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", local_aml.connection_json())
    return conn_id


@pytest.fixture(scope="session")
def toy_code(tmp_path_factory) -> Path:
    """A code folder holding the toy entry script (see aml_helpers.TOY_SCRIPT)."""
    from aml_helpers import TOY_SCRIPT

    code = tmp_path_factory.mktemp("toy-code")
    (code / "toy_entry.py").write_text(TOY_SCRIPT)
    return code


@pytest.fixture
def month_prefix(local_aml: LocalAml) -> str:
    """A fresh month folder name (unique per test) in the images container."""
    return f"{uuid.uuid4().hex[:8]}/202401"
