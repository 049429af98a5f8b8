"""The local Batch service the current test talks to (set by conformance.plugin for each test)."""
from __future__ import annotations

_current: dict = {}


def use(url: str, account: str, key: str) -> None:
    _current.update(url=url, account=account, key=key)


def url() -> str:
    return _current["url"]


def account() -> str:
    return _current["account"]


def credential():
    from azure.core.credentials import AzureNamedKeyCredential

    return AzureNamedKeyCredential(_current["account"], _current["key"])


def client():
    """A sync BatchClient for preparers; its requests are redirected like the test's."""
    from azure.batch import BatchClient

    return BatchClient(credential=credential(), endpoint=url())
