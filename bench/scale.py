"""Growth with the month: staging, task description and the merge at 10,000, 100,000 (and 300,000) images.

For each size a month of that many image names is written to Azurite as tiny
blobs (2 bytes each: these steps never read an image), by several threads
sending plain Put Blob requests with a container SAS (setting up, not timed).
Then each step of the DAG runs the product's code in a fresh child process,
one after another, as the DAG's tasks would:

- ``stage``: ``include.monthly.staging.stage_month`` (lists the month, sorts,
  writes one manifest per 500 images and ``stage.json``);
- ``describe``: reads ``stage.json`` back, ``scoring_task_specs`` and
  ``write_task_specs`` (the Batch task descriptions as ``tasks.jsonl``);
- ``merge``: ``merge_shards`` over one result CSV per shard (one ``empty`` row
  per image, uploaded at set-up, not timed).

Per step: seconds (inside the child, from the first request to the last),
the child's peak resident set (``VmHWM``) and its resident set just before the
step (after imports), whose difference is the step's own memory. For ``stage``
also the time the storage service took to answer its List Blobs requests
(``list_wait_seconds``) and the rest, staging's own time (``own_seconds``): the
linear-time target is judged on the latter, since Azurite's listing grows with
the square of the container (see ``_time_list_requests``). XCom bytes:
the JSON of what the DAG's ``stage``, ``build_tasks`` and ``merge`` tasks
return for that month, next to what they returned before the record and the
task descriptions moved to Blob storage (the whole stage record and every task
description). The 300,000 month runs only when the 100,000 one predicts it
finishes within ``SCALE_LARGE_BUDGET_S``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.config import (
    PROJECT_ROOT,
    SCALE_LARGE_BUDGET_S,
    SCALE_LARGE_SIZE,
    SCALE_SIZES,
    SCALE_UPLOAD_THREADS,
)

CONNECTION_ENV = "BENCH_STORAGE_CONNECTION_STRING"
INPUT, WORK = "images", "work"
STEPS = ("stage", "describe", "merge")


def month_for(size: int) -> str:
    """A month of its own per size (2023-01 for the first, 2023-02 for the second, ...)."""
    return f"2023-{(SCALE_SIZES + (SCALE_LARGE_SIZE,)).index(size) + 1:02d}"


def image_names(month: str, count: int) -> list[str]:
    """Camera-like nested names: 50 cameras, 28 days."""
    key = month.replace("-", "")
    return [f"{key}/cam-{i % 50:02d}/day-{i % 28 + 1:02d}/IMG_{i:07d}.jpg" for i in range(count)]


def _sas(container: str, account: str, key: str) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(account, container, account_key=key,
                                  permission=ContainerSasPermissions(create=True, write=True),
                                  expiry=datetime.now(timezone.utc) + timedelta(hours=2))


def put_blobs(blob_url: str, container: str, sas: str, blobs: list[tuple[str, bytes]]) -> None:
    """Put Blob for each (name, body), by SCALE_UPLOAD_THREADS threads on kept-alive connections."""
    url = urllib.parse.urlsplit(blob_url)

    def put(part: list[tuple[str, bytes]]) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            for name, body in part:
                conn.request("PUT", f"{url.path}/{container}/{urllib.parse.quote(name)}?{sas}", body=body,
                             headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06"})
                answer = conn.getresponse()
                answer.read()
                if answer.status != 201:
                    raise RuntimeError(f"Put Blob {container}/{name}: {answer.status} {answer.reason}")
        finally:
            conn.close()

    threads = SCALE_UPLOAD_THREADS
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, [blobs[i::threads] for i in range(threads)]))


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"{field} missing from /proc/self/status (not Linux?)")


def _time_list_requests(container: Any) -> dict[str, float]:
    """Count and time the List Blobs requests staging sends through ``container`` (the input container).

    Staging lists through the container client's ``_send_request`` (``staging.list_names``),
    which reads each page's body before it returns, so the time inside it is the round
    trip: the SDK pipeline's signing and sending (small and per page) and, nearly all
    of it, the storage service's answer. Parsing the pages and the rest of the stage
    step are outside it: ours. Azurite's
    Loki store filters and sorts every remaining blob of the account for each page
    of 5,000 names, so its listing time grows with the square of the month: that is
    the emulator's cost, reported beside ours rather than judged as ours.
    """
    totals = {"requests": 0, "seconds": 0.0}
    send = container._client._send_request  # noqa: SLF001 - the hook staging itself uses

    def timed(request: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return send(request, **kwargs)
        finally:
            totals["requests"] += 1
            totals["seconds"] += time.perf_counter() - started

    container._client._send_request = timed  # noqa: SLF001
    return totals


def run_step(step: str, month: str) -> dict[str, Any]:
    """One step of the DAG for one month, in this (child) process."""
    from azure.storage.blob import BlobServiceClient

    from include.monthly.config import DagConfig
    from include.monthly.layout import parse_month
    from include.monthly.merge import merge_shards
    from include.monthly.plan import plan_run
    from include.monthly.scoring_tasks import scoring_task_specs, write_task_specs
    from include.monthly.staging import load_stage, stage_month

    service = BlobServiceClient.from_connection_string(os.environ[CONNECTION_ENV])
    work, images = service.get_container_client(WORK), service.get_container_client(INPUT)
    config = DagConfig()
    params = {"month": month, "backend": "batch", "shard_size": DagConfig.shard_size, "dedicated_nodes": 0,
              "spot_nodes": config.spot_nodes, "conf": config.conf, "imgsz": config.imgsz,
              "batch_size": config.batch_size, "weights": config.weights, "error_threshold": "0"}
    plan = plan_run(params, dag_id="monthly_detection",
                    run_id=f"bench-scale-{month}", data_interval_start=datetime(2023, 1, 1, tzinfo=timezone.utc),
                    config=config)
    before = _rss_mb("VmRSS")
    started = time.perf_counter()
    if step == "stage":
        listing = _time_list_requests(images)
        result = stage_month(images, work, parse_month(month), plan.run_key, plan.shard_size)
        xcom = {"stage": result.reference(), "weights_blob": "runs/x/weights/yolov8n.pt",
                "work_prefix": result.paths.prefix, "started_at": time.time()}
        before_move = {**xcom, "stage": result.to_dict()}
        extra = {"image_count": result.image_count, "shards": len(result.shards),
                 "list_requests": listing["requests"], "list_wait_seconds": round(listing["seconds"], 3)}
    elif step == "describe":
        stage = load_stage(work, parse_month(month), plan.run_key)
        specs = scoring_task_specs(stage, plan, config, images.url, "runs/x/weights/yolov8n.pt")
        xcom = write_task_specs(work, stage.paths, specs)
        before_move = specs
        extra = {"tasks": len(specs)}
    else:
        stage = load_stage(work, parse_month(month), plan.run_key)
        out = Path(os.environ["BENCH_SCALE_OUT"]) / f"{month}.csv"
        report = merge_shards(work, stage, out)
        xcom = before_move = report.to_dict()
        extra = {"rows": report.rows, "images": report.images}
        out.unlink()
    seconds = time.perf_counter() - started
    if step == "stage":  # staging's own time: the step less its wait on List Blobs
        extra["own_seconds"] = round(seconds - extra["list_wait_seconds"], 3)
    return {"step": step, "seconds": round(seconds, 3), "rss_before_mb": before, "peak_rss_mb": _rss_mb("VmHWM"),
            "xcom_bytes": len(json.dumps(xcom)), "xcom_bytes_before_move": len(json.dumps(before_move)), **extra}


def measure_step(step: str, month: str, connection_string: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, CONNECTION_ENV: connection_string, "BENCH_SCALE_OUT": str(out)}
    argv = [sys.executable, "-m", "bench.scale", step, "--month", month]
    done = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"scale step {step} for {month} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["step_mb"] = round(result["peak_rss_mb"] - result["rss_before_mb"], 1)
    return result


def _results_for(month: str, names: list[str]) -> list[tuple[str, bytes]]:
    """One result CSV per shard as the scoring tasks write them: an `empty` row per image, in manifest order."""
    from include.monthly.config import DagConfig
    from include.monthly.layout import RunPaths, parse_month, run_key, shard_id
    from include.monthly.schema import PREDICTION_COLUMNS

    paths = RunPaths(parse_month(month), run_key(f"bench-scale-{month}"))
    ordered = sorted(names)
    header = ",".join(PREDICTION_COLUMNS) + "\n"
    blobs = []
    for index, start in enumerate(range(0, len(ordered), DagConfig.shard_size)):
        rows = "".join(f"{name},empty,,,,,,,,1920,1080,\n" for name in ordered[start:start + DagConfig.shard_size])
        blobs.append((paths.result(shard_id(index)), (header + rows).encode()))
    return blobs


def measure_size(size: int, connection_string: str, blob_url: str, sas: dict[str, str], out: Path) -> dict[str, Any]:
    month = month_for(size)
    names = image_names(month, size)
    started = time.perf_counter()
    put_blobs(blob_url, INPUT, sas[INPUT], [(name, b"\xff\xd8") for name in names])
    seed_seconds = time.perf_counter() - started
    steps = {"stage": measure_step("stage", month, connection_string, out)}
    steps["describe"] = measure_step("describe", month, connection_string, out)
    put_blobs(blob_url, WORK, sas[WORK], _results_for(month, names))
    steps["merge"] = measure_step("merge", month, connection_string, out)
    if steps["stage"]["image_count"] != size or steps["merge"]["images"] != size:
        raise RuntimeError(f"{month}: staged {steps['stage']['image_count']}, merged {steps['merge']['images']}, "
                           f"expected {size}")
    return {"images": size, "month": month, "seed_seconds": round(seed_seconds, 1),
            "seed_names_per_s": round(size / seed_seconds), "steps": steps,
            "xcom_bytes": sum(s["xcom_bytes"] for s in steps.values()),
            "xcom_bytes_before_move": sum(s["xcom_bytes_before_move"] for s in steps.values())}


def _growth(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Large over small, for each step's time and own memory, and the size factor itself."""
    return {"images": round(large["images"] / small["images"], 2),
            **{f"{step}_seconds": round(large["steps"][step]["seconds"] / small["steps"][step]["seconds"], 2)
               for step in STEPS},
            **{f"{step}_step_mb": round(large["steps"][step]["step_mb"] / max(small["steps"][step]["step_mb"], 0.1), 2)
               for step in STEPS},
            "xcom_bytes": round(large["xcom_bytes"] / small["xcom_bytes"], 3)}


