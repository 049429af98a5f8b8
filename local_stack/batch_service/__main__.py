"""Command line: run the local Batch service in the foreground until SIGTERM/SIGINT."""
from __future__ import annotations

import argparse
import base64
import binascii
import os
import sys
from pathlib import Path

from aiohttp import web

from local_stack.batch_service import registry
from local_stack.batch_service.account_state import EngineConfig
from local_stack.batch_service.account_store import Store
from local_stack.batch_service.engine import Engine
from local_stack.batch_service.faults import Faults
from local_stack.batch_service.server import BatchApp

KEY_VARIABLE = "LOCAL_BATCH_KEY"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local_stack.batch_service", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--state-dir", type=Path, required=True, help="SQLite state and node folders live here")
    parser.add_argument("--account", required=True, help="Batch account name")
    parser.add_argument("--key", default=os.environ.get(KEY_VARIABLE),
                        help=f"base64 Shared Key for the account (or env {KEY_VARIABLE}, which keeps it out of `ps`)")
    parser.add_argument("--storage-connection-string", default=None, help="for autoStorageContainerName resource files")
    parser.add_argument("--node-allocation-delay", type=float, default=0.0, help="seconds before a resize adds nodes")
    parser.add_argument("--registry-dir", type=Path, default=registry.default_root(),
                        help="the local container registry (registry.json; `make runtime` fills .local/registry); "
                             "env LOCAL_BATCH_REGISTRY_DIR")
    parser.add_argument("--node-removal-delay", type=float, default=0.0, help="seconds before a resize removes nodes")
    parser.add_argument("--stop-resize-delay", type=float, default=0.0, help="seconds a pool stays 'stopping'")
    parser.add_argument("--preempted-node-recovery", type=float, default=1.0, help="seconds a preempted node stays away")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error(f"--key or {KEY_VARIABLE} is required")
    try:
        base64.b64decode(args.key, validate=True)
    except (binascii.Error, ValueError):
        parser.error("--key must be base64 (an Azure Batch account key)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    config = EngineConfig(
        state_dir=state_dir,
        account=args.account,
        base_url=f"http://127.0.0.1:{args.port}",
        storage_connection_string=args.storage_connection_string,
        node_allocation_delay=args.node_allocation_delay,
        node_removal_delay=args.node_removal_delay,
        stop_resize_delay=args.stop_resize_delay,
        preempted_node_recovery=args.preempted_node_recovery,
        registry_dir=args.registry_dir.resolve() if args.registry_dir else None,
    )
    faults = Faults()
    store = Store(state_dir / "batch.sqlite")
    engine = Engine(config, store, faults)
    app = BatchApp(engine, faults, args.account, args.key).make_app()

    async def on_startup(_app: web.Application) -> None:
        engine.start()

    async def on_shutdown(_app: web.Application) -> None:
        engine.stop()  # first thing on SIGTERM: no result is recorded from here on

    async def on_cleanup(_app: web.Application) -> None:
        store.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    print(f"local Azure Batch service for account {args.account} on {config.base_url}, state in {state_dir}", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
