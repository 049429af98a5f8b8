"""Scoring throughput: score.py versus the reference articles' way and Ultralytics' stream mode.

Each side runs in its own child process (``python -m bench.scoring SIDE ...``)
with the same weights, the same torch thread count and the same 200 images.
The clock starts after the model is loaded and has run one warm-up image, and
stops when the side's output is on disk:

- ``ours``: include/scoring/score.py's ``score_items`` (decode threads, batches
  of ``SCORING_BATCH_SIZE``) writing one CSV through its ``CsvOutput``.
- ``baseline``: the articles' loop: one ``model.predict(path, save=True)`` per
  image (Ultralytics draws and saves the annotated JPEG, as the article then
  uploads it) and one result file written per image.
- ``stream``: ``model.predict(folder, stream=True)`` over the folder, rows
  appended to one CSV.
- ``baseline_nosave``: the articles' loop without ``save=True`` (context: how
  much of the gap is the annotated JPEG).

Ultralytics' ``select_device()`` sets torch's threads to ``os.cpu_count() - 1``
when a predictor is first set up, so every side sets the thread count again
after its warm-up image; the count in force at the end is reported.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.config import PROJECT_ROOT, SCORING_BATCH_SIZE, SCORING_CONF, SCORING_IMGSZ

SIDES = ("ours", "baseline", "stream", "baseline_nosave")
HEADER = ("image", "status", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2",
          "image_width", "image_height", "error")


def _result_rows(name: str, result: Any) -> list[tuple]:
    """CSV rows for one Ultralytics result (the same columns score.py writes)."""
    height, width = result.orig_shape
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return [(name, "empty", "", "", "", "", "", "", "", width, height, "")]
    rows = []
    for (x1, y1, x2, y2), conf, cls in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()):
        rows.append((name, "ok", int(cls), result.names[int(cls)], round(conf, 4),
                     round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2), width, height, ""))
    return rows


def _run_ours(images: list[Path], folder: Path, out: Path, weights: str, threads: int) -> tuple[int, float]:
    sys.path.insert(0, str(PROJECT_ROOT / "include" / "scoring"))
    import score
    import torch

    detector = score.load_model(weights, "cpu")
    settings = score.Settings(weights=weights, device="cpu", batch_size=SCORING_BATCH_SIZE,
                              imgsz=SCORING_IMGSZ, conf=SCORING_CONF, workers=score._default_workers())
    list(score.score_paths(detector, images[:1], settings))  # warm-up
    torch.set_num_threads(threads)  # after Ultralytics' select_device() reset it to cpu_count() - 1
    started = time.perf_counter()
    output = score.CsvOutput(out / "predictions.csv")
    rows = 0
    for image_rows in score.score_items(detector, score.iter_directory(folder), settings):
        output.write(image_rows)
        rows += len(image_rows)
    output.commit()
    return rows, time.perf_counter() - started


def _run_baseline(images: list[Path], out: Path, weights: str, threads: int, save: bool = True) -> tuple[int, float]:
    import torch
    from ultralytics import YOLO

    model = YOLO(weights)
    model.predict(str(images[0]), imgsz=SCORING_IMGSZ, conf=SCORING_CONF, device="cpu", verbose=False)  # warm-up
    torch.set_num_threads(threads)  # after Ultralytics' select_device() reset it to cpu_count() - 1
    labels = out / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    rows = 0
    started = time.perf_counter()
    for path in images:
        # The article: result = model.predict("bus.jpg", save=True), then one upload per image.
        results = model.predict(str(path), save=save, project=str(out), name="predict", exist_ok=True,
                                imgsz=SCORING_IMGSZ, conf=SCORING_CONF, device="cpu", verbose=False)
        with open(labels / f"{path.stem}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            found = _result_rows(path.name, results[0])
            writer.writerows(found)
            rows += len(found)
    return rows, time.perf_counter() - started


def _run_stream(images: list[Path], folder: Path, out: Path, weights: str, threads: int) -> tuple[int, float]:
    import torch
    from ultralytics import YOLO

    model = YOLO(weights)
    model.predict(str(images[0]), imgsz=SCORING_IMGSZ, conf=SCORING_CONF, device="cpu", verbose=False)  # warm-up
    torch.set_num_threads(threads)  # after Ultralytics' select_device() reset it to cpu_count() - 1
    rows = 0
    started = time.perf_counter()
    with open(out / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for result in model.predict(str(folder), stream=True, imgsz=SCORING_IMGSZ, conf=SCORING_CONF,
                                    device="cpu", verbose=False):
            found = _result_rows(Path(result.path).name, result)
            writer.writerows(found)
            rows += len(found)
    return rows, time.perf_counter() - started


def run_side(side: str, folder: Path, out: Path, weights: str, threads: int) -> dict[str, Any]:
    """Score every image of folder one way; images/s measured inside this process."""
    import torch

    images = sorted(folder.glob("*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    if side == "ours":
        rows, seconds = _run_ours(images, folder, out, weights, threads)
    elif side in ("baseline", "baseline_nosave"):
        rows, seconds = _run_baseline(images, out, weights, threads, save=side == "baseline")
    else:
        rows, seconds = _run_stream(images, folder, out, weights, threads)
    return {"side": side, "images": len(images), "rows": rows, "seconds": round(seconds, 3),
            "images_per_s": round(len(images) / seconds, 3), "torch_threads": torch.get_num_threads()}


def measure_side(side: str, folder: Path, out: Path, weights: Path, threads: int) -> dict[str, Any]:
    """Run one side in a fresh child process with OMP/MKL threads pinned to `threads`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-m", "bench.scoring", side, "--images", str(folder), "--out", str(out),
            "--weights", str(weights), "--threads", str(threads)]
    done = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"scoring side {side} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def model_input_pixels(folder: Path) -> dict[str, float]:
    """Mean pixels per image the network sees: per-image letterbox (stride 32) versus our 640x640 squares."""
    import math

    from PIL import Image

    rect = []
    for path in sorted(folder.glob("*.jpg")):
        width, height = Image.open(path).size
        ratio = SCORING_IMGSZ / max(width, height)
        w, h = round(width * ratio), round(height * ratio)
        rect.append(math.ceil(w / 32) * 32 * math.ceil(h / 32) * 32)
    return {"per_image_letterbox": round(sum(rect) / len(rect)), "square_batch": SCORING_IMGSZ * SCORING_IMGSZ}


