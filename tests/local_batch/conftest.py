"""Fixtures for the local Batch service tests (helpers live in batch_helpers.py)."""
from __future__ import annotations

import pytest
from azure.batch import BatchClient

from batch_helpers import make_pool


@pytest.fixture()
def batch(local_batch) -> BatchClient:
    """A BatchClient for the session's local Batch service."""
    client = local_batch.client()
    yield client
    client.close()


@pytest.fixture()
def pool(batch) -> str:
    """A fresh 2-node pool with 2 slots per node, deleted afterwards."""
    pool_id = make_pool(batch, nodes=2, slots=2)
    yield pool_id
    batch.begin_delete_pool(pool_id, polling_interval=0).result()
