"""Shared test set-up: offline YOLO, import paths, and the local Azure services.

Everything here talks to real things: Azurite over HTTP, real Ultralytics
inference with the shipped weights, real Airflow.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
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

# A private Airflow home for the test session (set before Airflow is imported),
# with a fresh metadata database, and two DAG bundles: the product's dags/ and
# the small DAGs that exercise the plugin operators (tests/plugin_dags/).
# One home per test session, so parallel sessions never share a database.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-test-"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
os.environ.setdefault(
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
    json.dumps([
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(PROJECT_ROOT / "dags")}},
        {"name": "plugin-test-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(PROJECT_ROOT / "tests" / "plugin_dags")}},
    ]),
)

from local_stack.azurite import AzuriteEndpoint, start_azurite, stop_azurite  # noqa: E402
from local_stack.processes import free_port  # noqa: E402

DEFAULT_WEIGHTS = PROJECT_ROOT.parent / "shared" / "models" / "yolov8n.pt"
DEFAULT_OPENVINO_WEIGHTS = PROJECT_ROOT.parent / "shared" / "models" / "yolov8n_int8_openvino_model"


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """The detector weights used by tests: $YOLO_WEIGHTS or ../shared/models/yolov8n.pt."""
    path = Path(os.environ.get("YOLO_WEIGHTS", DEFAULT_WEIGHTS))
    if not path.exists():
        pytest.fail(f"weights not found at {path}; set YOLO_WEIGHTS to a YOLOv8 .pt file")
    return path


@pytest.fixture(scope="session")
def openvino_weights_path() -> Path:
    """The int8 OpenVINO export of the same network (../shared/models), for the CPU runtime."""
    path = Path(os.environ.get("YOLO_OPENVINO_WEIGHTS", DEFAULT_OPENVINO_WEIGHTS))
    if not (path / "metadata.yaml").exists():
        pytest.fail(f"OpenVINO export not found at {path}; set YOLO_OPENVINO_WEIGHTS to an *_openvino_model folder")
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


class LocalBatch:
    """The local Batch service for tests: url, account, key, state_dir, client(), restart()."""

    def __init__(self, state_dir: Path, port: int, storage_connection_string: str) -> None:
        import base64
        import secrets

        self.state_dir = state_dir
        self.port = port
        self.account = "localbatch"
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.storage_connection_string = storage_connection_string
        self.endpoint = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from local_stack.batch_service.batch_endpoint import start_batch_service

        self.endpoint = start_batch_service(self.state_dir, self.port, self.account, self.key, self.storage_connection_string)

    def stop(self) -> None:
        from local_stack.batch_service.batch_endpoint import stop_batch_service

        stop_batch_service(self.state_dir)

    def restart(self) -> None:
        """Stop (SIGTERM) and start the service on the same port and state."""
        self.stop()
        self.start()

    def crash(self) -> None:
        """SIGKILL the service, as a crash would; its task processes keep running until the next start."""
        import signal

        from local_stack.processes import ServiceProcess

        process = ServiceProcess("batch", self.state_dir)
        pid = process.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)  # reap it: it is a child of this test process
            except ChildProcessError:
                pass
        process.pid_file.unlink(missing_ok=True)

    def client(self, **kwargs):
        return self.endpoint.client(**kwargs)

    def emulator(self, method: str, path: str, body: dict | None = None):
        return self.endpoint.emulator(method, path, body)


@pytest.fixture(scope="session")
def local_batch(tmp_path_factory: pytest.TempPathFactory, azurite: AzuriteEndpoint) -> LocalBatch:
    """The local Azure Batch service on a free loopback port, backed by the session's Azurite."""
    service = LocalBatch(tmp_path_factory.mktemp("batch-state"), free_port(), azurite.connection_string)
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh Airflow metadata database for this test session."""
    (Path(os.environ["AIRFLOW_HOME"]) / "airflow.db").unlink(missing_ok=True)
    from airflow.utils.db import initdb

    initdb()


@pytest.fixture(scope="session")
def storage(azurite):
    """A Blob service client on the session's Azurite."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture(scope="session")
