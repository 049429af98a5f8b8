"""The model and where it runs: weights resolution, device choice, the two runtimes behind ``Detector``.

``.pt`` weights (or any format Ultralytics loads) run on Ultralytics' predictor;
an OpenVINO export folder (``contract.is_openvino_export``) runs on OpenVINO
directly, on the CPU. Ultralytics is imported only when a model loads.
"""
from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .contract import OPENVINO_METADATA, OPENVINO_SUFFIX, is_openvino_export
from .errors import ScoringError, one_line
from .settings import DEFAULT_WEIGHTS, _cpu_count

# Ultralytics sets OMP_NUM_THREADS=1 on import when it is unset. It is imported
# only when a model loads (after this module), so this is the user's own choice.
USER_THREADS = os.environ.get("OMP_NUM_THREADS")


def resolve_weights(location: str | os.PathLike[str], prefer: str = DEFAULT_WEIGHTS) -> str:
    """A weights file for a file, a folder holding one (.pt or *_openvino_model), or a bare name.

    A bare name such as ``yolov8n.pt`` that does not exist locally is returned
    as is, so Ultralytics can download it on a machine with internet.
    """
    path = Path(location)
    if path.is_file() or is_openvino_export(path):
        return str(path)
    if path.is_dir():
        found = sorted(
            [p for p in path.rglob("*.pt") if p.is_file()]
            + [p for p in path.rglob(f"*{OPENVINO_SUFFIX}") if p.is_dir()]
        )
        if len(found) == 1:
            return str(found[0])
        if not found:
            raise ScoringError(f"no weights (.pt file or *_openvino_model folder) in {path}")
        named = [p for p in found if p.name == Path(prefer).name]
        if len(named) == 1:
            return str(named[0])
        names = ", ".join(str(p.relative_to(path)) for p in found)
        raise ScoringError(f"several weights in {path} ({names}); set YOLO_WEIGHTS to the one to use")
    if len(path.parts) == 1 and path.suffix == ".pt":
        return str(path)  # a release name Ultralytics can fetch
    raise ScoringError(f"weights not found: {path}")


def pick_device(device: str) -> str:
    """'auto' means the first GPU when there is one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def require_cuda(device: str, weights: str) -> None:
    """On a GPU node a CPU fallback would score at GPU prices: refuse before loading anything."""
    if device == "cpu":
        raise ScoringError("--require-cuda with --device cpu: a GPU VM size must score on its GPU; "
                           "use --device auto or cuda:0, or a CPU VM size")
    if is_openvino_export(Path(weights)):
        raise ScoringError("--require-cuda with OpenVINO weights, which run on the CPU; use the .pt weights on GPU nodes")
    import torch

    if not torch.cuda.is_available():
        raise ScoringError(
            f"--require-cuda: CUDA is not available on this node (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}; torch.cuda.is_available() is False). A GPU VM size needs a working "
            "NVIDIA driver (check nvidia-smi on the node) and a CUDA build of torch; refusing to score on the CPU")


def cpu_threads() -> int:
    """Inference threads on CPU: OMP_NUM_THREADS when the user set it, else every core."""
    if USER_THREADS is not None:
        try:
            threads = int(USER_THREADS)
        except ValueError:
            raise ScoringError(f"OMP_NUM_THREADS={USER_THREADS!r} is not a whole number") from None
        if threads >= 1:
            return threads
        raise ScoringError(f"OMP_NUM_THREADS must be at least 1, got {threads}")
    return _cpu_count()


@dataclass(frozen=True)
class Boxes:
    """One image's detections, in pixels of the array the detector was given."""

    xyxy: np.ndarray  # (n, 4) corners
    conf: np.ndarray  # (n,)
    cls: np.ndarray   # (n,) class ids


class Detector:
    """A loaded model: ``detect`` turns BGR arrays into one Boxes per array.

    Two runtimes sit behind it: Ultralytics' predictor for ``.pt`` weights (and
    any other format Ultralytics loads), and a direct OpenVINO runner for
    ``*_openvino_model`` folders, the fast way to use CPU nodes.
    """

    names: dict[int, str]
    device: str

    def detect(self, arrays: list[np.ndarray], conf: float) -> list[Boxes]:
        raise NotImplementedError


