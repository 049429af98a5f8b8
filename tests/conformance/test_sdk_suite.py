"""`make conformance` inside `make test`: the azure-batch SDK's own suite passes against the local service."""
from __future__ import annotations

from pathlib import Path

from conformance.__main__ import ROOT, run_suite, table
from conformance.scope import OUT_OF_SCOPE


def test_every_in_scope_test_of_the_sdk_suite_passes_sync_and_async(tmp_path: Path):
    rows = run_suite(tmp_path, ROOT / ".local" / "conformance" / "sdist")
    report = table(rows)
    print(report)
    in_scope = [r for r in rows if r.outcome != "out of scope"]
    assert len(in_scope) == 22, report  # 11 tests, each with the sync and the async client
    assert all(r.outcome == "pass" for r in in_scope), report
    skipped = {r.test.split("[")[0] for r in rows if r.outcome == "out of scope"}
    assert skipped == set(OUT_OF_SCOPE), report
