"""Our stand-in for the suite's `batch_preparers.py`: the Batch account, pool and job the tests ask for.

The suite's own file creates accounts and pools through ARM (azure-mgmt-batch). Here the account is the
local service of the current test, and pools and jobs are created through its data-plane API with the
same settings the original asks ARM for (VM size, image, admin user `task-user`, fixed node count). The
original's inbound NAT pool (network configuration) is left out: the local service refuses it.
"""
from __future__ import annotations

import time
from collections import namedtuple

import azure.batch.models as batch_models

from devtools_testutils import AzureMgmtPreparer, AzureTestError, FakeResource, service
from devtools_testutils.fake_credentials import BATCH_TEST_PASSWORD
from devtools_testutils.resource_testcase import RESOURCE_GROUP_PARAM

BATCH_ACCOUNT_PARAM = "batch_account"
FakeAccount = namedtuple("FakeResource", ["name", "account_endpoint"])
VM_SIZE = "standard_d2_v2"
READY_TIMEOUT_S = 60


class AccountPreparer(AzureMgmtPreparer):
    """The current local service, under an Azure-looking endpoint that the suite's transport hook redirects."""

    def __init__(self, name_prefix="batch", location="westus", parameter_name=BATCH_ACCOUNT_PARAM,
                 resource_group_parameter_name=RESOURCE_GROUP_PARAM, batch_environment=None,
                 existing_account_name=None, existing_resource_group=None, **kwargs):
        super().__init__(name_prefix, 24)
        self.location = location
        self.parameter_name = parameter_name

    def create_resource(self, name, **kwargs):
        account = service.account()
        resource = FakeAccount(name=account, account_endpoint=f"https://{account}.{self.location}.batch.azure.com")
        return {self.parameter_name: resource, "credential": service.credential()}


def _image(os_name: str) -> batch_models.VirtualMachineConfiguration:
    if os_name == "Windows":
        return batch_models.VirtualMachineConfiguration(
            image_reference=batch_models.BatchVmImageReference(
                publisher="MicrosoftWindowsServer", offer="WindowsServer", sku="2016-Datacenter-smalldisk"),
            node_agent_sku_id="batch.node.windows amd64")
    return batch_models.VirtualMachineConfiguration(
        image_reference=batch_models.BatchVmImageReference(
            publisher="Canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts"),
        node_agent_sku_id="batch.node.ubuntu 22.04")


class PoolPreparer(AzureMgmtPreparer):
    """A fixed-size pool, created and waited for (steady allocation) as the original does through ARM."""

    def __init__(self, name_prefix="", size=0, os="Linux", config="iaas", parameter_name="batch_pool",
                 location=None, pool_name=None, **kwargs):
        super().__init__(name_prefix, 24)
        self.size, self.os, self.parameter_name, self.pool_name = size, os, parameter_name, pool_name

    def create_resource(self, name, **kwargs):
        name = self.pool_name or name
        client = service.client()
        client.create_pool(batch_models.BatchPoolCreateOptions(
            id=name, display_name="test_pool", vm_size=VM_SIZE, virtual_machine_configuration=_image(self.os),
            user_accounts=[batch_models.UserAccount(name="task-user", password=BATCH_TEST_PASSWORD,
                                                    elevation_level=batch_models.ElevationLevel.ADMIN)],
            target_dedicated_nodes=self.size))
        deadline = time.monotonic() + READY_TIMEOUT_S
        pool = client.get_pool(name)
        while pool.allocation_state != batch_models.AllocationState.STEADY or (pool.current_dedicated_nodes or 0) < self.size:
            if time.monotonic() > deadline:
                raise AzureTestError(f"pool {name} did not reach {self.size} nodes")
            time.sleep(0.2)
            pool = client.get_pool(name)
        client.close()
        return {self.parameter_name: FakeResource(name=name, id=name)}

    def remove_resource(self, name, **kwargs):
        client = service.client()
        try:
            client.begin_delete_pool(self.pool_name or name).result()
        except Exception:  # the test may have deleted it
            pass
        client.close()


class JobPreparer(AzureMgmtPreparer):
    """A job on the test's pool, or, without one, on an auto pool (the original's fallback)."""

    def __init__(self, name_prefix="batch", parameter_name="batch_job", batch_pool_parameter_name="batch_pool", **extra_args):
        super().__init__(name_prefix, 24)
        self.parameter_name = parameter_name
        self.batch_pool_parameter_name = batch_pool_parameter_name
        self.extra_args = {k: v for k, v in extra_args.items()
                           if k not in ("batch_account_parameter_name", "batch_credentials_parameter_name",
                                        "disable_recording", "playback_fake_resource", "client_kwargs")}

    def _pool_info(self, **kwargs) -> batch_models.BatchPoolInfo:
        if self.batch_pool_parameter_name in kwargs:
            return batch_models.BatchPoolInfo(pool_id=kwargs[self.batch_pool_parameter_name].name)
        return batch_models.BatchPoolInfo(auto_pool_specification=batch_models.BatchAutoPoolSpecification(
            pool_lifetime_option=batch_models.BatchPoolLifetimeOption.JOB,
            pool=batch_models.BatchPoolSpecification(vm_size=VM_SIZE, virtual_machine_configuration=_image("Linux"))))

    def create_resource(self, name, **kwargs):
        client = service.client()
        job = batch_models.BatchJobCreateOptions(id=name, pool_info=self._pool_info(**kwargs), **self.extra_args)
        try:
            client.create_job(job)
        except Exception as err:
            raise AzureTestError(f"job {name}: {err}") from err
        finally:
            client.close()
        return {self.parameter_name: FakeResource(name=name, id=name)}

    def remove_resource(self, name, **kwargs):
        client = service.client()
        try:
            client.begin_delete_job(name).result()
        except Exception:
            pass
        client.close()
