"""Fixtures of the reliability tests: the production DAG on the local stack, a Blob fault proxy,
(helpers are in reliability_helpers.py)."""
from __future__ import annotations

import json

import pytest

from local_stack.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from local_stack.fault_proxy import BlobFaultProxy

@pytest.fixture(scope="module")
def monthly_dag_overrides() -> dict[str, str]:
    """Reliability runs use shards of 2, so that a few images make several tasks."""
    return {"MONTHLY_DETECTION_SHARD_SIZE": "2"}


@pytest.fixture(scope="session")
def blob_proxy(azurite):
    """A fault-injecting proxy in front of the session's Azurite."""
    proxy = BlobFaultProxy(azurite.blob_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def wasb_through_proxy(blob_proxy, batch_connections, monkeypatch):
    """Point ``wasb_default`` (Airflow and, through the SAS URLs, the scoring tasks) at the proxy.

    The storage SDK's backoff (15 s, then x3) is shortened through the connection's
    extras, which the provider passes to ``BlobServiceClient``: a deployment can do the same.
    """
    monkeypatch.setenv("AIRFLOW_CONN_WASB_DEFAULT", json.dumps({
        "conn_type": "wasb",
        "extra": {"connection_string": blob_proxy.connection_string(ACCOUNT_NAME, ACCOUNT_KEY),
                  "initial_backoff": 1, "increment_base": 1},
    }))
    blob_proxy.faults.clear()
    blob_proxy.faults.reset_counts()
    yield blob_proxy
    blob_proxy.faults.clear()
