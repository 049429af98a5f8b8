"""The local Azure stack: `python -m local_stack.stack up|down|status`.

`up` (idempotent) starts every service in SERVICES that is not already running,
waits until each answers, creates the product's containers and writes
`.local/services.env`: shell `export` lines for the SDKs and the Airflow
connections. `down` stops only the processes `up` started (pid files under
`.local/`). To add a service (the Azure ML endpoint, say), append a
ServiceSpec to SERVICES: a name (its pid file), a port variable and default,
how to start it, how to tell it answers, and the environment lines it adds.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shlex
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from local_stack import scoring_image
from local_stack.azurite import ACCOUNT_NAME, AzuriteEndpoint, start_azurite
from local_stack.aml_service.aml_endpoint import AmlEndpoint, start_aml_service
from local_stack.batch_service.batch_endpoint import start_batch_service
from local_stack.processes import ServiceProcess

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = PROJECT_ROOT / ".local"
SERVICES_ENV = "services.env"
BATCH_ACCOUNT_FILE = "batch-account.json"
AML_TOKEN_FILE = "aml-token"
BATCH_ACCOUNT_NAME = "localbatch"
PRODUCT_CONTAINERS = ("images", "work", "predictions")
READY_TIMEOUT_SECONDS = 60.0


@dataclass
class Stack:
    """Where the stack lives and which ports it uses; services read what they need from here."""

    state_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def azurite(self) -> AzuriteEndpoint:
        return AzuriteEndpoint(self.ports["azurite"])

    def batch_account(self) -> dict[str, str]:
        """The Batch account name and key: generated once, then reused (file readable by the owner only)."""
        path = self.state_dir / BATCH_ACCOUNT_FILE
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            account = {"account": BATCH_ACCOUNT_NAME, "key": base64.b64encode(secrets.token_bytes(64)).decode()}
            path.touch(mode=0o600)
            path.write_text(json.dumps(account, indent=2))
        return json.loads(path.read_text())

    def aml_token(self) -> str:
        """The local Azure ML endpoint's shared secret: generated once, then reused (owner-readable only)."""
        path = self.state_dir / AML_TOKEN_FILE
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    @property
    def aml(self) -> AmlEndpoint:
        return AmlEndpoint(self.ports["aml"], self.aml_token(), self.state_dir)


@dataclass(frozen=True)
class ServiceSpec:
    """One background service of the stack."""

    name: str
    port_variable: str
    default_port: int
    start: Callable[[Stack], None]
    answers: Callable[[Stack], bool]
    environment: Callable[[Stack], dict[str, str]]

    def port(self) -> int:
        value = os.environ.get(self.port_variable)
        if value is None:
            return self.default_port
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise SystemExit(f"{self.port_variable}={value!r} is not a TCP port number")
        return int(value)


# ---------------------------------------------------------------- Azurite
def _start_azurite(stack: Stack) -> None:
    start_azurite(stack.state_dir, stack.ports["azurite"])


def _azurite_answers(stack: Stack) -> bool:
    from azure.storage.blob import BlobServiceClient

    try:
        BlobServiceClient.from_connection_string(stack.azurite.connection_string).get_service_properties(timeout=5)
        return True
    except Exception:
        return False


def _azurite_environment(stack: Stack) -> dict[str, str]:
    connection_string = stack.azurite.connection_string
    wasb = {"conn_type": "wasb", "login": ACCOUNT_NAME, "extra": {"connection_string": connection_string}}
    return {
        "AZURE_STORAGE_CONNECTION_STRING": connection_string,
        "AIRFLOW_CONN_WASB_DEFAULT": json.dumps(wasb),
    }


# ---------------------------------------------------------------- Batch
def _start_batch(stack: Stack) -> None:
    account = stack.batch_account()
    start_batch_service(stack.state_dir, stack.ports["batch"], account["account"], account["key"],
                        stack.azurite.connection_string)


def _batch_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports['batch']}"


