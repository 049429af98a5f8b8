"""Fixtures for the monthly library tests: fresh containers in the session's real Azurite."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterator

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from local_stack.azurite import AzuriteEndpoint


@dataclass
class MonthlyContainers:
    """The job's three containers, private to one test."""

    input: ContainerClient
    work: ContainerClient
    output: ContainerClient


@pytest.fixture(scope="session")
def blob_service(azurite: AzuriteEndpoint) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def containers(blob_service: BlobServiceClient) -> Iterator[MonthlyContainers]:
    suffix = uuid.uuid4().hex[:10]
    made = MonthlyContainers(
        input=blob_service.create_container(f"images-{suffix}"),
        work=blob_service.create_container(f"work-{suffix}"),
        output=blob_service.create_container(f"predictions-{suffix}"),
    )
    yield made
    for container in (made.input, made.work, made.output):
        container.delete_container()
