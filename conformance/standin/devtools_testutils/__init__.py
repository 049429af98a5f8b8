"""Our stand-in for the Azure SDK's recording framework (`devtools_testutils`), just enough for azure-batch's tests.

The real package records and replays HTTP through a test proxy and creates Azure resources through ARM.
Here every piece is a pass-through: the preparers hand out names and the current local Batch service's
credentials, and the "proxy" hooks send each request to that service (see proxy_testcase). Tests run
"live": they wait for states as they would against a real account.
"""
from __future__ import annotations

import functools
import inspect
import os
import uuid
from collections import namedtuple

import pytest

from devtools_testutils import service
from devtools_testutils.helpers import trim_kwargs_from_test_function
from devtools_testutils.resource_testcase import RESOURCE_GROUP_PARAM

FakeResource = namedtuple("FakeResource", ["name", "id"])


class AzureTestError(Exception):
    """A preparer could not set up what a test needs."""


class AzureRecordedTestCase:
    """The base class of recorded tests; here always live, against the local service."""

    @property
    def is_live(self) -> bool:
        return True

    def get_credential(self, client_class, **kwargs):
        return service.credential()

    def create_random_name(self, name: str) -> str:
        return f"{name}{uuid.uuid4().hex[:8]}"


class AzureMgmtRecordedTestCase(AzureRecordedTestCase):
    """Management-plane flavour of the base class; nothing more is needed here."""


class AzureMgmtPreparer:
    """Decorator that creates a resource before the test and removes it after (the real one's contract).

    Subclasses implement create_resource(name, **kwargs) -> dict of test kwargs, and remove_resource.
    """

    def __init__(self, name_prefix: str = "", random_name_length: int = 24, disable_recording: bool = True,
                 playback_fake_resource=None, client_kwargs=None, random_name_enabled: bool = True) -> None:
        self.name_prefix = name_prefix
        self.random_name_length = random_name_length
        self.resource_moniker = name_prefix
        self.is_live = True
        self.client_kwargs = client_kwargs or {}

    @property
    def moniker(self) -> str:
        return self.resource_moniker

    def random_name(self) -> str:
        name = f"{self.name_prefix}{uuid.uuid4().hex}"
        return name[: self.random_name_length]

    def create_resource(self, name, **kwargs) -> dict:
        return {}

    def remove_resource(self, name, **kwargs) -> None:
        return None

    def __call__(self, fn):
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                name = self.random_name()
                kwargs.update(self.create_resource(name, **kwargs))
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.remove_resource(name, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            name = self.random_name()
            kwargs.update(self.create_resource(name, **kwargs))
            try:
                return fn(*args, **kwargs)
            finally:
                self.remove_resource(name, **kwargs)
        return wrapper


class ResourceGroupPreparer(AzureMgmtPreparer):
    """A resource group exists only in ARM; the local account needs none, so this hands out a name."""

    def __init__(self, name_prefix: str = "rg", location: str = "westus", parameter_name: str = RESOURCE_GROUP_PARAM,
                 **kwargs) -> None:
        super().__init__(name_prefix, 24)
        self.parameter_name = parameter_name
        self.location = location

    def create_resource(self, name, **kwargs) -> dict:
        return {self.parameter_name: FakeResource(name=name, id=f"/resourceGroups/{name}"),
                f"{self.parameter_name}_location": self.location}


CachedResourceGroupPreparer = ResourceGroupPreparer


class StorageAccountPreparer(AzureMgmtPreparer):
    """A storage account (the suite only passes it on to the Batch account preparer)."""

    def __init__(self, name_prefix: str = "storage", location: str = "westus", parameter_name: str = "storage_account",
                 **kwargs) -> None:
        super().__init__(name_prefix, 24)
        self.parameter_name = parameter_name

    def create_resource(self, name, **kwargs) -> dict:
        return {self.parameter_name: FakeResource(name=name, id=name), f"{self.parameter_name}_key": "not-used"}


class EnvironmentVariableLoader(AzureMgmtPreparer):
    """Passes each named setting from the environment (upper-cased), else its default, to the test."""

    def __init__(self, directory: str, **defaults) -> None:
        super().__init__("", 24)
        self.defaults = defaults

    def create_resource(self, name, **kwargs) -> dict:
        return {key: os.environ.get(key.upper(), value) for key, value in self.defaults.items()}


def recorded_by_proxy(test_func):
    """Sync tests: nothing to record; the transport hooks of proxy_testcase are installed by the async variant."""
    @functools.wraps(test_func)
    def wrapper(*args, **kwargs):
        trimmed = dict(kwargs)
        trim_kwargs_from_test_function(test_func, trimmed)
        return test_func(*args, **trimmed)
    return wrapper


def add_general_regex_sanitizer(**kwargs) -> None:
    """No recording, so nothing to sanitize."""


def set_custom_default_matcher(**kwargs) -> None:
    """No playback, so no matcher."""


def remove_batch_sanitizers(names) -> None:
    """No recording, so no sanitizers."""


@pytest.fixture(scope="session")
def test_proxy():
    """The real fixture starts the test proxy; our pass-through needs none."""
    yield None
