"""`make bench-gpu`: what a GPU node does, side by side on one CUDA device (issue 17).

Needs a CUDA GPU; without one it stops at once with a message and exit status 2
(``make test`` and CI never run it). On the same images and the same weights,
one after another in this process, each after a warm-up:

- ``articles``: the reference articles' loop, ``model.predict(path, save=True)``
  per image (the .pt on the GPU, Ultralytics' defaults) and one result file per image;
- ``stream``: ``model.predict(folder, stream=True, batch=B)``, rows to one CSV;
- ``ours_cpu_decode``: score.py's ``score_items`` (fp16 batches of B on CUDA,
  decode threads on the CPU) writing one CSV;
- ``ours_gpu_decode``: the same with ``decode_on_device`` (JPEGs decoded in
  batches by nvJPEG through ``torchvision.io.decode_jpeg(device='cuda')``).

for B in ``GPU_BATCH_SIZES``, on two image sets: the 1-megapixel benchmark
images of ``make bench`` and 12-megapixel photos (a phone camera's size),
where decode is the heavier part. For every side: images/s, GPU utilisation
(NVML, sampled every 50 ms while the side runs: mean and share of samples
above 0) and the share of the time the pipeline needs for decode (the decode
path's own time per image, measured alone, over the side's time per image).
The bounds, measured alone in the same run: the network (score.py's detector
on images already decoded, batch B) and each decode path (the CPU path with
score.py's decode threads; the device path batched). Targets: ours ≥ 5× the
articles' loop, and ≥ 80 % of the slower of (decode bound, network bound).
Writes ``bench-gpu-results.json`` at the repo root and prints a table.

``python -m bench.gpu --smoke`` runs the same code on the CPU with a few
images (for checking the script on a machine without a GPU; its figures are
not GPU figures and it writes ``bench-gpu-smoke.json``).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from bench.config import PROJECT_ROOT, SCORING_CONF, SCORING_IMGSZ, cpu_cores, weights_path
from bench.scoring import _result_rows, score_folder_to_csv

RESULTS = PROJECT_ROOT / "bench-gpu-results.json"
SMOKE_RESULTS = PROJECT_ROOT / "bench-gpu-smoke.json"
GPU_BATCH_SIZES = (8, 16, 32)
GPU_IMAGES = 1000  # 1-megapixel benchmark images
GPU_LARGE_IMAGES = 120  # 12-megapixel photos
TARGET_VS_ARTICLES = 5.0
TARGET_SHARE_OF_BOUND = 0.80
NO_CUDA = ("make bench-gpu needs a CUDA GPU, and this machine has none (torch.cuda.is_available() is False{why}). "
           "Nothing was measured. Run it on a GPU node (e.g. Standard_NC4as_T4_v3); `make bench` is the CPU benchmark.")


def cuda_or_exit() -> None:
    import torch

    if not torch.cuda.is_available():
        why = f"; torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}"
        print(NO_CUDA.format(why=why), file=sys.stderr)
        sys.exit(2)


class UtilisationSampler:
    """GPU utilisation (NVML) sampled every 50 ms in a thread while a side runs."""

    def __init__(self, device_index: int) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        except Exception:  # noqa: BLE001 - no NVML (e.g. the CPU smoke run): utilisation is not reported
            self._nvml = None

    def __enter__(self) -> "UtilisationSampler":
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"gpu_util_mean_percent": None, "gpu_busy_share": None}
        return {"gpu_util_mean_percent": round(sum(self.samples) / len(self.samples), 1),
                "gpu_busy_share": round(sum(1 for s in self.samples if s > 0) / len(self.samples), 3),
                "samples": len(self.samples)}


def _timed(action: Callable[[], int], device_index: int | None) -> dict[str, Any]:
    import torch

    sampler = UtilisationSampler(device_index) if device_index is not None else None
    with sampler or _Null():
        started = time.perf_counter()
        rows = action()
        if device_index is not None:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "rows": rows, **(sampler.summary() if sampler else {})}


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def run_set(label: str, folder: Path, out: Path, weights: Path, device: str, batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """Every side and bound on one image set."""
    import torch
    from ultralytics import YOLO

    sys.path.insert(0, str(PROJECT_ROOT / "include" / "scoring"))
    import score

    index = torch.device(device).index or 0 if device.startswith("cuda") else None
    paths = sorted(folder.glob("*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    predict = {"imgsz": SCORING_IMGSZ, "conf": SCORING_CONF, "device": device, "verbose": False}
    model = YOLO(str(weights))
    model.predict(str(paths[0]), **predict)  # warm-up
    sides: dict[str, Any] = {}

    def articles() -> int:  # the reference articles' loop
        rows = 0
        labels = out / "articles-labels"
        labels.mkdir(exist_ok=True)
        for path in paths:
            result = model.predict(str(path), save=True, project=str(out), name="articles", exist_ok=True, **predict)[0]
            with open(labels / f"{path.stem}.csv", "w", newline="") as handle:
                found = _result_rows(path.name, result)
                csv.writer(handle).writerows(found)
                rows += len(found)
        return rows

    sides["articles"] = _timed(articles, index)
    # The articles' loop reads each file with cv2.imread (Ultralytics' loader); its decode time alone:
    import cv2

    started = time.perf_counter()
    for path in paths:
        cv2.imread(str(path))
    sides["articles"]["decode_share"] = round((time.perf_counter() - started) / sides["articles"]["seconds"], 3)

    detector = score.load_model(str(weights), device, SCORING_IMGSZ)
    workers = score._default_workers()
    decoded = [score.decode(path.read_bytes(), SCORING_IMGSZ, 100_000_000) for path in paths]

    def cpu_decode_alone() -> int:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            return sum(1 for _ in pool.map(lambda p: score.decode(p.read_bytes(), SCORING_IMGSZ, 100_000_000), paths))

    bounds: dict[str, Any] = {"decode_cpu": _timed(cpu_decode_alone, None)}
    for batch in batch_sizes:
        def device_decode_alone(batch: int = batch) -> int:
            done = 0
            for start in range(0, len(paths), batch):
                jpegs = [score.EncodedJpeg(p.read_bytes(), 1) for p in paths[start:start + batch]]
                done += len(score.decode_jpegs_on_device(jpegs, SCORING_IMGSZ, 100_000_000, score._decode_device(detector)))
            return done

        def network_alone(batch: int = batch) -> int:
            arrays = [d.pixels for d in decoded]
            for start in range(0, len(arrays), batch):
                detector.detect(arrays[start:start + batch], SCORING_CONF)
            return len(arrays)

        network_alone()  # warm-up at this batch size
        bounds[f"decode_device_b{batch}"] = _timed(device_decode_alone, index)
        bounds[f"network_b{batch}"] = _timed(network_alone, index)

        def stream(batch: int = batch) -> int:
            rows = 0
            with open(out / f"stream-b{batch}.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                for result in model.predict(str(folder), stream=True, batch=batch, **predict):
                    found = _result_rows(Path(result.path).name, result)
                    writer.writerows(found)
                    rows += len(found)
            return rows

        sides[f"stream_b{batch}"] = _timed(stream, index)
        for mode, on_device in (("cpu_decode", False), ("gpu_decode", True)):
            settings = score.Settings(weights=str(weights), device=device, batch_size=batch, imgsz=SCORING_IMGSZ,
                                      conf=SCORING_CONF, workers=workers, decode_on_device=on_device)

            def ours(settings: Any = settings, mode: str = mode, batch: int = batch) -> int:
                return score_folder_to_csv(detector, folder, settings, out / f"ours-{mode}-b{batch}.csv")

            ours()  # warm-up (the first batches set up cuDNN and nvJPEG)
            sides[f"ours_{mode}_b{batch}"] = _timed(ours, index)

    count = len(paths)
    for figures in (*sides.values(), *bounds.values()):
        figures["images_per_s"] = round(count / figures["seconds"], 1)
    for name, figures in sides.items():
        if name.startswith("ours_"):
            batch = name.rsplit("_b", 1)[1]
            decode_key = "decode_device_b" + batch if "gpu_decode" in name else "decode_cpu"
            figures["decode_share"] = round(figures["images_per_s"] / bounds[decode_key]["images_per_s"], 3)
            slower = min(bounds[decode_key]["images_per_s"], bounds[f"network_b{batch}"]["images_per_s"])
            figures["bound_images_per_s"] = slower
            figures["share_of_bound"] = round(figures["images_per_s"] / slower, 3)
    ours_best = max((n for n in sides if n.startswith("ours_")), key=lambda n: sides[n]["images_per_s"])
    return {"images": count, "label": label, "sides": sides, "bounds": bounds, "best_ours": ours_best,
            "ours_vs_articles": round(sides[ours_best]["images_per_s"] / sides["articles"]["images_per_s"], 2),
            "ours_share_of_bound": sides[ours_best]["share_of_bound"]}


def table(results: dict[str, Any]) -> str:
    lines = []
    for label, data in results["sets"].items():
        lines.append(f"{label} ({data['images']} images): best ours {data['best_ours']}, "
                     f"{data['ours_vs_articles']}x the articles' loop, {100 * data['ours_share_of_bound']:.0f} % of its bound")
        for name, f in {**data["sides"], **data["bounds"]}.items():
            util = f.get("gpu_util_mean_percent")
            lines.append(f"  {name:<24} {f['images_per_s']:>9,.1f} images/s"
                         + (f"   GPU {util:5.1f} %" if util is not None else "")
                         + (f"   decode share {f['decode_share']:.2f}" if "decode_share" in f else "")
                         + (f"   {100 * f['share_of_bound']:.0f} % of bound" if "share_of_bound" in f else ""))
    for name, verdict in results["targets"].items():
        lines.append(f"target {name}: {verdict['target']}, value {verdict['value']}, "
                     f"{'met' if verdict['met'] else 'NOT MET'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="run on the CPU with a few images (checks the script only)")
    args = parser.parse_args(argv)
    import tempfile

    import torch

    if not args.smoke:
        cuda_or_exit()
    from bench.decode import make_large_images
    from bench.images import make_images

    device = "cpu" if args.smoke else "cuda:0"
    weights = weights_path()
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    counts = (16, 4) if args.smoke else (GPU_IMAGES, GPU_LARGE_IMAGES)
    batches = (4,) if args.smoke else GPU_BATCH_SIZES
    make_images(work / "images-1mp", count=counts[0])
    make_large_images(work / "images-12mp", count=counts[1])
    started = time.perf_counter()
    try:
        sets = {label: run_set(label, work / folder, work / f"out-{folder}", weights, device, batches)
                for label, folder in (("1 MP", "images-1mp"), ("12 MP", "images-12mp"))}
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    worst_ratio = min(s["ours_vs_articles"] for s in sets.values())
    worst_share = min(s["ours_share_of_bound"] for s in sets.values())
    results = {
        "sets": sets,
        "targets": {
            "ours_vs_articles_loop": {"target": f">= {TARGET_VS_ARTICLES}x", "value": worst_ratio,
                                      "met": worst_ratio >= TARGET_VS_ARTICLES},
            "ours_share_of_slower_bound": {"target": f">= {100 * TARGET_SHARE_OF_BOUND:.0f} %",
                                           "value": round(100 * worst_share, 1), "met": worst_share >= TARGET_SHARE_OF_BOUND},
        },
        "context": {
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "smoke_run_on_cpu": args.smoke, "device": device,
            "gpu": torch.cuda.get_device_name(0) if not args.smoke else None,
            "cuda": torch.version.cuda, "torch": torch.__version__, "cpu_cores": cpu_cores(),
            "python": platform.python_version(), "weights": str(weights), "batch_sizes": list(batches),
            "imgsz": SCORING_IMGSZ, "conf": SCORING_CONF, "total_seconds": round(time.perf_counter() - started, 1),
            "statistic": "one timed pass per side after a warm-up; the worse of the two image sets is judged",
        },
    }
    target = SMOKE_RESULTS if args.smoke else RESULTS
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    for _path in (PROJECT_ROOT, PROJECT_ROOT / "plugins"):
        if str(_path) not in sys.path:
            sys.path.insert(0, str(_path))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(PROJECT_ROOT / ".local" / "yolo-config"))
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    sys.exit(main())
