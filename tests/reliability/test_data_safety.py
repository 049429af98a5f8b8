"""Data safety of the monthly DAG: a failed run changes no published output, of its month or any other.

Atomic replacement of predictions.csv itself is shown in tests/monthly/test_month_publish.py
(staged blocks invisible until committed; a concurrent reader sees the old or the new file).
"""
from __future__ import annotations

import datetime as dt

import pytest

from local_stack.demo.seed import seed_month
from include.monthly.layout import parse_month
from include.monthly.publish import load_published, publish
from include.monthly.schema import PREDICTION_COLUMNS
from reliability_helpers import run_month

pytestmark = pytest.mark.slow


def test_a_failed_run_leaves_every_published_output_as_it_was(monthly_dag, storage, local_batch, tmp_path, capfd):
    month, neighbour = parse_month("2025-10"), parse_month("2025-11")
    seed_month(storage, "images", month, count=3)
    output = storage.get_container_client("predictions")
    earlier = tmp_path / "predictions.csv"
    earlier.write_text(",".join(PREDICTION_COLUMNS) + "\n")
    for m in (month, neighbour):  # an earlier, complete publish of this month and of the next one
        publish(output, m, earlier, {"month": str(m), "run_id": "earlier", "at": dt.datetime.now().isoformat()})
    before = {b.name: b.etag for b in output.list_blobs()}
    # Every attempt of every shard fails: beyond the error threshold, the run must fail.
    local_batch.emulator("POST", "faults", {"kind": "task_exit", "jobId": f"^monthly-detection-{month.key}-",
                                            "taskId": "^shard-", "exitCode": 9, "attempts": 5})

    state, states, log, _ = run_month(monthly_dag, capfd, str(month))

    assert state == "failed"
    assert states["wait"] == "failed" and states["publish"] in ("upstream_failed", "skipped"), states
    assert "exit code 9" in log and "shard-00000" in log  # the failure names the shard and its exit code
    assert "up_for_retry" not in log.lower()  # a finished job's verdict is final: no Airflow retry of the wait
    assert {b.name: b.etag for b in output.list_blobs()} == before  # not one output blob changed
    assert load_published(output, month).summary["run_id"] == "earlier"  # still the complete earlier result
    local_batch.emulator("DELETE", "faults")
