"""Scoring throughput: score.py versus the reference articles' way and Ultralytics' stream mode.

Each side lives in its own child process (``python -m bench.scoring SIDE ...``)
with the same weights, the same torch thread count and the same 200 images. A
child loads its model, scores one warm-up image, then waits; each time the
parent writes ``run`` it scores the whole folder and answers with the seconds
it took (model loading is never timed). The parent runs the sides in turn on
chunks of 40 images, rotating the order, round after round, so every side sees
the same mix of quiet and busy moments on a shared machine; a side's figure is
its best round.

- ``ours``: include/scoring/score.py's ``score_items`` (decode threads, batches
  of ``SCORING_BATCH_SIZE``) writing one CSV through its ``CsvOutput``, with
  the CPU recipe of the docs: the same ``yolov8n.pt`` exported to OpenVINO
  (fp32 IR with a dynamic input, exported offline at set-up, not timed) and
  run on score.py's OpenVINO runtime with as many threads as torch gets
  elsewhere, each image at its own minimal letterbox like the articles' loop.
  The weights are the other sides' weights; OpenVINO computes in bf16 where
  the CPU has it (AMX, AVX512-BF16: its default), fp32 elsewhere.
- ``ours_int8``: the same loop with the shared int8 OpenVINO export (the
  ``.pt`` was rebuilt from its int8 weights; activations are int8 too; a
  static export, so every image gets the 640x640 square).
- ``ours_pt``: the same loop with ``yolov8n.pt`` on PyTorch (context: what
  the loop alone gives).
- ``baseline``: the articles' loop: one ``model.predict(path, save=True)`` per
  image (Ultralytics draws and saves the annotated JPEG, which the article then
  uploads) and one result file written per image.
- ``stream``: ``model.predict(folder, stream=True)`` over the folder, rows
  appended to one CSV.
- ``baseline_nosave``: the articles' loop without ``save=True`` (context: how
  much of the gap is the annotated JPEG).

Ultralytics' ``select_device()`` sets torch's threads to ``os.cpu_count() - 1``
when a predictor is first set up, so every side sets the thread count again
after its warm-up image; the count in force after the last round is reported.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import PROJECT_ROOT, SCORING_BATCH_SIZE, SCORING_CHUNKS, SCORING_CONF, SCORING_IMGSZ

SIDES = ("ours", "ours_int8", "ours_pt", "baseline", "stream", "baseline_nosave")
MARK = "BENCH-SCORING "  # protocol lines start with this; libraries may print other lines to stdout
HEADER = ("image", "status", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2",
          "image_width", "image_height", "error")
PREDICT = {"imgsz": SCORING_IMGSZ, "conf": SCORING_CONF, "device": "cpu", "verbose": False}


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


def score_folder_to_csv(detector: Any, folder: Path, settings: Any, csv_path: Path) -> int:
    """Our side's unit of work, as the CLI does it: every image of ``folder`` into one CSV; the rows written."""
    import score

    output = score.CsvOutput(csv_path)
    rows = 0
    for image_rows in score.score_items(detector, score.iter_directory(folder), settings):
        output.write(image_rows)
        rows += len(image_rows)
    output.commit()
    return rows


def _ours(images: list[Path], out: Path, weights: str) -> Callable[[Path], int]:
    sys.path.insert(0, str(PROJECT_ROOT / "include" / "scoring"))
    import score

    detector = score.load_model(weights, "cpu")
    settings = score.Settings(weights=weights, device="cpu", batch_size=SCORING_BATCH_SIZE,
                              imgsz=SCORING_IMGSZ, conf=SCORING_CONF, workers=score._default_workers())
    list(score.score_paths(detector, images[:1], settings))  # warm-up

    def once(folder: Path) -> int:
        return score_folder_to_csv(detector, folder, settings, out / f"{folder.name}.csv")

    return once


