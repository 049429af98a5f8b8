"""Shared test set-up: offline YOLO, import paths, and the local Azure services.

Everything here talks to real things: Azurite over HTTP, real Ultralytics
inference with the shipped weights, real Airflow.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
for path in (PROJECT_ROOT, PROJECT_ROOT / "plugins", PROJECT_ROOT / "dags"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# Never touch the network for weights, fonts or package installs.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", str(PROJECT_ROOT / ".local" / "yolo-config"))
Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)

# A private Airflow home for the test session (set before Airflow is imported).
os.environ.setdefault("AIRFLOW_HOME", str(PROJECT_ROOT / ".local" / "airflow-test"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "4")

from include.local_azure.azurite import AzuriteEndpoint, start_azurite, stop_azurite  # noqa: E402
from include.local_azure.processes import free_port  # noqa: E402

DEFAULT_WEIGHTS = PROJECT_ROOT.parent / "shared" / "models" / "yolov8n.pt"


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """The detector weights used by tests: $YOLO_WEIGHTS or ../shared/models/yolov8n.pt."""
    path = Path(os.environ.get("YOLO_WEIGHTS", DEFAULT_WEIGHTS))
    if not path.exists():
        pytest.fail(f"weights not found at {path}; set YOLO_WEIGHTS to a YOLOv8 .pt file")
    return path


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The sample images that the ultralytics wheel ships (bus.jpg, zidane.jpg)."""
    from ultralytics.utils import ASSETS

    return Path(ASSETS)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> AzuriteEndpoint:
    """A real Azurite Blob emulator on a free loopback port, for the whole session."""
    state_dir = tmp_path_factory.mktemp("azurite-state")
    endpoint = start_azurite(state_dir, free_port())
    yield endpoint
    stop_azurite(state_dir)