def scoring_registry() -> dict[str, str]:
    """The local registry's scoring image and login (``make runtime`` builds it once; reused here)."""
    from local_stack import scoring_image

    return scoring_image.build()


@pytest.fixture(scope="session")
def batch_connections(local_batch, azurite, airflow_db, scoring_registry):
    """``azure_batch_default``, ``wasb_default`` and ``scoring_registry`` as Airflow reads them from the environment."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_CONN_SCORING_REGISTRY", json.dumps({
        "conn_type": "generic", "host": scoring_registry["server"], "login": scoring_registry["username"],
        "password": scoring_registry["password"],
    }))
    mp.setenv("AIRFLOW_CONN_AZURE_BATCH_DEFAULT", json.dumps({
        "conn_type": "azure_batch", "login": local_batch.account, "password": local_batch.key,
        "extra": {"account_url": local_batch.url},
    }))
    mp.setenv("AIRFLOW_CONN_WASB_DEFAULT", json.dumps({
        "conn_type": "wasb", "extra": {"connection_string": azurite.connection_string},
    }))
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in ("work", "images", "predictions"):
        if not service.get_container_client(name).exists():
            service.create_container(name)
    yield local_batch
    mp.undo()


@pytest.fixture(scope="session")
def local_dag_env(weights_path, scoring_registry) -> dict[str, str]:
    """Settings of the monthly DAG on the local stack: the shipped weights, a CPU VM size, the
    scoring image from the local registry (the runtime path a real pool uses), small shards, quick polls."""
    settings = {
        "WEIGHTS": str(weights_path), "VM_SIZE": "Standard_D2s_v3", "SHARD_SIZE": "4",
        "SCORING_RUNTIME": "container", "CONTAINER_IMAGE": scoring_registry["image"],
        "CONTAINER_REGISTRY_CONN_ID": "scoring_registry", "SCORING_THREADS": "1",
        "BATCH_SIZE": "4", "POLL_INTERVAL_S": "1", "SPOT_NODES": "2", "MAX_TASK_RETRY_COUNT": "1",
    }
    return {**{f"MONTHLY_DETECTION_{name}": value for name, value in settings.items()}, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def parse_monthly_dag(batch_connections, local_dag_env):
    """``with parse_monthly_dag(**env) as dag``: the production DAG parsed with ``local_dag_env`` plus
    ``env``; the settings stay in the environment while the DAG is in use, as on a worker."""

    @contextlib.contextmanager
    def parse(**overrides: str):
        from airflow.dag_processing.dagbag import DagBag

        mp = pytest.MonkeyPatch()
        try:
            for name, value in {**local_dag_env, **overrides}.items():
                mp.setenv(name, value)
            bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
            assert bag.import_errors == {}, bag.import_errors
            yield bag.dags["monthly_detection"]
        finally:
            mp.undo()

    return parse


@pytest.fixture(scope="module")
def monthly_dag_overrides() -> dict[str, str]:
    """Environment overrides of a test folder's ``monthly_dag`` (override this fixture to change them)."""
    return {}


@pytest.fixture(scope="module")
def monthly_dag(parse_monthly_dag, monthly_dag_overrides):
    """The production DAG on the local stack (see ``local_dag_env``)."""
    with parse_monthly_dag(**monthly_dag_overrides) as dag:
        yield dag


@pytest.fixture(scope="module")
def standalone_env(tmp_path_factory, batch_connections, local_dag_env) -> dict[str, str]:
    """Environment of every component of a test ``airflow standalone``: a private home, free
    ports, no login, the local connections and the local DAG settings."""
    env = {
        "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow-standalone")),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": f"{PROJECT_ROOT}:{PROJECT_ROOT / 'plugins'}",
        **local_dag_env,
        "MONTHLY_DETECTION_POLL_INTERVAL_S": "2",
    }
    for name in ("AIRFLOW_CONN_AZURE_BATCH_DEFAULT", "AIRFLOW_CONN_WASB_DEFAULT", "AIRFLOW_CONN_SCORING_REGISTRY"):
        env[name] = os.environ[name]
    return env
