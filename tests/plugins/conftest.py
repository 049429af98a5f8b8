"""The DAG of Batch building blocks that the plugin tests run."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def building_blocks_dag(batch_connections):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "plugin_dags"))
    assert bag.import_errors == {}
    return bag.dags["batch_building_blocks"]
