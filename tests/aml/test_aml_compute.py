"""AzureMLEnsureComputeOperator against the local endpoint: create, reuse (scale update), refuse."""
from __future__ import annotations

import uuid

import pytest

from azure_compute.hooks.aml import AzureMLHook
from azure_compute.operators.aml import AzureMLEnsureComputeOperator


def ensure(conn_id: str, name: str, **settings) -> str:
    operator = AzureMLEnsureComputeOperator(task_id="ensure_compute", compute_name=name, azure_ml_conn_id=conn_id,
                                            **settings)
    return operator.execute(context={})


def test_missing_cluster_is_created_with_every_setting(aml_conn_id):
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    assert ensure(aml_conn_id, name, size="Standard_NC4as_T4_v3", tier="low_priority", min_instances=0,
                  max_instances=3, idle_time_before_scale_down=180) == name
    compute = AzureMLHook(aml_conn_id).client.compute.get(name)
    assert (compute.type, compute.size, compute.tier) == ("amlcompute", "Standard_NC4as_T4_v3", "low_priority")
    assert (compute.min_instances, compute.max_instances, compute.idle_time_before_scale_down) == (0, 3, 180)


def test_compatible_cluster_is_reused_and_its_scale_updated(aml_conn_id):
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    ensure(aml_conn_id, name, max_instances=2)
    ensure(aml_conn_id, name, max_instances=6, idle_time_before_scale_down=600)
    compute = AzureMLHook(aml_conn_id).client.compute.get(name)
    assert (compute.max_instances, compute.idle_time_before_scale_down) == (6, 600)


def test_incompatible_cluster_fails_naming_both_sides(aml_conn_id):
    name = f"cpu-{uuid.uuid4().hex[:6]}"
    ensure(aml_conn_id, name, size="Standard_D4s_v3", tier="dedicated")
    with pytest.raises(ValueError, match=r"size is 'Standard_D4s_v3', wanted 'Standard_NC4as_T4_v3'.*"
                                         r"tier is 'dedicated', wanted 'low_priority'"):
        ensure(aml_conn_id, name, size="Standard_NC4as_T4_v3", tier="low_priority")


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"tier": "spot"}, "tier must be"), ({"min_instances": 3, "max_instances": 1}, "min_instances <= max_instances"),
     ({"compute_name": "x"}, "2-16 letters")],
)
def test_bad_settings_fail_before_any_call(settings, message):
    values = {"compute_name": "gpu-cluster", **settings}
    operator = AzureMLEnsureComputeOperator(task_id="ensure", azure_ml_conn_id="never_looked_up", **values)
    with pytest.raises(ValueError, match=message):
        operator.execute(context={})
