"""The network alone on CPU: 640x640 square batches versus one image at a time, minimal letterbox, on PyTorch,
and score.py's OpenVINO runner on the .pt's OpenVINO export (dynamic input: each image at its minimal
letterbox) and on the static int8 export (640x640 squares).

Explains the scoring figures: on a CPU the network is most of the time, so its
input shape and runtime matter more than any per-image overhead. The images are
decoded and shrunk first (score.py's ``decode``), so only inference (with its
letterbox and NMS) is timed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from bench.config import PROJECT_ROOT, SCORING_BATCH_SIZE, SCORING_CONF, SCORING_IMGSZ

SAMPLE = 48  # images (a multiple of the batch size)


def _best_rates(count: int, actions: dict[str, Any], passes: int = 4) -> dict[str, float]:
    """Images/s per action, best of `passes`, the actions alternating so noise hits them alike."""
    best = {name: float("inf") for name in actions}
    for _ in range(passes):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: round(count / seconds, 2) for name, seconds in best.items()}


def run(images: list[Path], weights: Path, exported: Path, int8_weights: Path, threads: int) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(PROJECT_ROOT / "include" / "scoring"))
    import score
    from yolo_scoring import runtime

    runtime.USER_THREADS = str(threads)  # ultralytics, imported earlier in this process, set OMP_NUM_THREADS=1
    runners = {"openvino": score.load_model(exported, "cpu"), "openvino_int8": score.load_model(int8_weights, "cpu")}
    arrays = [score.decode(path.read_bytes(), SCORING_IMGSZ, 100_000_000).pixels for path in images[:SAMPLE]]
    model = score.load_model(weights, "cpu").model
    common = {"imgsz": SCORING_IMGSZ, "conf": SCORING_CONF, "device": "cpu", "verbose": False}
    model.predict(arrays[0], **common)  # warm-up (sets up the predictor, which resets torch's threads)
    torch.set_num_threads(threads)

    def square_batches() -> None:  # what score.py does on a GPU (and did on a CPU until 2026-12-01)
        for start in range(0, len(arrays), SCORING_BATCH_SIZE):
            model.predict(arrays[start:start + SCORING_BATCH_SIZE], batch=SCORING_BATCH_SIZE, rect=False, **common)

    def one_by_one() -> None:  # what predict(path) does for a single image
        for array in arrays:
            model.predict(array, **common)

    def batches_on(runner: Any) -> Any:  # score.py's OpenVINO runner
        def action() -> None:
            for start in range(0, len(arrays), SCORING_BATCH_SIZE):
                runner.detect(arrays[start:start + SCORING_BATCH_SIZE], SCORING_CONF)
        action()  # warm-up
        return action

    rates = _best_rates(len(arrays), {"square": square_batches, "letterbox": one_by_one,
                                      **{name: batches_on(runner) for name, runner in runners.items()}})
    square, letterbox = rates["square"], rates["letterbox"]
    return {"network_context": {
        "images": len(arrays), "torch_threads": torch.get_num_threads(),
        "square_batch_images_per_s": square, "letterbox_batch1_images_per_s": letterbox,
        "square_batch_ms_per_image": round(1000 / square, 1), "letterbox_batch1_ms_per_image": round(1000 / letterbox, 1),
        **{f"{name}_images_per_s": rates[name] for name in runners},
        **{f"{name}_ms_per_image": round(1000 / rates[name], 1) for name in runners},
        "openvino_threads": runners["openvino"].threads, "openvino_streams": runners["openvino"].streams,
        "note": "inference only (model.predict, or score.py's OpenVINO detect), on images already decoded and "
                "shrunk to 640 px; best of 4 alternating passes",
    }}
