"""Airflow connections that point the provider's hooks at the local Batch service and Azurite."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def batch_connections(local_batch, azurite, airflow_db):
    """``azure_batch_default`` and ``wasb_default`` as Airflow reads them from the environment."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_CONN_AZURE_BATCH_DEFAULT", json.dumps({
        "conn_type": "azure_batch", "login": local_batch.account, "password": local_batch.key,
        "extra": {"account_url": local_batch.url},
    }))
    mp.setenv("AIRFLOW_CONN_WASB_DEFAULT", json.dumps({
        "conn_type": "wasb", "extra": {"connection_string": azurite.connection_string},
    }))
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in ("work", "images", "predictions"):
        if not service.get_container_client(name).exists():
            service.create_container(name)
    yield local_batch
    mp.undo()


@pytest.fixture(scope="session")
def building_blocks_dag(batch_connections):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "plugin_dags"))
    assert bag.import_errors == {}
    return bag.dags["batch_building_blocks"]
