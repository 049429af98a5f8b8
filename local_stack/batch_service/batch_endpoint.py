"""Start and stop the local Batch service as a background process (like azurite.py does for Azurite)."""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from local_stack.processes import ServiceProcess

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REGISTRY = PROJECT_ROOT / ".local" / "registry"
SERVICE_NAME = "batch"


@dataclass(frozen=True)
class BatchEndpoint:
    """Where a running local Batch service answers, and its Shared Key credentials."""

    port: int
    account: str
    key: str
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs):
        """An azure.batch.BatchClient authenticated with the account's Shared Key."""
        from azure.batch import BatchClient
        from azure.core.credentials import AzureNamedKeyCredential

        return BatchClient(self.url, AzureNamedKeyCredential(self.account, self.key), **kwargs)

    def emulator(self, method: str, path: str, body: dict | None = None) -> object:
        """Call an /_emulator/ endpoint (faults, request counts) and return its JSON.

        `path` may be "requests" or the full "/_emulator/requests".
        """
        path = path.lstrip("/").removeprefix("_emulator/")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/_emulator/{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")


def start_batch_service(state_dir: Path, port: int, account: str, key: str,
                        storage_connection_string: str | None = None, extra_args: list[str] | None = None) -> BatchEndpoint:
    """Run `python -m local_stack.batch_service` in the background; state under state_dir/batch.

    Its nodes pull images from the project's local registry (``make runtime``:
    ``.local/registry``, or ``LOCAL_BATCH_REGISTRY_DIR``) unless extra_args name another.
    """
    registry_dir = os.environ.get("LOCAL_BATCH_REGISTRY_DIR") or str(DEFAULT_REGISTRY)
    argv = [sys.executable, "-m", "local_stack.batch_service", "--port", str(port),
            "--state-dir", str(state_dir / "batch"), "--account", account, "--registry-dir", registry_dir]
    if storage_connection_string:
        argv += ["--storage-connection-string", storage_connection_string]
    argv += extra_args or []
    pythonpath = str(PROJECT_ROOT)
    # the key goes through the environment, not argv, so `ps` does not show it
    ServiceProcess(SERVICE_NAME, state_dir).start(argv, port=port, env={"PYTHONPATH": pythonpath, "LOCAL_BATCH_KEY": key})
    return BatchEndpoint(port, account, key, state_dir)


def stop_batch_service(state_dir: Path) -> bool:
    return ServiceProcess(SERVICE_NAME, state_dir).stop()
