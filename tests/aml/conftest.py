"""Fixtures for the Azure ML tests: the real local Azure ML endpoint on the session's Azurite."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from local_stack.aml_service.aml_endpoint import AmlEndpoint, start_aml_service, stop_aml_service
from local_stack.azurite import AzuriteEndpoint
from local_stack.processes import free_port

#: Datastore of the local endpoint that maps the Azurite container holding the month folders.
IMAGES_DATASTORE = "images"
IMAGES_CONTAINER = "aml-test-images"
TOKEN = "aml-test-token"


@dataclass
class LocalAml:
    """A running local Azure ML endpoint and what a test needs to reach it."""

    endpoint: AmlEndpoint
    azurite: AzuriteEndpoint

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def token(self) -> str:
        return self.endpoint.token

    @property
    def workspace(self) -> str:
        return self.endpoint.workspace

    @property
    def runs_dir(self) -> Path:
        """Where the endpoint keeps each job's working folder and runner.log."""
        return self.endpoint.state_dir / "aml" / "runs"

    @property
    def storage(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)

    @property
    def images(self) -> ContainerClient:
        return self.storage.get_container_client(IMAGES_CONTAINER)

    @property
    def workspace_store(self) -> ContainerClient:
        return self.storage.get_container_client("azureml-blobstore")

    def connection_json(self, token: str | None = None) -> str:
        """An Airflow connection (JSON form, for AIRFLOW_CONN_*) pointing at this endpoint."""
        return json.dumps(self.endpoint.connection(token))

    def restart(self) -> None:
        """Stop the endpoint and start it again on the same port and state (a crash and restart)."""
        stop_aml_service(self.endpoint.state_dir)
        self.endpoint = start(self.endpoint.state_dir, self.azurite, self.endpoint.port)


def start(state_dir: Path, azurite: AzuriteEndpoint, port: int) -> AmlEndpoint:
    return start_aml_service(state_dir, port, azurite.connection_string, TOKEN)


@pytest.fixture(scope="session")
def local_aml(tmp_path_factory: pytest.TempPathFactory, azurite: AzuriteEndpoint) -> Iterator[LocalAml]:
    """The local Azure ML endpoint (a real HTTP service) for the whole session."""
    state_dir = tmp_path_factory.mktemp("aml-state")
    service = LocalAml(start(state_dir, azurite, free_port()), azurite)
    assert service.endpoint.answers()
    from aml_helpers import register_datastores

    register_datastores(service.endpoint, {IMAGES_DATASTORE: IMAGES_CONTAINER})
    yield service
    stop_aml_service(state_dir)


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