class UltralyticsDetector(Detector):
    """Ultralytics' own predictor: fp16 square batches on CUDA, one image at a time on a CPU.

    A CPU gains nothing from batching (a batch of 8 takes 8 times one image),
    so there each image runs alone at its own minimal letterbox, about 30 %
    fewer pixels than the square for 4:3 photos. A GPU needs the batch, and the
    square keeps its results independent of what else is in the batch.
    """

    def __init__(self, model: Any, device: str, imgsz: int) -> None:
        self.model, self.device, self.imgsz = model, device, imgsz
        self.names = dict(model.names)
        _use_all_cores(device)

    def detect(self, arrays: list[np.ndarray], conf: float) -> list[Boxes]:
        common = {"imgsz": self.imgsz, "conf": conf, "device": self.device, "verbose": False, "save": False}
        if self.device == "cpu":
            results = [self.model.predict(array, rect=True, **common)[0] for array in arrays]
        else:  # one forward pass; rect=False letterboxes every image to the same square
            fp16 = {"quantize": 16} if self.device.startswith("cuda") else {}  # Ultralytics' name for half
            results = self.model.predict(arrays, batch=len(arrays), rect=False, **fp16, **common)
        _use_all_cores(self.device)
        return [
            Boxes(
                xyxy=result.boxes.xyxy.float().cpu().numpy(),
                conf=result.boxes.conf.float().cpu().numpy(),
                cls=result.boxes.cls.int().cpu().numpy(),
            )
            for result in results
        ]