def _baseline(images: list[Path], out: Path, weights: str, save: bool) -> Callable[[Path], int]:
    from ultralytics import YOLO

    model = YOLO(weights)
    model.predict(str(images[0]), **PREDICT)  # warm-up
    labels = out / "labels"
    labels.mkdir(parents=True, exist_ok=True)

    def once(folder: Path) -> int:
        rows = 0
        for path in sorted(folder.glob("*.jpg")):
            # The article: result = model.predict("bus.jpg", save=True), then one upload per image.
            results = model.predict(str(path), save=save, project=str(out), name="predict", exist_ok=True, **PREDICT)
            with open(labels / f"{path.stem}.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(HEADER)
                found = _result_rows(path.name, results[0])
                writer.writerows(found)
                rows += len(found)
        return rows

    return once


def _stream(images: list[Path], out: Path, weights: str) -> Callable[[Path], int]:
    from ultralytics import YOLO

    model = YOLO(weights)
    model.predict(str(images[0]), **PREDICT)  # warm-up

    def once(folder: Path) -> int:
        rows = 0
        with open(out / f"{folder.name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for result in model.predict(str(folder), stream=True, **PREDICT):
                found = _result_rows(Path(result.path).name, result)
                writer.writerows(found)
                rows += len(found)
        return rows

    return once


def serve(side: str, folder: Path, out: Path, weights: str, threads: int) -> None:
    """Child process: prepare one side, then score a folder each time stdin says ``run FOLDER``."""
    import torch

    images = sorted(folder.rglob("*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    if side.startswith("ours"):
        once = _ours(images, out, weights)
    elif side in ("baseline", "baseline_nosave"):
        once = _baseline(images, out, weights, save=side == "baseline")
    else:
        once = _stream(images, out, weights)
    torch.set_num_threads(threads)  # after Ultralytics' select_device() reset it to cpu_count() - 1
    print(MARK + json.dumps({"side": side, "ready": True}), flush=True)
    for command in sys.stdin:
        verb, _, target = command.strip().partition(" ")
        if verb != "run":
            break
        chunk = Path(target)
        started = time.perf_counter()
        rows = once(chunk)
        seconds = time.perf_counter() - started
        print(MARK + json.dumps({"side": side, "images": len(list(chunk.glob("*.jpg"))), "rows": rows,
                                 "seconds": seconds, "torch_threads": torch.get_num_threads()}), flush=True)


class SideProcess:
    """A running side: write ``run``, read its JSON answer."""

    def __init__(self, side: str, folder: Path, out: Path, weights: Path, threads: int) -> None:
        self.side = side
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        out.mkdir(parents=True, exist_ok=True)
        self.log = out / "side.log"
        argv = [sys.executable, "-m", "bench.scoring", side, "--images", str(folder), "--out", str(out),
                "--weights", str(weights), "--threads", str(threads)]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=log, text=True)

    def answer(self) -> dict[str, Any]:
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.process.wait()
        raise RuntimeError(f"scoring side {self.side} exited ({self.process.returncode}): "
                           f"{self.log.read_text()[-2000:]}")

    def run_once(self, chunk: Path) -> dict[str, Any]:
        self.process.stdin.write(f"run {chunk}\n")
        self.process.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def model_input_pixels(folder: Path) -> dict[str, float]:
    """Mean pixels per image the network sees: per-image letterbox (stride 32) versus our 640x640 squares."""
    from PIL import Image

    rect = []
    for path in sorted(folder.glob("*.jpg")):
        width, height = Image.open(path).size
        ratio = SCORING_IMGSZ / max(width, height)
        w, h = round(width * ratio), round(height * ratio)
        rect.append(math.ceil(w / 32) * 32 * math.ceil(h / 32) * 32)
    return {"per_image_letterbox": round(sum(rect) / len(rect)), "square_batch": SCORING_IMGSZ * SCORING_IMGSZ}


def _detections(paths: list[Path]) -> dict[str, list[tuple[int, tuple[float, ...], float]]]:
    """image -> [(class id, box, confidence)] from result CSVs of the scoring schema."""
    found: dict[str, list[tuple[int, tuple[float, ...], float]]] = {}
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                entries = found.setdefault(row["image"], [])
                if row["status"] == "ok":
                    entries.append((int(row["class_id"]), tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2")),
                                    float(row["confidence"])))
    return found


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def agreement(ours_dir: Path, baseline_dir: Path, min_iou: float = 0.5) -> dict[str, Any]:
    """How far a side's detections agree with the articles' loop: same image and class, IoU >= min_iou.

    Greedy one-to-one matching, baseline detections by falling confidence.
    """
    ours = _detections(sorted(ours_dir.glob("*.csv")))
    theirs = _detections(sorted(baseline_dir.glob("*.csv")))
    matched = conf_gap = 0.0
    for image, wanted in theirs.items():
        free = list(ours.get(image, []))
        for cls, box, conf in sorted(wanted, key=lambda d: -d[2]):
            best = max((d for d in free if d[0] == cls), key=lambda d: _iou(d[1], box), default=None)
            if best is not None and _iou(best[1], box) >= min_iou:
                free.remove(best)
                matched += 1
                conf_gap += abs(best[2] - conf)
    total_ours = sum(len(d) for d in ours.values())
    total_theirs = sum(len(d) for d in theirs.values())
    return {
        "images": len(theirs), "detections": total_ours, "baseline_detections": total_theirs,
        "matched": int(matched), "min_iou": min_iou,
        "share_of_baseline_matched": round(matched / total_theirs, 4) if total_theirs else None,
        "share_of_ours_matched": round(matched / total_ours, 4) if total_ours else None,
        "mean_confidence_gap_matched": round(conf_gap / matched, 4) if matched else None,
    }


def split_into_chunks(folder: Path, chunks: int) -> list[Path]:
    """Hard-link the folder's images into `chunks` subfolders of consecutive images; return them."""
    images = sorted(folder.glob("*.jpg"))
    per_chunk = math.ceil(len(images) / chunks)
    parts = []
    for index in range(chunks):
        part = folder / f"chunk-{index}"
        part.mkdir(exist_ok=True)
        for path in images[index * per_chunk:(index + 1) * per_chunk]:
            os.link(path, part / path.name)
        parts.append(part)
    return parts


def export_openvino(weights: Path, work_dir: Path) -> Path:
    """``weights`` exported to an OpenVINO IR (fp32, dynamic input) in work_dir, offline; returns the folder."""
    import shutil

    from ultralytics import YOLO

    work_dir.mkdir(parents=True, exist_ok=True)
    copy = work_dir / weights.name
    shutil.copy(weights, copy)
    return Path(YOLO(str(copy)).export(format="openvino", imgsz=SCORING_IMGSZ, dynamic=True, half=False))


def run(folder: Path, work_dir: Path, weights: Path, exported: Path, int8_weights: Path, threads: int,
        rounds: int, budget_s: float) -> dict[str, Any]:
    """Every side scores every image `rounds` times; each side's figure is its best round.

    A round scores the images in SCORING_CHUNKS chunks; for each chunk the sides
    take turns (order rotated each time), so load bursts from other work on the
    machine spread over all sides alike. A side's round figure is its images
    divided by the sum of its chunk times. Once `budget_s` has passed no
    further round starts; the first round always completes.
    """
    chunks = split_into_chunks(folder, SCORING_CHUNKS)
    side_weights = {side: weights for side in SIDES}
    side_weights["ours"] = exported
    side_weights["ours_int8"] = int8_weights
    sides = {side: SideProcess(side, folder, work_dir / side, side_weights[side], threads) for side in SIDES}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    deadline = time.monotonic() + budget_s
    turn = 0
    try:
        for process in sides.values():
            process.answer()  # ready: model loaded and warmed up
        for round_no in range(rounds):
            if round_no and time.monotonic() > deadline:
                break
            totals = {side: {"images": 0, "rows": 0, "seconds": 0.0} for side in SIDES}
            for chunk in chunks:
                order = SIDES[turn % len(SIDES):] + SIDES[:turn % len(SIDES)]
                turn += 1
                for side in order:
                    answer = sides[side].run_once(chunk)
                    for key in ("images", "rows", "seconds"):
                        totals[side][key] += answer[key]
                    totals[side]["torch_threads"] = answer["torch_threads"]
            for side, total in totals.items():
                total["images_per_s"] = round(total["images"] / total["seconds"], 3)
                runs[side].append(total)
    finally:
        for process in sides.values():
            process.close()
    best = {side: max(r["images_per_s"] for r in results) for side, results in runs.items()}
    median = {side: sorted(r["images_per_s"] for r in results)[len(results) // 2] for side, results in runs.items()}
    return {
        "scoring_images_per_s": best["ours"],
        "baseline_images_per_s": best["baseline"],
        "scoring_speedup_vs_baseline": round(best["ours"] / best["baseline"], 3),
        "ultralytics_stream_images_per_s": best["stream"],
        "scoring_speedup_vs_stream": round(best["ours"] / best["stream"], 3),
        "baseline_nosave_images_per_s": best["baseline_nosave"],
        "scoring_speedup_vs_baseline_nosave": round(best["ours"] / best["baseline_nosave"], 3),
        "scoring_int8_images_per_s": best["ours_int8"],
        "scoring_int8_speedup_vs_baseline": round(best["ours_int8"] / best["baseline"], 3),
        "scoring_pt_images_per_s": best["ours_pt"],
        "scoring_pt_speedup_vs_baseline": round(best["ours_pt"] / best["baseline"], 3),
        "scoring_context": {
            "weights": {side: str(path) for side, path in side_weights.items()},
            "runtime": {side: "OpenVINO (score.py)" if side in ("ours", "ours_int8") else "PyTorch"
                        for side in SIDES},
            "letterbox": {side: "640x640 square" if side == "ours_int8" else "per image, minimal"
                          for side in SIDES},
            "agreement_with_baseline": {side: agreement(work_dir / side, work_dir / "baseline" / "labels")
                                        for side in ("ours", "ours_int8", "ours_pt")},
            "rounds": len(runs["ours"]), "rounds_planned": rounds, "chunks_per_round": SCORING_CHUNKS, "statistic": "best round per side (median in images_per_s_median)",
            "torch_threads": threads, "batch_size": SCORING_BATCH_SIZE, "imgsz": SCORING_IMGSZ, "conf": SCORING_CONF,
            "torch_threads_at_end": {side: results[-1]["torch_threads"] for side, results in runs.items()},
            "rows_written": {side: results[-1]["rows"] for side, results in runs.items()},
            "model_input_pixels_mean": model_input_pixels(folder),
            "images_per_s_median": median,
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
    serve(args.side, args.images, args.out, args.weights, args.threads)


if __name__ == "__main__":
    main()
