"""Run the monthly DAG for one month through Airflow on the local stack, and show the result.

Used by ``make demo``: the same DAG code as in production, with the local
connections from ``.local/services.env``. Exits non-zero if the run failed or
the published CSV does not account for every staged image.

    scripts/local-env python -m local_stack.demo.run_month --month 2024-01
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from include.monthly.layout import parse_month

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_dag(month: str, backend: str, log_path: Path) -> str:
    """``dag.test()`` the monthly DAG with ``month``, its task logs going to ``log_path``; returns the final state."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"running monthly_detection for {month} on the local stack (task logs: {log_path}) ...", flush=True)
    with open(log_path, "w") as log, _redirected(log):
        subprocess.run(["airflow", "db", "migrate"], check=True, stdout=log, stderr=log)
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
        if bag.import_errors:
            raise SystemExit(f"DAG import errors: {bag.import_errors}")
        run = bag.dags["monthly_detection"].test(run_conf={"month": month, "backend": backend})
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print("  " + ", ".join(f"{task} {state}" for task, state in states.items()))
    return str(run.state)


@contextlib.contextmanager
def _redirected(stream):
    """Send this process's stdout and stderr (file descriptors included) to ``stream``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(stream.fileno(), 1)
    os.dup2(stream.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def save_outputs(month_text: str, dest_root: Path) -> tuple[Path, dict]:
    from azure.storage.blob import BlobServiceClient

    from include.monthly.publish import save_published

    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    dest = save_published(service.get_container_client("predictions"), parse_month(month_text), dest_root)
    summary = json.loads((dest / "summary.json").read_text())
    return dest, summary


def describe(dest: Path, summary: dict) -> str:
    with open(dest / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    images = {row["image"] for row in rows}
    per_class = Counter(row["class_name"] for row in rows if row["status"] == "ok")
    lines = [
        f"month {summary['month']}: {summary['outcome']}",
        f"  images scored      {len(images)} (staged {summary['images']}, skipped {summary['skipped']['count']} non-image files)",
        f"  detections         {sum(per_class.values())}: " + ", ".join(f"{n} {c}" for c, n in per_class.most_common(6)),
        f"  error rows         {summary['errors']}",
        f"  shards             {summary['shards']}, node time {summary['node_time_seconds']:.0f}s, wall {summary['wall_time_seconds']:.0f}s",
        f"  compute cost       {_cost(summary)}",
        f"  predictions.csv    {dest / 'predictions.csv'}",
        f"  summary.json       {dest / 'summary.json'}",
        f"  predictions.parquet {dest / 'predictions.parquet'}",
        f"  report.html        {dest / 'report.html'}",
        "  in Blob storage    predictions/" + summary["month"].replace("-", "") + "/predictions.csv",
    ]
    if len(images) != summary["images"]:
        lines.append(f"  MISMATCH: {len(images)} images in the CSV, {summary['images']} staged")
    return "\n".join(lines)


def _cost(summary: dict) -> str:
    compute = summary.get("compute") or {}
    if compute.get("cost") is None:
        return "unknown (no price for " + ", ".join(compute.get("cost_missing_prices") or ["this backend"]) + ")"
    return f"{compute['cost']:.4f} {compute.get('currency', '')} ({compute.get('vm_size')}, prices in include/monthly/config.py)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--month", required=True, help="YYYY-MM")
    parser.add_argument("--backend", default="batch", choices=["batch", "aml"])
    parser.add_argument("--output", default=str(PROJECT_ROOT / "demo-output"))
    args = parser.parse_args(argv)
    log_path = PROJECT_ROOT / ".local" / f"demo-{parse_month(args.month).key}.log"
    state = run_dag(args.month, args.backend, log_path)
    if state != "success":
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        print(f"the DAG run for {args.month} ended {state}; full task logs in {log_path}", file=sys.stderr)
        return 1
    dest, summary = save_outputs(args.month, Path(args.output))
    text = describe(dest, summary)
    print("\n" + text)
    return 1 if "MISMATCH" in text else 0


if __name__ == "__main__":
    sys.exit(main())
