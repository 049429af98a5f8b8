"""Backfill months through the real scheduler and triggerer, wait, and report each month.

``make backfill FROM=2024-01 TO=2024-03``: starts the local Airflow if needed,
seeds sample images for months that have none (local stack only), runs
``airflow backfill create`` for the months' data intervals, waits for the runs
and prints each month's outcome from its published ``summary.json``.
"""
from __future__ import annotations

import argparse
import calendar
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from local_stack.demo.airflow_stack import PROJECT_ROOT, AirflowAPI, admin_password, start_standalone
from include.monthly.layout import Month, parse_month

DAG_ID = "monthly_detection"
LOCK_ATTEMPTS = 5  # `airflow backfill create` tries on a locked SQLite database


def create_backfill(start: str, end: str, extra_args: Sequence[str] = (),
                    env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``airflow backfill create`` for the monthly DAG from `start` to `end`, tried again if SQLite was locked.

    On SQLite (the local Airflow) the command writes while the scheduler does,
    and SQLite refuses a write at once ("database is locked") when both
    upgrade their locks. Airflow then removes the partly created backfill so
    that the command can be run again (``_cleanup_partial_backfill``).
    """
    argv = ["airflow", "backfill", "create", "--dag-id", DAG_ID, "--from-date", start, "--to-date", end,
            *extra_args]
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        done = subprocess.run(argv, env=None if env is None else dict(env), capture_output=True, text=True)
        output = done.stdout + done.stderr
        if done.returncode == 0:
            return done
        if "database is locked" not in output or attempt == LOCK_ATTEMPTS:
            raise RuntimeError(f"airflow backfill create failed (exit {done.returncode}): {output[-3000:]}")
        print(f"airflow backfill create: SQLite was locked, trying again ({attempt}/{LOCK_ATTEMPTS})",
              file=sys.stderr)
        time.sleep(2 * attempt)
    raise AssertionError("the last attempt returns or raises")


def months_between(first: Month, last: Month) -> list[Month]:
    if last < first:
        raise ValueError(f"TO {last} is before FROM {first}")
    months, current = [], first
    while current <= last:
        months.append(current)
        current = Month(current.year + current.month // 12, current.month % 12 + 1)
    return months


def backfill_window(first: Month, last: Month) -> tuple[str, str]:
    """``--from-date``/``--to-date`` covering the runs whose data interval is each month.

    With a monthly ``CronDataIntervalTimetable`` a run's logical date is the start
    of the month it processes, so the window is the first to the last day.
    """
    last_day = calendar.monthrange(last.year, last.month)[1]
    return f"{first.year:04d}-{first.month:02d}-01", f"{last.year:04d}-{last.month:02d}-{last_day:02d}"


def seed_missing(months: list[Month], images_per_month: int) -> None:
    from azure.storage.blob import BlobServiceClient

    from local_stack.demo.seed import seed_month

    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    container = service.get_container_client("images")
    for month in months:
        if next(iter(container.list_blobs(name_starts_with=month.prefix)), None) is None:
            count = seed_month(service, "images", month, images_per_month)
            print(f"seeded {count} sample blobs for {month} (the month folder was empty)")


def report(months: list[Month], states: dict[Month, str]) -> int:
    from azure.storage.blob import BlobServiceClient

    from include.monthly.publish import load_published

    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    output = service.get_container_client("predictions")
    failures = 0
    for month in months:
        state = states.get(month, "missing")
        line = f"{month}: run {state}"
        if state == "success":
            summary = load_published(output, month).summary
            line += (f", {summary['outcome']}: {summary['images']} images, {summary['detections']} detections, "
                     f"{summary['errors']} errors -> predictions/{month.key}/predictions.csv")
        else:
            failures += 1
        print(line)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="first", required=True, help="first month, YYYY-MM")
    parser.add_argument("--to", dest="last", required=True, help="last month, YYYY-MM")
    parser.add_argument("--seed-missing", type=int, default=0, metavar="N",
                        help="on the local stack: seed N sample images into empty month folders")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    months = months_between(parse_month(args.first), parse_month(args.last))
    if args.seed_missing:
        seed_missing(months, args.seed_missing)
    api = start_standalone(PROJECT_ROOT / ".local")
    api.password = admin_password(Path(os.environ["AIRFLOW_HOME"]))
    api.wait_for_dag(DAG_ID)
    start, end = backfill_window(months[0], months[-1])
    create_backfill(start, end, ["--reprocess-behavior", "completed"])
    print(f"backfill of {DAG_ID} created for {months[0]}..{months[-1]}")
    states = wait_for_backfill(api, months, args.timeout)
    return report(months, states)


def wait_for_backfill(api: AirflowAPI, months: list[Month], timeout: float) -> dict[Month, str]:
    """Until the backfill runs of these months finished; month -> final state."""
    wanted = {month.key for month in months}
    runs = {}
    for run in api.runs(DAG_ID, run_type="backfill"):
        key = (run.get("logical_date") or "")[:7].replace("-", "")
        if key in wanted:
            runs[key] = run["dag_run_id"]
    missing = wanted - runs.keys()
    if missing:
        raise RuntimeError(f"no backfill run was created for {sorted(missing)}")
    states = api.wait_for_runs(DAG_ID, list(runs.values()), timeout)
    return {month: states[runs[month.key]] for month in months}


if __name__ == "__main__":
    sys.exit(main())
