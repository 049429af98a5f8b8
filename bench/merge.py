"""Merge: our streaming ``merge_shards`` versus ``pandas.concat``, each in its own process.

Setup writes 2,000 shard result CSVs (2,000,000 rows, the scoring schema) and
their manifests to Azurite, laid out as staging and the Batch tasks leave them.
Then each side runs in a fresh child process reading the same blobs:

- ``ours``: ``include.monthly.merge.merge_shards`` (streams each shard's CSV,
  checks every row against the shard's manifest, writes predictions.csv).
- ``pandas``: downloads each result blob, ``pandas.read_csv`` on it,
  ``pandas.concat`` of all frames, ``to_csv`` (no checks).
- ``download`` (context): only downloads what each side reads (the result
  blobs; the manifests, which only our merge reads to check the rows), to show
  how much of either time is Azurite rather than CSV work.

The two merges run twice, in the order ours, pandas, pandas, ours; each side's
time is its faster run and its peak RSS the larger one.

Time is measured inside the child (from the first request to the closed
output); peak RSS is the child's ``VmHWM`` from ``/proc/self/status`` read by
the child as it finishes (the kernel's high-water mark of its resident set).
``ru_maxrss`` from ``wait4`` is not used: Linux carries the parent's peak over
into a child started by fork/vfork + exec, so it would report the (large)
benchmark runner instead of the merge.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.config import MERGE_ROWS, MERGE_SHARDS, MERGE_UPLOAD_THREADS, PROJECT_ROOT

CONNECTION_ENV = "BENCH_STORAGE_CONNECTION_STRING"
WORK_CONTAINER = "work"
# One group of 6 images gives 20 rows: detections (ok) 6+5+4+3, one empty, one error.
GROUP = ((6, "ok"), (5, "ok"), (4, "ok"), (1, "empty"), (3, "ok"), (1, "error"))
GROUP_ROWS = sum(rows for rows, _ in GROUP)
CLASSES = ((0, "person"), (2, "car"), (5, "bus"), (7, "truck"), (16, "dog"), (24, "backpack"))


def _shard_files(index: int, rows: int) -> tuple[bytes, bytes]:
    """A shard's manifest and result CSV bytes, deterministic in the index."""
    from include.monthly.schema import PREDICTION_COLUMNS

    names, lines = [], [",".join(PREDICTION_COLUMNS)]
    image = 0
    while len(lines) - 1 < rows:
        for count, status in GROUP:
            name = f"202401/cam-{index % 50:02d}/day-{image % 28 + 1:02d}/IMG_{index:05d}_{image:05d}.jpg"
            names.append(name)
            image += 1
            if status == "ok":
                for k in range(count):
                    cls, label = CLASSES[(image + k) % len(CLASSES)]
                    x, y = (image * 37 + k * 101) % 1800, (image * 53 + k * 67) % 1000
                    lines.append(f"{name},ok,{cls},{label},{0.25 + (image * 7 + k) % 70 / 100:.4f},"
                                 f"{x}.25,{y}.5,{x + 120}.75,{y + 240}.0,1920,1080,")
            elif status == "empty":
                lines.append(f"{name},empty,,,,,,,,1920,1080,")
            else:
                lines.append(f"{name},error,,,,,,,,,,corrupt image: image file is truncated")
    return "".join(f"{n}\n" for n in names).encode(), ("\n".join(lines) + "\n").encode()


def stage_shards(connection_string: str, shards: int = MERGE_SHARDS, rows: int = MERGE_ROWS) -> dict[str, Any]:
    """Upload every shard's manifest and result; return the StageResult as a dict."""
    from azure.storage.blob import BlobServiceClient

    from include.monthly.layout import Month, RunPaths, shard_id
    from include.monthly.staging import Shard, StageResult, manifest_digest

    if rows % (shards * GROUP_ROWS):
        raise ValueError(f"{rows} rows do not split into {shards} shards of whole {GROUP_ROWS}-row groups")
    per_shard = rows // shards
    month, run_key = Month(2024, 1), "bench-merge"
    paths = RunPaths(month, run_key)
    container = BlobServiceClient.from_connection_string(connection_string).get_container_client(WORK_CONTAINER)

    def upload(index: int) -> Shard:
        manifest, result = _shard_files(index, per_shard)
        sid = shard_id(index)
        container.upload_blob(paths.manifest(sid), manifest, overwrite=True)
        container.upload_blob(paths.result(sid), result, overwrite=True)
        return Shard(sid, manifest.count(b"\n"), paths.manifest(sid), manifest_digest(manifest))

    with ThreadPoolExecutor(MERGE_UPLOAD_THREADS) as pool:
        staged = list(pool.map(upload, range(shards)))
    stage = StageResult(month=month, run_key=run_key, source_container="images", source_prefix=month.prefix,
                        shard_size=max(s.image_count for s in staged), image_count=sum(s.image_count for s in staged),
                        shards=tuple(staged))
    return stage.to_dict()


