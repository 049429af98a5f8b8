"""`make backfill` survives SQLite refusing a write while the scheduler writes: it runs the command again."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from local_stack.demo.backfill import LOCK_ATTEMPTS, create_backfill

# Stands in for the `airflow` CLI: fails like Airflow does on a locked SQLite database
# for the first N calls (Airflow removes the partial backfill itself), then succeeds.
FAKE_AIRFLOW = """#!/bin/sh
calls="$FAKE_STATE/calls"
echo "$@" >> "$calls"
if [ "$(wc -l < "$calls")" -le "$FAKE_LOCKED_CALLS" ]; then
  echo "${FAKE_ERROR:-sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked}" >&2
  exit 1
fi
echo 'Created backfill Dag run.'
"""


@pytest.fixture
def fake_cli(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "bin" / "airflow"
    script.parent.mkdir()
    script.write_text(FAKE_AIRFLOW)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{script.parent}:{os.environ['PATH']}", "FAKE_STATE": str(tmp_path)}


def test_a_locked_database_is_retried_until_the_backfill_is_created(fake_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("local_stack.demo.backfill.time.sleep", lambda seconds: None)
    done = create_backfill("2024-06-01", "2024-08-31", env={**fake_cli, "FAKE_LOCKED_CALLS": "2"})
    assert "Created backfill" in done.stdout
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 3
    assert calls[0] == "backfill create --dag-id monthly_detection --from-date 2024-06-01 --to-date 2024-08-31"


def test_other_failures_and_a_lock_that_never_clears_are_errors(fake_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("local_stack.demo.backfill.time.sleep", lambda seconds: None)
    with pytest.raises(RuntimeError, match="database is locked"):
        create_backfill("2024-06-01", "2024-08-31", env={**fake_cli, "FAKE_LOCKED_CALLS": "99"})
    assert len((tmp_path / "calls").read_text().splitlines()) == LOCK_ATTEMPTS
    (tmp_path / "calls").unlink()
    with pytest.raises(RuntimeError, match="Another backfill is running"):
        create_backfill("2024-06-01", "2024-08-31", env={
            **fake_cli, "FAKE_LOCKED_CALLS": "99", "FAKE_ERROR": "AlreadyRunningBackfill: Another backfill is running"})
    assert len((tmp_path / "calls").read_text().splitlines()) == 1  # not a lock: no second try
