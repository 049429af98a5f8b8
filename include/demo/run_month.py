"""Run the monthly DAG for one month through Airflow on the local stack, and show the result.

Used by ``make demo``: the same DAG code as in production, with the local
connections from ``.local/services.env``. Exits non-zero if the run failed or
the published CSV does not account for every staged image.

    scripts/local-env python -m include.demo.run_month --month 2024-01
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from include.monthly.layout import parse_month

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_dag(month: str, backend: str) -> str:
    """``dag.test()`` the monthly DAG with ``month``; returns the run's final state."""
    subprocess.run(["airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags["monthly_detection"]
    run = dag.test(run_conf={"month": month, "backend": backend})
    return str(run.state)


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
        f"  predictions.csv    {dest / 'predictions.csv'}",
        f"  summary.json       {dest / 'summary.json'}",
        "  in Blob storage    predictions/" + summary["month"].replace("-", "") + "/predictions.csv",
    ]
    if len(images) != summary["images"]:
        lines.append(f"  MISMATCH: {len(images)} images in the CSV, {summary['images']} staged")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--month", required=True, help="YYYY-MM")
    parser.add_argument("--backend", default="batch", choices=["batch", "aml"])
    parser.add_argument("--output", default=str(PROJECT_ROOT / "demo-output"))
    args = parser.parse_args(argv)
    parse_month(args.month)
    state = run_dag(args.month, args.backend)
    if state != "success":
        print(f"the DAG run for {args.month} ended {state}; see the task logs above", file=sys.stderr)
        return 1
    dest, summary = save_outputs(args.month, Path(args.output))
    text = describe(dest, summary)
    print("\n" + text)
    return 1 if "MISMATCH" in text else 0


if __name__ == "__main__":
    sys.exit(main())