class OpenVinoDetector(Detector):
    """An Ultralytics OpenVINO export, run by OpenVINO directly on the CPU.

    Ultralytics' predictor converts every batch through torch (permute, flip,
    float, divide) and sends one synchronous request at a time. Here the
    compiled model takes the letterboxed uint8 BGR image itself (OpenVINO's
    preprocessing folds the conversion into the graph), and a batch's images
    run on as many infer requests at once as the CPU plugin has throughput
    streams. Each image is its own request, so an export with a dynamic input
    (``dynamic=True``) gets each image at its own minimal letterbox (stride
    multiples, long side ``imgsz``): about 30 % fewer pixels than the square
    for 4:3 photos, which is most of the time on a CPU. A static export gets
    the square it was exported for. Letterbox, NMS and box scaling are
    Ultralytics' own functions, so the detections are those of
    ``YOLO(folder).predict(image, rect=True)`` image by image, whatever the batch.
    """

    def __init__(self, folder: Path, imgsz: int, threads: int) -> None:
        import openvino as ov
        import yaml
        from openvino.preprocess import ColorFormat, PrePostProcessor
        from ultralytics.cfg import DEFAULT_CFG
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils.checks import check_imgsz

        xml = next(iter(sorted(folder.glob("*.xml"))), None)
        metadata_file = folder / OPENVINO_METADATA
        if xml is None or not metadata_file.is_file():
            raise ScoringError(f"{folder} is not an Ultralytics OpenVINO export (needs a .xml and metadata.yaml)")
        metadata = yaml.safe_load(metadata_file.read_text(encoding="utf-8")) or {}
        if metadata.get("task", "detect") != "detect":
            raise ScoringError(f"{folder} is a {metadata['task']!r} model; score.py needs a detection model")
        core = ov.Core()
        model = core.read_model(xml)
        stride = int(metadata.get("stride", 32))
        shape = model.input().get_partial_shape()
        if shape.is_static:
            height, width = shape[2].get_length(), shape[3].get_length()
            if (imgsz, imgsz) != (height, width):
                raise ScoringError(
                    f"--imgsz {imgsz} does not fit {folder}: its input is fixed at {height}x{width} "
                    f"(set --imgsz {max(height, width)} or export with dynamic=True)"
                )
        else:
            height = width = check_imgsz(imgsz, stride=stride, min_dim=1)
            if _int8_dynamic_crashes(model):
                model.reshape({model.input(): [1, 3, height, width]})
        per_image = model.input().get_partial_shape().is_dynamic
        steps = PrePostProcessor(model)
        steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
            .set_color_format(ColorFormat.BGR)
        steps.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
        steps.input().model().set_layout(ov.Layout("NCHW"))
        compiled = core.compile_model(
            steps.build(), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": threads},
        )
        self.device = "cpu"
        self.names = {int(key): str(value) for key, value in metadata["names"].items()}
        self.per_image_letterbox = per_image
        self.threads = threads
        self.end2end = bool(metadata.get("end2end", False))
        self.iou, self.max_det = DEFAULT_CFG.iou, DEFAULT_CFG.max_det
        self.letterbox = LetterBox((height, width), auto=per_image, stride=stride)
        streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.free_requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(streams):
            self.free_requests.put(compiled.create_infer_request())
        # Each request once, on this thread, before any runs in the pool: the first call of
        # OpenVINO's Python binding initialises C++ statics that, raced from two threads,
        # deadlock on the GIL (seen in a local Batch task: both pool threads stuck in `.data`).
        blank = np.full((height, width, 3), 114, dtype=np.uint8)
        for _ in range(streams):
            self._infer_one(blank)
        # Requests run in these threads; OpenVINO releases the GIL while one infers.
        self.pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="openvino")
        self.streams = streams

    def _infer_one(self, array: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
        """The network's raw output for one image, with the letterboxed (height, width) it saw."""
        image = self.letterbox(image=array)
        request = self.free_requests.get()
        try:
            request.infer({0: image[None]})
            return image.shape[:2], request.get_output_tensor(0).data.copy()
        finally:
            self.free_requests.put(request)

    def detect(self, arrays: list[np.ndarray], conf: float) -> list[Boxes]:
        import torch
        from ultralytics.utils import nms, ops

        found = []
        for (shape, output), array in zip(self.pool.map(self._infer_one, arrays), arrays):
            kept = nms.non_max_suppression(
                torch.from_numpy(output), conf, self.iou, max_det=self.max_det, end2end=self.end2end,
            )[0]
            found.append(Boxes(
                xyxy=ops.scale_boxes(shape, kept[:, :4], array.shape[:2]).numpy(),
                conf=kept[:, 4].numpy(),
                cls=kept[:, 5].int().numpy(),
            ))
        return found


def _int8_dynamic_crashes(model: Any) -> bool:
    """An int8 model with a dynamic input crashes OpenVINO's CPU plugin on Intel AMX CPUs.

    openvinotoolkit/openvino#37577 (Ultralytics' OpenVINO backend works around it
    too); such a model runs at the fixed square instead.
    """
    try:
        amx = "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return amx and any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def load_model(weights: str | os.PathLike[str], device: str = "auto", imgsz: int = 640) -> Detector:
    """Load a detector once: an OpenVINO export folder runs on OpenVINO, anything else on Ultralytics.

    On CPU, inference uses every core unless OMP_NUM_THREADS was set.
    """
    resolved = resolve_weights(weights)
    chosen = pick_device(device)
    if Path(resolved).is_dir():  # resolve_weights returns a folder only for an OpenVINO export
        if chosen != "cpu":
            raise ScoringError(f"OpenVINO weights {resolved} run on the CPU; use .pt weights for --device {device}")
        try:
            return OpenVinoDetector(Path(resolved), imgsz, cpu_threads())
        except ImportError as exc:
            raise ScoringError(f"OpenVINO weights {resolved} need the openvino package: {one_line(exc)}") from None
        except ScoringError:
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure means the run cannot happen
            raise ScoringError(f"cannot load weights {resolved}: {one_line(exc)}") from None
    try:
        from ultralytics import YOLO

        model = YOLO(resolved, task="detect")
    except Exception as exc:  # noqa: BLE001 - any load failure means the run cannot happen
        raise ScoringError(f"cannot load weights {resolved}: {one_line(exc)}") from None
    return UltralyticsDetector(model, chosen, imgsz)


def _use_all_cores(device: str) -> None:
    """On CPU, let torch use every core unless the user set OMP_NUM_THREADS.

    Called after each forward pass too: Ultralytics' first predict (its device
    selection) resets torch to ``cpu_count - 1`` threads, which on a 2-core node
    halves the speed.
    """
    if device != "cpu" or USER_THREADS is not None:
        return
    import torch

    if torch.get_num_threads() != _cpu_count():
        torch.set_num_threads(_cpu_count())