def _merge_ours(container, stage_dict: dict[str, Any], out: Path) -> int:
    from include.monthly.merge import merge_shards
    from include.monthly.staging import StageResult

    return merge_shards(container, StageResult.from_dict(stage_dict), out).rows


def _merge_pandas(container, stage_dict: dict[str, Any], out: Path) -> int:
    import pandas as pd

    from include.monthly.layout import RunPaths, parse_month

    paths = RunPaths(parse_month(stage_dict["month"]), stage_dict["run_key"])
    frames = [pd.read_csv(io.BytesIO(container.get_blob_client(paths.result(shard["id"])).download_blob().readall()))
              for shard in stage_dict["shards"]]
    merged = pd.concat(frames, ignore_index=True)
    merged.to_csv(out, index=False)
    return len(merged)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MiB, as the kernel counts it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)  # the kernel reports kB
    raise RuntimeError("VmHWM missing from /proc/self/status (not Linux?)")


def _download_only(container, stage_dict: dict[str, Any]) -> dict[str, float]:
    from include.monthly.layout import RunPaths, parse_month

    paths = RunPaths(parse_month(stage_dict["month"]), stage_dict["run_key"])
    timings = {}
    for what, names in (("results", [paths.result(shard["id"]) for shard in stage_dict["shards"]]),
                        ("manifests", [shard["manifest"] for shard in stage_dict["shards"]])):
        started = time.perf_counter()
        for name in names:
            container.get_blob_client(name).download_blob().readall()
        timings[f"download_{what}_seconds"] = round(time.perf_counter() - started, 3)
    return timings


def run_side(side: str, stage_file: Path, out: Path) -> dict[str, Any]:
    """One side, in this (child) process; the connection string comes from the environment."""
    from azure.storage.blob import BlobServiceClient

    stage_dict = json.loads(stage_file.read_text())
    container = BlobServiceClient.from_connection_string(os.environ[CONNECTION_ENV]).get_container_client(WORK_CONTAINER)
    if side == "download":
        return {"side": side, **_download_only(container, stage_dict)}
    started = time.perf_counter()
    rows = (_merge_ours if side == "ours" else _merge_pandas)(container, stage_dict, out)
    seconds = time.perf_counter() - started
    return {"side": side, "rows": rows, "seconds": round(seconds, 3), "peak_rss_mb": peak_rss_mb()}


def measure_side(side: str, stage_file: Path, out: Path, connection_string: str) -> dict[str, Any]:
    """Run one side in a fresh child process and return what it measured."""
    env = {**os.environ, CONNECTION_ENV: connection_string}
    argv = [sys.executable, "-m", "bench.merge", side, "--stage", str(stage_file), "--out", str(out)]
    done = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"merge side {side} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if out.exists():
        result["output_bytes"] = out.stat().st_size
    return result


def run(connection_string: str, work_dir: Path) -> dict[str, Any]:
    """Stage the shards once, then merge them both ways."""
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stage_file = work_dir / "stage.json"
    stage_file.write_text(json.dumps(stage_shards(connection_string)))
    staging_seconds = time.perf_counter() - started
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "pandas": []}
    for side in ("ours", "pandas", "pandas", "ours"):
        runs[side].append(measure_side(side, stage_file, work_dir / f"{side}.csv", connection_string))
    rows = {r["rows"] for side_runs in runs.values() for r in side_runs}
    if rows != {MERGE_ROWS}:
        raise RuntimeError(f"merged row counts {sorted(rows)} differ from the {MERGE_ROWS} staged rows")
    download = measure_side("download", stage_file, work_dir / "download.csv", connection_string)
    ours = {"seconds": min(r["seconds"] for r in runs["ours"]), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["ours"]),
            "output_bytes": runs["ours"][-1]["output_bytes"]}
    theirs = {"seconds": min(r["seconds"] for r in runs["pandas"]),
              "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["pandas"]),
              "output_bytes": runs["pandas"][-1]["output_bytes"]}
    return {
        "merge_rows": MERGE_ROWS,
        "merge_seconds": ours["seconds"],
        "merge_peak_rss_mb": ours["peak_rss_mb"],
        "pandas_merge_seconds": theirs["seconds"],
        "pandas_peak_rss_mb": theirs["peak_rss_mb"],
        "merge_context": {"shards": MERGE_SHARDS, "rows": MERGE_ROWS, "source": "Azurite (work container)",
                          "peak_rss_source": "VmHWM of each child process",
                          "staging_seconds": round(staging_seconds, 1),
                          "statistic": "faster of two runs (order ours, pandas, pandas, ours); larger peak RSS",
                          "seconds_by_run": {side: [r["seconds"] for r in side_runs] for side, side_runs in runs.items()},
                          "download_results_seconds": download["download_results_seconds"],
                          "download_manifests_seconds": download["download_manifests_seconds"],
                          "ours_output_bytes": ours["output_bytes"], "pandas_output_bytes": theirs["output_bytes"]},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one side of the merge benchmark (child process)")
    parser.add_argument("side", choices=("ours", "pandas", "download"))
    parser.add_argument("--stage", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run_side(args.side, args.stage, args.out)))


if __name__ == "__main__":
    main()
