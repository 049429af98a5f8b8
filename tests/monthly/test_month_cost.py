"""The price table in the settings and the month's cost from node records."""
from __future__ import annotations

import pytest

from include.monthly.config import DEFAULT_VM_PRICES, DagConfig
from include.monthly.usage import batch_usage

NODES = {"pool_id": "p", "recorded_at": "2024-02-01T01:00:00+00:00", "nodes": [
    {"node_id": "n1", "priority": "spot", "allocation_time": "2024-02-01T00:00:00+00:00", "state": "idle"},
    {"node_id": "n2", "priority": "dedicated", "allocation_time": "2024-02-01T00:30:00+00:00", "state": "idle"},
]}
SHARDS = [{"shard": "shard-00000", "node_id": "n1", "seconds": 600.0, "images": 30},
          {"shard": "shard-00001", "node_id": "n2", "seconds": 300.0, "images": 10}]


def test_the_default_table_prices_the_default_vm_size_for_spot_and_dedicated() -> None:
    table = DagConfig().price_table()
    assert set(table[DagConfig().vm_size]) == {"spot", "dedicated"}
    assert table == DEFAULT_VM_PRICES


def test_an_override_lays_over_the_defaults_and_a_bad_one_names_the_setting() -> None:
    config = DagConfig.from_env({"MONTHLY_DETECTION_VM_PRICES": '{"Standard_NC4as_T4_v3": {"spot": 0.2}, "Standard_X": {"dedicated": 1}}'})
    table = config.price_table()
    assert table["Standard_NC4as_T4_v3"] == {**DEFAULT_VM_PRICES["Standard_NC4as_T4_v3"], "spot": 0.2}
    assert table["Standard_X"] == {"dedicated": 1.0}
    for bad in ('{"Standard_X": {"spot": -1}}', '{"Standard_X": {"lowpri": 1}}', "not json", "[1]"):
        with pytest.raises(ValueError, match="MONTHLY_DETECTION_VM_PRICES"):
            DagConfig(vm_prices=bad).price_table()


def test_the_cost_counts_each_node_from_allocation_at_its_priority_price() -> None:
    prices = {"Standard_X": {"spot": 0.2, "dedicated": 1.0}}
    usage = batch_usage(NODES, SHARDS, vm_size="Standard_X", prices=prices, currency="USD", default_priority="spot")
    assert usage["node_seconds"] == {"spot": 3600.0, "dedicated": 1800.0}
    assert usage["cost"] == pytest.approx(0.2 + 0.5)
    by_node = {n["node_id"]: n for n in usage["nodes"]}
    assert by_node["n1"]["images_per_second"] == pytest.approx(30 / 600) and by_node["n2"]["tasks"] == 1


def test_a_vm_size_without_a_price_has_no_cost_and_says_which_price_is_missing() -> None:
    usage = batch_usage(NODES, SHARDS, vm_size="Standard_Y", prices={}, currency="USD", default_priority="spot")
    assert usage["cost"] is None and usage["cost_missing_prices"] == ["Standard_Y spot", "Standard_Y dedicated"]


def test_without_node_records_the_task_time_is_billed_and_the_basis_says_so() -> None:
    prices = {"Standard_X": {"spot": 0.36}}
    usage = batch_usage(None, SHARDS, vm_size="Standard_X", prices=prices, currency="USD", default_priority="spot")
    assert usage["basis"].startswith("task run time") and usage["node_seconds"]["spot"] == 900.0
    assert usage["cost"] == pytest.approx(0.09)
