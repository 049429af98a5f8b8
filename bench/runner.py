"""Run every benchmark in one go, judge the targets, write bench-results.json and print a table."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from bench.config import (
    RESULTS_PATH,
    SCORING_BUDGET_S,
    SCORING_ROUNDS,
    TARGETS,
    cpu_cores,
    int8_weights_path,
    weights_path,
)

log = logging.getLogger("bench")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _context(weights: Path, int8_weights: Path, threads: int) -> dict[str, Any]:
    import openvino
    import torch
    import ultralytics

    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cores": cpu_cores(), "torch_threads": threads, "cpu_model": _cpu_model(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__,
        "openvino": openvino.__version__,
        "weights": str(weights), "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()[:16],
        "int8_weights": str(int8_weights),
        "int8_weights_sha256": hashlib.sha256(b"".join(
            path.read_bytes() for path in sorted(int8_weights.iterdir()) if path.is_file())).hexdigest()[:16],
        "cuda": torch.cuda.is_available(),
    }


def scoring_bound(results: dict[str, Any], cores: int) -> dict[str, Any]:
    """What the CPU allows score.py, from parts measured in this run, and how close it came.

    Each image costs the network (OpenVINO on the same export, all cores, images
    already decoded: ms of wall time) plus its decode (ms of one core, spread
    over the cores): bound = 1000 / (network_ms + decode_ms_per_core / cores) images/s.
    """
    network = (results.get("network_context") or {}).get("openvino_ms_per_image")
    decode_rate = ((results.get("decode_context") or {}).get("benchmark_images") or {}).get("score_py", {}).get("images_per_s")
    ours = results.get("scoring_images_per_s")
    if not network or not decode_rate or not ours:
        return {}
    decode_ms = round(1000 / decode_rate, 2)
    bound = 1000 / (network + decode_ms / cores)
    return {
        "scoring_bound_images_per_s": round(bound, 2),
        "scoring_fraction_of_bound": round(ours / bound, 4),
        "scoring_bound_context": {"network_ms_per_image_openvino": network, "decode_ms_per_image_per_core": decode_ms,
                                  "cores": cores, "formula": "1000 / (network_ms + decode_ms_per_core / cores)"},
    }


def judge(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of issue 7 with the measured value and whether it is met (None: not measured)."""

    def get(key: str) -> Any:
        return results.get(key)

    def check(name: str, value: Any, met: Callable[[Any], bool]) -> dict[str, Any]:
        return {"target": TARGETS[name], "value": value, "met": None if value is None else bool(met(value))}

    share = None
    if get("worker_slot_seconds_deferrable") is not None and get("worker_slot_seconds_poke"):
        share = round(100 * get("worker_slot_seconds_deferrable") / get("worker_slot_seconds_poke"), 2)
    faster = None
    if get("merge_seconds") is not None and get("pandas_merge_seconds") is not None:
        faster = round(get("pandas_merge_seconds") / get("merge_seconds"), 3)
    fraction = get("scoring_fraction_of_bound")
    return {
        "scoring_fraction_of_bound": check("scoring_fraction_of_bound",
                                           None if fraction is None else round(100 * fraction, 1), lambda v: v >= 85),
        "add_task_requests_per_100_shards": check("add_task_requests_per_100_shards",
                                                  get("add_task_requests_per_100_shards"), lambda v: v <= 1),
        "poll_requests_per_cycle": check("poll_requests_per_cycle", get("poll_requests_per_cycle"), lambda v: v == 1),
        "merge_peak_rss_mb": check("merge_peak_rss_mb", get("merge_peak_rss_mb"), lambda v: v < 150),
        "merge_faster_than_pandas": check("merge_faster_than_pandas", faster, lambda v: v > 1),
        "deferrable_share_of_poke": check("deferrable_share_of_poke", share, lambda v: v <= 5),
        "scale_xcom_bytes_at_100k": check("scale_xcom_bytes_at_100k", get("scale_xcom_bytes_at_100k"),
                                          lambda v: v <= 64 * 1024),
        "scale_staging_mb_at_1m_names": check("scale_staging_mb_at_1m_names", get("scale_staging_mb_at_1m_names"),
                                              lambda v: v <= 300),
        "scale_staging_time_growth_vs_linear": check("scale_staging_time_growth_vs_linear",
                                                     get("scale_staging_time_growth_vs_linear"), lambda v: v <= 1.5),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    """The figures side by side, with ratios and the target verdicts."""
    r = results.get

    def ratio(a: Any, b: Any) -> Any:
        return round(a / b, 3) if a is not None and b else None

    scale = (results.get("scale_context") or {}).get("sizes") or {}
    small, large = scale.get("10000"), scale.get("100000")

    def at(size: dict[str, Any] | None, step: str, key: str) -> Any:
        return size["steps"][step][key] if size else None

    lines = [
        ("scoring images/s (ours vs the CPU's bound, decode + network)", r("scoring_images_per_s"),
         r("scoring_bound_images_per_s"), r("scoring_fraction_of_bound")),
        ("scoring images/s (ours vs articles' loop)", r("scoring_images_per_s"), r("baseline_images_per_s"),
         r("scoring_speedup_vs_baseline")),
        ("scoring images/s (ours vs predict stream=True)", r("scoring_images_per_s"),
         r("ultralytics_stream_images_per_s"), r("scoring_speedup_vs_stream")),
        ("scoring images/s (ours vs loop without save)", r("scoring_images_per_s"),
         r("baseline_nosave_images_per_s"), r("scoring_speedup_vs_baseline_nosave")),
        ("scoring images/s (ours, int8 export vs articles' loop)", r("scoring_int8_images_per_s"),
         r("baseline_images_per_s"), r("scoring_int8_speedup_vs_baseline")),
        ("scoring images/s (ours on the .pt vs articles' loop)", r("scoring_pt_images_per_s"),
         r("baseline_images_per_s"), r("scoring_pt_speedup_vs_baseline")),
        ("add-task requests, 100 shards (ours vs stock)", r("add_task_requests"),
         r("provider_style_add_task_requests"), ratio(r("provider_style_add_task_requests"), r("add_task_requests"))),
        ("requests per poll (ours vs list every task)", r("poll_requests_per_cycle"),
         r("provider_style_requests_per_poll"),
         ratio(r("provider_style_requests_per_poll"), r("poll_requests_per_cycle"))),
        ("requests per poll, no task running (ours vs list every task)", r("poll_requests_per_cycle_none_running"),
         r("provider_style_requests_per_poll"),
         ratio(r("provider_style_requests_per_poll"), r("poll_requests_per_cycle_none_running"))),
        ("bytes per poll (ours vs list every task)", r("poll_response_bytes"),
         r("provider_style_poll_response_bytes"),
         ratio(r("provider_style_poll_response_bytes"), r("poll_response_bytes"))),
        ("requests per poll, one task per image", r("poll_requests_per_cycle"),
         r("provider_style_requests_per_poll_task_per_image"),
         ratio(r("provider_style_requests_per_poll_task_per_image"), r("poll_requests_per_cycle"))),
        ("merge seconds, 2M rows (ours vs pandas)", r("merge_seconds"), r("pandas_merge_seconds"),
         ratio(r("pandas_merge_seconds"), r("merge_seconds"))),
        ("merge peak RSS MB (ours vs pandas)", r("merge_peak_rss_mb"), r("pandas_peak_rss_mb"),
         ratio(r("pandas_peak_rss_mb"), r("merge_peak_rss_mb"))),
        ("worker-slot seconds (deferrable vs poke)", r("worker_slot_seconds_deferrable"),
         r("worker_slot_seconds_poke"), ratio(r("worker_slot_seconds_poke"), r("worker_slot_seconds_deferrable"))),
        ("XCom bytes per run, 100k images (record in Blob vs in XCom)", r("scale_xcom_bytes_at_100k"),
         r("scale_xcom_bytes_at_100k_before_move"),
         ratio(r("scale_xcom_bytes_at_100k_before_move"), r("scale_xcom_bytes_at_100k"))),
        *[(f"{step} seconds (100k vs 10k images)", at(large, step, "seconds"), at(small, step, "seconds"),
           ratio(at(large, step, "seconds"), at(small, step, "seconds"))) for step in ("stage", "describe", "merge")],
        *[(f"stage {part} (100k vs 10k images)", at(large, "stage", key), at(small, "stage", key),
           ratio(at(large, "stage", key), at(small, "stage", key)))
          for part, key in (("own seconds", "own_seconds"), ("List Blobs wait seconds", "list_wait_seconds"))],
        *[(f"{step} own MB (100k vs 10k images)", at(large, step, "step_mb"), at(small, step, "step_mb"), None)
          for step in ("stage", "describe", "merge")],
    ]
    width = max(len(name) for name, *_ in lines)
    out = [f"{'figure':<{width}}  {'ours':>12}  {'reference':>12}  {'advantage':>9}",
           "-" * (width + 40)]
    for name, ours, ref, adv in lines:
        out.append(f"{name:<{width}}  {_fmt(ours):>12}  {_fmt(ref):>12}  {_fmt(adv) + 'x' if adv else '-':>9}")
    out += ["", "targets (issues 7 and 17):"]
    for name, verdict in results.get("targets", {}).items():
        mark = {True: "met", False: "NOT MET", None: "not measured"}[verdict["met"]]
        out.append(f"  {name:<34} {verdict['target']:<40} value {_fmt(verdict['value']):>10}  {mark}")
    for name, error in results.get("errors", {}).items():
        out.append(f"  benchmark {name} could not run: {error.splitlines()[-1] if error else ''}")
    return "\n".join(out)


def main(work_dir: Path) -> int:
    """Run everything; 0 when every benchmark ran (met or not), 1 when one could not run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("azure", "airflow", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    weights = weights_path()
    int8_weights = int8_weights_path()
    threads = cpu_cores()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    keep = bool(os.environ.get("BENCH_KEEP"))
    started = time.monotonic()

    def step(name: str, action: Callable[[], dict[str, Any]]) -> None:
        log.info("%s: starting", name)
        begun = time.monotonic()
        try:
            results.update(action())
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            errors[name] = traceback.format_exc()
            log.error("%s: could not run:\n%s", name, errors[name])
        timings[name] = round(time.monotonic() - begun, 1)
        log.info("%s: done in %.0f s", name, timings[name])

    stack = None
    context: dict[str, Any] = {}
    try:
        if not weights.is_file():
            raise FileNotFoundError(f"weights not found at {weights}; set YOLO_WEIGHTS")
        if not (int8_weights / "metadata.yaml").is_file():
            raise FileNotFoundError(f"OpenVINO export not found at {int8_weights}; set YOLO_OPENVINO_WEIGHTS")
        context.update(_context(weights, int8_weights, threads))

        from bench import batch_requests, decode, merge, network, scale, scoring, slots
        from local_stack.azurite import ACCOUNT_KEY, ACCOUNT_NAME
        from bench.images import describe_images, make_images
        from bench.stack import start_stack

        images_dir = work_dir / "images"
        images = make_images(images_dir)
        context["images"] = describe_images(images)
        exported = scoring.export_openvino(weights, work_dir / "export")  # the CPU recipe, offline
        step("scoring", lambda: scoring.run(images_dir, work_dir / "scoring", weights, exported, int8_weights,
                                            threads, SCORING_ROUNDS, SCORING_BUDGET_S))
        step("decode", lambda: decode.run(images, work_dir / "decode"))
        step("network", lambda: network.run(images, weights, exported, int8_weights, threads))
        stack = start_stack(work_dir / "stack")
        step("batch_requests", lambda: batch_requests.run(stack.batch))
        step("merge", lambda: merge.run(stack.azurite.connection_string, work_dir / "merge"))
        step("worker_slots", lambda: slots.run(work_dir / "slots", stack.connection_env()))
        step("scale", lambda: scale.run(stack.azurite.connection_string, stack.azurite.blob_url,
                                        ACCOUNT_NAME, ACCOUNT_KEY, work_dir / "scale"))
    except Exception:  # noqa: BLE001 - set-up failed: report it like a benchmark that could not run
        errors["setup"] = traceback.format_exc()
        log.error("set-up failed:\n%s", errors["setup"])
    finally:
        if stack is not None:
            stack.stop()
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    context["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    context["seconds_per_benchmark"] = timings
    context["total_seconds"] = round(time.monotonic() - started, 1)
    results.update(scoring_bound(results, threads))
    results["targets"] = judge(results)
    results["context"] = context
    results["errors"] = errors
    RESULTS_PATH.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print(table(results))
    print(f"\nwrote {RESULTS_PATH} in {context['total_seconds']:.0f} s" + (f" (work files kept in {work_dir})" if keep else ""))
    return 1 if errors else 0