def run(folder: Path, work_dir: Path, weights: Path, threads: int, rounds: int) -> dict[str, Any]:
    """Every side `rounds` times, interleaved; each side's figure is its best round (noise only slows)."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for round_no in range(rounds):
        for side in SIDES:
            runs[side].append(measure_side(side, folder, work_dir / f"{side}-{round_no}", weights, threads))
    best = {side: max(r["images_per_s"] for r in results) for side, results in runs.items()}
    return {
        "scoring_images_per_s": best["ours"],
        "baseline_images_per_s": best["baseline"],
        "scoring_speedup_vs_baseline": round(best["ours"] / best["baseline"], 3),
        "ultralytics_stream_images_per_s": best["stream"],
        "scoring_speedup_vs_stream": round(best["ours"] / best["stream"], 3),
        "baseline_nosave_images_per_s": best["baseline_nosave"],
        "scoring_speedup_vs_baseline_nosave": round(best["ours"] / best["baseline_nosave"], 3),
        "scoring_context": {
            "rounds": rounds, "torch_threads": threads, "batch_size": SCORING_BATCH_SIZE,
            "imgsz": SCORING_IMGSZ, "conf": SCORING_CONF,
            "torch_threads_at_end": {side: results[-1]["torch_threads"] for side, results in runs.items()},
            "rows_written": {side: results[-1]["rows"] for side, results in runs.items()},
            "model_input_pixels_mean": model_input_pixels(folder),
            "images_per_s_by_round": {side: [r["images_per_s"] for r in results] for side, results in runs.items()},
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one side of the scoring benchmark (child process)")
    parser.add_argument("side", choices=SIDES)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run_side(args.side, args.images, args.out, args.weights, args.threads)))


if __name__ == "__main__":
    main()
