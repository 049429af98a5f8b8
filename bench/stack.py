"""The local stack the benchmarks run on: Azurite and the local Batch service in a private folder."""
from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from local_stack.azurite import AzuriteEndpoint, start_azurite, stop_azurite
from local_stack.batch_service.batch_endpoint import BatchEndpoint, start_batch_service, stop_batch_service
from local_stack.processes import free_port


@dataclass
class BenchStack:
    """Running services and the Airflow connection variables that point at them."""

    state_dir: Path
    azurite: AzuriteEndpoint
    batch: BatchEndpoint

    def connection_env(self) -> dict[str, str]:
        """AIRFLOW_CONN_* values for ``azure_batch_default`` and ``wasb_default``."""
        return {
            "AIRFLOW_CONN_AZURE_BATCH_DEFAULT": json.dumps({
                "conn_type": "azure_batch", "login": self.batch.account, "password": self.batch.key,
                "extra": {"account_url": self.batch.url},
            }),
            "AIRFLOW_CONN_WASB_DEFAULT": json.dumps({
                "conn_type": "wasb", "extra": {"connection_string": self.azurite.connection_string},
            }),
        }

    def stop(self) -> None:
        stop_batch_service(self.state_dir)
        stop_azurite(self.state_dir)


def start_stack(state_dir: Path, containers: tuple[str, ...] = ("work", "images", "predictions")) -> BenchStack:
    """Start Azurite and the Batch service on free ports; create the product's containers."""
    from azure.storage.blob import BlobServiceClient

    azurite = start_azurite(state_dir, free_port())
    try:
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        batch = start_batch_service(state_dir, free_port(), "benchbatch", key, azurite.connection_string)
    except BaseException:
        stop_azurite(state_dir)
        raise
    stack = BenchStack(state_dir, azurite, batch)
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in containers:
        if not service.get_container_client(name).exists():
            service.create_container(name)
    os.environ.update(stack.connection_env())
    return stack
