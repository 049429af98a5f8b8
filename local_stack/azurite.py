"""Azurite, Microsoft's Blob Storage emulator, run from node_modules.

Azurite uses the well-known development account `devstoreaccount1`; its key is
public (documented by Microsoft), so it is not a secret.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from local_stack.processes import ServiceProcess

ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
PROJECT_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob"


@dataclass(frozen=True)
class AzuriteEndpoint:
    """Where a running Azurite answers."""

    port: int

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_url};"
        )


def start_azurite(state_dir: Path, port: int) -> AzuriteEndpoint:
    """Start Azurite on 127.0.0.1:port with its data under state_dir/azurite."""
    if not AZURITE_BIN.exists():
        raise FileNotFoundError(f"{AZURITE_BIN} is missing: run `npm ci` in {PROJECT_ROOT}")
    data_dir = state_dir / "azurite"
    data_dir.mkdir(parents=True, exist_ok=True)
    ServiceProcess("azurite", state_dir).start(
        [
            str(AZURITE_BIN),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(port),
            "--location", str(data_dir),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--disableTelemetry",
        ],
        port=port,
    )
    return AzuriteEndpoint(port)


def stop_azurite(state_dir: Path) -> bool:
    return ServiceProcess("azurite", state_dir).stop()
