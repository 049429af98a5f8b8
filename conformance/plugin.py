"""pytest plugin for the SDK suite: a fresh local Batch service per test, async tests, out-of-scope skips."""
from __future__ import annotations

import asyncio
import base64
import inspect
import secrets

import pytest

from conformance.scope import reason_out_of_scope

ACCOUNT = "sdkconformance"


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        reason = reason_out_of_scope(item.name)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"out of scope: {reason}"))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests on a new event loop (the SDK's repo does this with pytest-asyncio)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


@pytest.fixture(autouse=True)
def local_batch_service(tmp_path):
    """Each test gets its own service (state, nodes, jobs), as each live test gets a fresh account."""
    from devtools_testutils import service
    from local_stack.batch_service.batch_endpoint import start_batch_service, stop_batch_service
    from local_stack.processes import free_port

    key = base64.b64encode(secrets.token_bytes(32)).decode()
    endpoint = start_batch_service(tmp_path, free_port(), ACCOUNT, key)
    service.use(endpoint.url, ACCOUNT, key)
    try:
        yield endpoint
    finally:
        stop_batch_service(tmp_path)