def _per_name_growth(small: dict[str, Any], large: dict[str, Any], key: str) -> float:
    """Seconds per name of the stage step's ``key`` at the large month over the small one (1.0: linear)."""
    per_name = [size["steps"]["stage"][key] / size["images"] for size in (small, large)]
    return round(per_name[1] / per_name[0], 3)


def run(connection_string: str, blob_url: str, account: str, key: str, work_dir: Path) -> dict[str, Any]:
    work_dir.mkdir(parents=True, exist_ok=True)
    sas = {name: _sas(name, account, key) for name in (INPUT, WORK)}
    sizes: dict[str, dict[str, Any]] = {}
    for size in SCALE_SIZES:
        sizes[str(size)] = measure_size(size, connection_string, blob_url, sas, work_dir)
    largest = sizes[str(SCALE_SIZES[-1])]
    per_name = (largest["seed_seconds"] + sum(s["seconds"] for s in largest["steps"].values())) / largest["images"]
    predicted = round(per_name * SCALE_LARGE_SIZE * 1.2, 1)  # 20 % for growth beyond linear
    skipped = None
    if predicted <= SCALE_LARGE_BUDGET_S:
        sizes[str(SCALE_LARGE_SIZE)] = measure_size(SCALE_LARGE_SIZE, connection_string, blob_url, sas, work_dir)
    else:
        skipped = (f"{SCALE_LARGE_SIZE:,} images not run: predicted {predicted:.0f} s from the "
                   f"{largest['images']:,} month, over the {SCALE_LARGE_BUDGET_S} s budget")
    ordered = [sizes[k] for k in sorted(sizes, key=int)]
    top = ordered[-1]
    stage_top = top["steps"]["stage"]
    at_100k = sizes.get("100000", top)
    first = ordered[0]
    slope = (stage_top["step_mb"] - first["steps"]["stage"]["step_mb"]) / (top["images"] - first["images"])
    return {
        "scale_xcom_bytes_at_100k": at_100k["xcom_bytes"],
        "scale_xcom_bytes_at_100k_before_move": at_100k["xcom_bytes_before_move"],
        # Staging's own memory for a month of a million names, on the line through the smallest and largest months.
        "scale_staging_mb_at_1m_names": round(first["steps"]["stage"]["step_mb"] + slope * (1e6 - first["images"]), 1),
        "scale_staging_mb_per_million_names_marginal": round(slope * 1e6, 1),
        # Staging's own time (the stage step less the time the storage service took to answer List Blobs),
        # per name at the largest month over per name at the smallest: 1.0 is linear.
        "scale_staging_time_growth_vs_linear": _per_name_growth(first, top, "own_seconds"),
        # The same for the whole step, Azurite's listing included, and for the listing alone (reported).
        "scale_staging_total_time_growth_vs_linear": _per_name_growth(first, top, "seconds"),
        "scale_listing_time_growth_vs_linear": _per_name_growth(first, top, "list_wait_seconds"),
        "scale_context": {
            "sizes": sizes,
            "growth": {f"{a['images']}->{b['images']}": _growth(a, b) for a, b in zip(ordered, ordered[1:])},
            "largest_size": top["images"], "largest_skipped": skipped, "predicted_largest_seconds": predicted,
            "shard_size": 500, "upload_threads": SCALE_UPLOAD_THREADS,
            "note": "each step in a fresh child process; step_mb = peak RSS (VmHWM) minus RSS just before the step; "
                    "time growth vs linear = seconds per name at the largest size over seconds per name at the "
                    "smallest (1.0 is linear, below 1 means fixed costs dominate the small month); the judged "
                    "figure is staging's own time (own_seconds: the step less list_wait_seconds, the time "
                    "the storage service took to answer List Blobs); the step's total and the listing's "
                    "growth are reported beside it",
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one step of the scale benchmark (child process)")
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--month", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run_step(args.step, args.month)))


if __name__ == "__main__":
    main()
