"""Which credential the Batch hook builds from an ``azure_batch`` connection, on the sync and the async path.

A connection with an account name and key signs with the shared key (every test against the
local Batch service goes that way); one without a key uses Entra ID through the provider's own
``DefaultAzureCredential`` helpers (sync for operators, async for triggers), with the
connection's managed-identity options. No token is requested here: building a client sends nothing.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from azure_compute.hooks.batch import BatchHook

URL = "https://myaccount.westeurope.batch.azure.com"


def _connection(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "azure_batch", **fields}))


def _credential(client):
    """The token credential an SDK client signs with (its pipeline's bearer-token policy)."""
    for policy in client._client._pipeline._impl_policies:  # noqa: SLF001 - no public accessor
        credential = getattr(policy, "_credential", None)
        if credential is not None:
            return credential
    raise AssertionError("the client has no authentication policy")


def test_no_key_means_entra_id_on_both_paths_and_the_async_credential_is_closed(monkeypatch) -> None:
    from azure.identity import DefaultAzureCredential
    from azure.identity.aio import DefaultAzureCredential as AsyncDefaultAzureCredential

    _connection(monkeypatch, "batch_entra", extra={"account_url": URL, "managed_identity_client_id": "client-1",
                                                   "workload_identity_tenant_id": "tenant-1"})
    hook = BatchHook(azure_batch_conn_id="batch_entra")
    assert isinstance(_credential(hook.get_conn()), DefaultAzureCredential)

    closed = []

    async def async_credential():
        async with hook.async_client() as client:
            credential = _credential(client)
            original = credential.close

            async def close():
                closed.append(True)
                await original()

            credential.close = close
            return credential

    assert isinstance(asyncio.run(async_credential()), AsyncDefaultAzureCredential)
    assert closed == [True]


def test_a_connection_without_an_account_url_is_named(monkeypatch) -> None:
    _connection(monkeypatch, "batch_nourl", login="myaccount", password="a2V5")
    with pytest.raises(ValueError, match="'batch_nourl' has no extra 'account_url'"):
        BatchHook(azure_batch_conn_id="batch_nourl").get_conn()
