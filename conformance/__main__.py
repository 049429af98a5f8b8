"""`python -m conformance`: run azure-batch's own tests/test_batch.py against the local Batch service.

Prints one row per test run (sync and async): pass / fail / out of scope, and the reason.
Exits non-zero when an in-scope test fails. Options: -k EXPR (pytest's), --cache DIR.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from conformance import sdist

ROOT = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "standin"
PYTEST_INI = "[pytest]\naddopts = -p conformance.plugin -p no:cacheprovider\ntimeout = 300\n"


@dataclass
class Row:
    test: str
    outcome: str  # pass, fail, out of scope
    reason: str


def run_suite(workdir: Path, cache: Path, select: str | None = None) -> list[Row]:
    version = sdist.installed_version()
    archive = sdist.fetch(cache, version)
    suite_dir = workdir / "suite"
    shutil.rmtree(suite_dir, ignore_errors=True)
    test_file = sdist.extract_suite(archive, suite_dir)
    (suite_dir / "pytest.ini").write_text(PYTEST_INI)
    report = workdir / "report.xml"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STANDIN), str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "pytest", str(test_file), "-c", str(suite_dir / "pytest.ini"),
            "--rootdir", str(suite_dir), f"--junitxml={report}", "-q", "-rN",
            f"--basetemp={workdir / 'tmp'}"]
    if select:
        argv += ["-k", select]
    report.unlink(missing_ok=True)
    subprocess.run(argv, cwd=suite_dir, env=env, check=False)
    if not report.exists():
        raise RuntimeError(f"pytest wrote no report ({report}); see its output above")
    return parse_report(report)


def parse_report(report: Path) -> list[Row]:
    rows = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        problem = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if problem is None:
            rows.append(Row(name, "pass", ""))
        elif problem.tag == "skipped":
            rows.append(Row(name, "out of scope", (problem.get("message") or "").removeprefix("out of scope: ")))
        else:
            rows.append(Row(name, "fail", _first_line(problem.get("message") or problem.text or "")))
    return rows


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:160]


def table(rows: list[Row]) -> str:
    width = max([len(r.test) for r in rows] + [4])
    lines = [f"{'test'.ljust(width)}  {'result'.ljust(12)}  reason", f"{'-' * width}  {'-' * 12}  {'-' * 6}"]
    lines += [f"{r.test.ljust(width)}  {r.outcome.ljust(12)}  {r.reason}" for r in rows]
    passed = sum(r.outcome == "pass" for r in rows)
    in_scope = sum(r.outcome != "out of scope" for r in rows)
    lines.append(f"\n{passed} of {in_scope} in-scope test runs pass; {len(rows) - in_scope} out of scope.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    parser.add_argument("-k", dest="select", help="pytest -k expression")
    parser.add_argument("--cache", type=Path, default=ROOT / ".local" / "conformance" / "sdist")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".local" / "conformance")
    args = parser.parse_args(argv)
    rows = run_suite(args.workdir, args.cache, args.select)
    print(table(rows))
    return 0 if rows and all(r.outcome != "fail" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
