"""Extra links from Batch operators to the pool and job in the Azure portal.

The URL is built when the operator runs (it knows the account and the ids) and
kept in XCom (``links/base.py``); the link only reads it back, so the UI needs no connection.
"""
from __future__ import annotations

from urllib.parse import quote, urlparse

from azure_compute.links.base import PersistedLink

PORTAL = "https://portal.azure.com/#@/resource"


def batch_account_portal_url(account_url: str, subscription_id: str | None, resource_group: str | None) -> str:
    """The Batch account's page in the portal, or the portal's Batch list when the ids are unknown."""
    account = (urlparse(account_url).hostname or "").split(".")[0]
    if not (subscription_id and resource_group and account):
        return "https://portal.azure.com/#browse/Microsoft.Batch%2FbatchAccounts"
    return (
        f"{PORTAL}/subscriptions/{quote(subscription_id)}/resourceGroups/{quote(resource_group)}"
        f"/providers/Microsoft.Batch/batchAccounts/{quote(account)}"
    )


class AzureBatchPoolLink(PersistedLink):
    name = "Azure Batch pool"
    key = "azure_batch_pool_url"

    @staticmethod
    def url(account_page: str, pool_id: str) -> str:
        return f"{account_page}/pools/{quote(pool_id)}" if "/batchAccounts/" in account_page else account_page


class AzureBatchJobLink(PersistedLink):
    """The Batch account's page: a job is not an ARM resource, so it has no portal page of its own.

    A pool is (``Microsoft.Batch/batchAccounts/pools``), which is why the pool link can point at it.
    The job is listed under the account's "Jobs" menu; no documented portal URL opens it directly.
    """

    name = "Azure Batch account (jobs)"
    key = "azure_batch_job_url"

    @staticmethod
    def url(account_page: str, job_id: str) -> str:
        return account_page