def _batch_answers(stack: Stack) -> bool:
    try:
        with urllib.request.urlopen(f"{_batch_url(stack)}/_emulator/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _batch_environment(stack: Stack) -> dict[str, str]:
    account = stack.batch_account()
    connection = {"conn_type": "azure_batch", "login": account["account"], "password": account["key"],
                  "extra": {"account_url": _batch_url(stack)}}
    # The scoring runtime reaches the local nodes as on Azure: the scoring image from the
    # local registry (built once by `make runtime`), logged into with an Airflow connection.
    registry = scoring_image.build()
    registry_conn = {"conn_type": "generic", "host": registry["server"], "login": registry["username"],
                     "password": registry["password"]}
    return {
        "AZURE_BATCH_URL": _batch_url(stack),
        "AZURE_BATCH_ACCOUNT": account["account"],
        "AZURE_BATCH_KEY": account["key"],
        "AIRFLOW_CONN_AZURE_BATCH_DEFAULT": json.dumps(connection),
        "AIRFLOW_CONN_SCORING_REGISTRY": json.dumps(registry_conn),
        "MONTHLY_DETECTION_SCORING_RUNTIME": "container",
        "MONTHLY_DETECTION_CONTAINER_IMAGE": registry["image"],
        "MONTHLY_DETECTION_CONTAINER_REGISTRY_CONN_ID": "scoring_registry",
    }


# ---------------------------------------------------------------- Azure ML
def _start_aml(stack: Stack) -> None:
    start_aml_service(stack.state_dir, stack.ports["aml"], stack.azurite.connection_string, stack.aml_token())


SERVICES: list[ServiceSpec] = [
    ServiceSpec("azurite", "LOCAL_AZURITE_PORT", 10000, _start_azurite, _azurite_answers, _azurite_environment),
    ServiceSpec("batch", "LOCAL_BATCH_PORT", 10100, _start_batch, _batch_answers, _batch_environment),
    ServiceSpec("aml", "LOCAL_AML_PORT", 10200, _start_aml, lambda stack: stack.aml.answers(),
                lambda stack: stack.aml.environment()),
]


# ---------------------------------------------------------------- commands
def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_until_answers(spec: ServiceSpec, stack: Stack) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not spec.answers(stack):
        if time.monotonic() > deadline:
            log = ServiceProcess(spec.name, stack.state_dir).log_file
            raise SystemExit(f"{spec.name} on port {stack.ports[spec.name]} does not answer; see {log}")
        time.sleep(0.2)


def _create_containers(stack: Stack) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
    for name in PRODUCT_CONTAINERS:
        try:
            service.create_container(name)
        except ResourceExistsError:
            pass


def _register_aml_datastores(stack: Stack) -> None:
    """Register the DAG's datastores in the local workspace through MLClient, as a user would on Azure."""
    from local_stack.aml_setup import local_ml_client, register_blob_datastores
    from local_stack.azurite import ACCOUNT_KEY
    from include.monthly.config import DagConfig

    config = DagConfig.from_env()
    aml = stack.aml
    client = local_ml_client(aml.url, aml.token, aml.subscription_id, aml.resource_group, aml.workspace)
    names = register_blob_datastores(client, ACCOUNT_NAME, ACCOUNT_KEY, config.aml_datastores(), protocol="http")
    print(f"aml: datastores {', '.join(names)} registered")


def write_services_env(stack: Stack) -> Path:
    """`.local/services.env`: one `export NAME=value` line per variable (owner-readable only: it holds keys)."""
    lines = ["# Written by `make local-up` (local_stack/stack.py). Source it: . .local/services.env"]
    for spec in SERVICES:
        for name, value in spec.environment(stack).items():
            lines.append(f"export {name}={shlex.quote(value)}")
    path = stack.state_dir / SERVICES_ENV
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def make_stack(state_dir: Path = STATE_DIR) -> Stack:
    return Stack(state_dir=state_dir, ports={spec.name: spec.port() for spec in SERVICES})


def up(stack: Stack) -> Path:
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    for spec in SERVICES:
        process = ServiceProcess(spec.name, stack.state_dir)
        port = stack.ports[spec.name]
        if process.pid() is not None:
            print(f"{spec.name}: already running (pid {process.pid()}, port {port})")
        else:
            if _port_taken(port):
                raise SystemExit(f"{spec.name}: port {port} is taken by a process this stack did not start; "
                                 f"set {spec.port_variable} to another port")
            spec.start(stack)
            print(f"{spec.name}: started (pid {process.pid()}, port {port})")
        _wait_until_answers(spec, stack)
    _create_containers(stack)
    _register_aml_datastores(stack)
    path = write_services_env(stack)
    print(f"wrote {path}; load it with: . {path}")
    return path


def down(stack: Stack) -> None:
    for spec in reversed(SERVICES):
        stopped = ServiceProcess(spec.name, stack.state_dir).stop()
        print(f"{spec.name}: {'stopped' if stopped else 'was not running'}")
    (stack.state_dir / SERVICES_ENV).unlink(missing_ok=True)


def status(stack: Stack) -> int:
    """Print each service's state; exit status 0 only when all run and answer."""
    healthy = True
    for spec in SERVICES:
        pid = ServiceProcess(spec.name, stack.state_dir).pid()
        answers = pid is not None and spec.answers(stack)
        healthy &= answers
        state = f"running (pid {pid})" if pid else "stopped"
        print(f"{spec.name}: {state}, port {stack.ports[spec.name]}, {'answers' if answers else 'not answering'}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help="default: .local/ in the project")
    args = parser.parse_args(argv)
    stack = make_stack(args.state_dir.resolve())
    if args.command == "up":
        up(stack)
        return 0
    if args.command == "down":
        down(stack)
        return 0
    return status(stack)


if __name__ == "__main__":
    sys.exit(main())
