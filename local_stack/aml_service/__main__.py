"""Command line: ``python -m local_stack.aml_service --port P --state-dir DIR --storage-connection-string CS``."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from aiohttp import web

from local_stack.aml_service.app import ServiceConfig, make_app
from local_stack.aml_service.blob import StorageAccount
from local_stack.aml_service.jobs import JobScheduler
from local_stack.aml_service.resource_store import ResourceStore

DEFAULT_TOKEN = "local-aml-token"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Azure Machine Learning endpoint (loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--storage-connection-string", default=os.environ.get("AZURE_STORAGE_CONNECTION_STRING"))
    parser.add_argument("--token", default=os.environ.get("AZURE_ML_LOCAL_TOKEN", DEFAULT_TOKEN),
                        help="shared secret that signs every request's token (better: env AZURE_ML_LOCAL_TOKEN, "
                             "which `ps` does not show)")
    parser.add_argument("--subscription-id", default="00000000-0000-0000-0000-000000000000")
    parser.add_argument("--resource-group", default="local-rg")
    parser.add_argument("--workspace", default="local-ws")
    args = parser.parse_args(argv)
    if not args.storage_connection_string:
        parser.error("--storage-connection-string (or AZURE_STORAGE_CONNECTION_STRING) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    config = ServiceConfig(
        storage=StorageAccount(args.storage_connection_string),
        token=args.token,
        subscription_id=args.subscription_id,
        resource_group=args.resource_group,
        workspace=args.workspace,
        base_url=f"http://127.0.0.1:{args.port}",
    )
    store = ResourceStore(args.state_dir / "aml.sqlite")
    scheduler = JobScheduler(store, args.storage_connection_string, args.state_dir)
    web.run_app(make_app(config, store, scheduler), host="127.0.0.1", port=args.port, print=None,
                access_log_format='%r %s')


if __name__ == "__main__":
    main()
