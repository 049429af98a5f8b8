"""Score images with a YOLOv8 detector and write one CSV row set per image.

This single file is what every backend runs: Azure Batch tasks call the command
line, Azure ML calls ``init()`` / ``run(mini_batch)``, and other code imports
the functions listed below. It depends only on ultralytics, torch, numpy,
pandas, Pillow, OpenCV (which ultralytics brings), the standard library and
(for OpenVINO weights) openvino, so it can be uploaded alone to a node.

Command line::

    python score.py --images DIR_OR_MANIFEST --output OUT.csv [--root DIR_OR_URL]
        [--weights PATH] [--batch-size N] [--device auto|cpu|cuda:0]
        [--imgsz 640] [--conf 0.25] [--workers N] [--max-pixels N] [--summary]
        [--anonymous]

Inputs:
  * a directory is scanned recursively for .jpg .jpeg .png .bmp .tif .tiff .webp
    files (any letter case), in sorted order; ``image`` is the path relative to
    ``--root`` (default: the directory itself);
  * any other path is a manifest: UTF-8 text, one path per line relative to
    ``--root`` (default: the manifest's folder), blank lines ignored, read as a
    stream. ``image`` is the manifest line. A line that is absolute or contains a
    ``..`` segment becomes an error row and is never opened.
  * ``--root`` may be the ``http(s)://`` URL of a blob container or folder; each
    manifest line is then a blob name fetched with HTTP GET in the decode
    threads. The SAS token is read only from the ``SCORING_SAS_TOKEN`` env var
    (required unless ``--anonymous`` is given for a public container).
    Throttling/server errors are retried (5 tries, Retry-After honoured); a
    missing blob is an error row; a refused SAS, a missing container or
    storage that keeps failing stops the run (exit 1) at once.

Output: CSV, UTF-8, columns ``COLUMNS``; one ``ok`` row per detection, one
``empty`` row for an image without detections, one ``error`` row (with the
reason) for a file that cannot be read as an image. Boxes and sizes are in
pixels of the original image after EXIF orientation. The CSV is written to a
temporary file next to the output and renamed when complete.

Settings (a command-line argument wins over its environment variable):
  YOLO_WEIGHTS        weights file or folder (default ``yolov8n.pt``)
  SCORING_DEVICE      auto | cpu | cuda:0 ... (default auto)
  SCORING_BATCH_SIZE  images per forward pass (default 8)
  SCORING_IMGSZ       inference size in pixels (default 640)
  SCORING_CONF        confidence threshold (default 0.25)
  SCORING_WORKERS     decode/download threads (default 2 x CPUs, 4..16)
  SCORING_MAX_PIXELS  larger images are error rows (default 100,000,000)
  SCORING_REQUIRE_CUDA  1: fail at once when no CUDA GPU is usable (GPU pools pass --require-cuda)
  SCORING_DECODE_ON_DEVICE  1: decode JPEGs in batches with torchvision on the
                      model's device (nvJPEG on CUDA); other images, and any JPEG
                      it cannot decode, take the CPU path (default 0, see below)
  SCORING_ROOT        root for names; Azure ML: the input folder (see below)
  SCORING_SAS_TOKEN   SAS token for an http(s) ``--root`` (never an argument)
  OMP_NUM_THREADS     inference threads on CPU (default: every core)

Weights and runtime: a ``.pt`` file (or any format Ultralytics loads) runs on
Ultralytics' predictor, on the GPU when there is one (fp16 batches), else one
image at a time at its own minimal letterbox. A ``*_openvino_model`` folder (an
Ultralytics OpenVINO export, e.g. int8) runs on OpenVINO directly, on the CPU:
on the team's 2-core machines, 1.8x to 2.4x the images/s of the reference
articles' PyTorch loop with the same weights (export them once with ``yolo
export model=yolov8n.pt format=openvino dynamic=True``; docs/performance.md).
A dynamic export letterboxes each image to its own minimal shape; a static one
fixes the input size, so ``--imgsz`` must match it.

Azure ML: ``init()`` loads the model from ``AZUREML_MODEL_DIR`` when set (a
weights file, or a folder holding one ``.pt`` file or ``*_openvino_model``
folder), otherwise from the weights setting. Settings come from the env vars
above or from program arguments (parsed with ``parse_known_args``, so the
driver's own arguments are ignored). ``run(mini_batch)`` returns a DataFrame
with ``COLUMNS``; ``image`` is the file's path relative to ``--root`` /
``SCORING_ROOT`` (pass the input folder, e.g. ``--root ${{inputs.images}}``)
when the file lies under it, else the file name alone.

Importable API (for other code and benchmarks): ``COLUMNS``, ``Settings``,
``load_model(weights, device, imgsz) -> Detector``, ``score_items(detector, items,
settings)`` (rows per input, in order), ``score_paths(detector, paths,
settings, root)`` (flat rows for local files), ``iter_directory``,
``iter_manifest``, ``main(argv) -> exit status``.

Exit status: 0 when the run happened (bad images are rows, not failures);
1 when it could not (weights missing, manifest unreadable, output not
writable, storage refused the SAS or was unreachable), with a one-line message;
2 for command-line usage errors.
"""
from __future__ import annotations

import os

# Ultralytics sets OMP_NUM_THREADS=1 on import when it is unset, so remember
# now whether the user chose a thread count themselves.
_USER_THREADS = os.environ.get("OMP_NUM_THREADS")

import argparse  # noqa: E402
import csv  # noqa: E402
import email.utils  # noqa: E402
import http.client  # noqa: E402
import io  # noqa: E402
import queue  # noqa: E402
import random  # noqa: E402
import stat  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
import warnings  # noqa: E402
from collections import Counter, deque  # noqa: E402
from collections.abc import Iterable, Iterator, Sequence  # noqa: E402
from concurrent.futures import Future, ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import cv2  # noqa: E402 - OpenCV comes with ultralytics
import numpy as np  # noqa: E402
from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: E402

if TYPE_CHECKING:
    import pandas

COLUMNS: tuple[str, ...] = (
    "image", "status", "class_id", "class_name", "confidence",
    "x1", "y1", "x2", "y2", "image_width", "image_height", "error",
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Only these decoders ever see a file: no EPS (Ghostscript), no exotic parsers.
# (Pillow's JPEG decoder also returns multi-picture "MPO" camera files.)
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
DEFAULT_WEIGHTS = "yolov8n.pt"
MAX_FILE_BYTES = 512 * 1024 * 1024
DOWNLOAD_TRIES = 5
DOWNLOAD_TIMEOUT_S = 60.0
MAX_RETRY_WAIT_S = 30.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SAS_ENV = "SCORING_SAS_TOKEN"
EXIT_OK, EXIT_FAILED = 0, 1

Row = tuple[Any, ...]


class ScoringError(Exception):
    """The run cannot happen or cannot go on (bad setting, weights, output, storage)."""


class ImageError(Exception):
    """One input cannot be scored; it becomes an error row and the run goes on."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Everything that tunes a run; built from env vars and arguments in one place."""

    weights: str = DEFAULT_WEIGHTS
    device: str = "auto"
    batch_size: int = 8
    imgsz: int = 640
    conf: float = 0.25
    workers: int = 4
    max_pixels: int = 100_000_000
    root: str | None = None
    decode_on_device: bool = False


def _default_workers() -> int:
    return max(4, min(16, 2 * _cpu_count()))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _flag(raw: str) -> bool:
    """An on/off environment value: 1/true/yes/on or 0/false/no/off."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _env_value(env: dict[str, str], name: str, kind: type, default: Any) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        kind_name = "on/off value (1 or 0)" if kind is _flag else kind.__name__
        raise ScoringError(f"{name}={raw!r} is not a valid {kind_name}") from None


def build_parser(env: dict[str, str], for_aml: bool = False) -> argparse.ArgumentParser:
    """The argument parser; defaults come from env vars so either way works."""
    parser = argparse.ArgumentParser(
        prog="score.py",
        description="Score images with a YOLOv8 detector into a CSV (one row set per image).",
        allow_abbrev=False,
    )
    if not for_aml:
        parser.add_argument("--images", required=True, help="a directory of images or a manifest file")
        parser.add_argument("--output", required=True, help="CSV file to write")
        parser.add_argument("--summary", action="store_true", help="print detections per class to stdout")
        parser.add_argument("--anonymous", action="store_true",
                            help=f"read a public container from a URL --root without {SAS_ENV}")
    parser.add_argument("--root", default=env.get("SCORING_ROOT") or None,
                        help="root the image names are relative to: a folder or a blob container/folder URL "
                             "(env SCORING_ROOT)")
    parser.add_argument("--weights", default=env.get("YOLO_WEIGHTS") or DEFAULT_WEIGHTS,
                        help="weights file or folder (env YOLO_WEIGHTS)")
    parser.add_argument("--batch-size", type=int, default=_env_value(env, "SCORING_BATCH_SIZE", int, 8),
                        help="images per forward pass (env SCORING_BATCH_SIZE, default 8)")
    parser.add_argument("--device", default=env.get("SCORING_DEVICE") or "auto",
                        help="auto, cpu, cuda:0, ... (env SCORING_DEVICE, default auto)")
    parser.add_argument("--imgsz", type=int, default=_env_value(env, "SCORING_IMGSZ", int, 640),
                        help="inference size in pixels (env SCORING_IMGSZ, default 640)")
    parser.add_argument("--conf", type=float, default=_env_value(env, "SCORING_CONF", float, 0.25),
                        help="confidence threshold (env SCORING_CONF, default 0.25)")
    parser.add_argument("--workers", type=int, default=_env_value(env, "SCORING_WORKERS", int, _default_workers()),
                        help="decode/download threads (env SCORING_WORKERS)")
    parser.add_argument("--decode-on-device", action="store_true",
                        default=_env_value(env, "SCORING_DECODE_ON_DEVICE", _flag, False),
                        help="decode JPEGs in batches on the model's device (nvJPEG on CUDA; "
                             "env SCORING_DECODE_ON_DEVICE=1)")
    parser.add_argument("--max-pixels", type=int, default=_env_value(env, "SCORING_MAX_PIXELS", int, 100_000_000),
                        help="larger images are error rows (env SCORING_MAX_PIXELS, default 100000000)")
    parser.add_argument("--require-cuda", action="store_true",
                        default=env.get("SCORING_REQUIRE_CUDA", "").lower() in ("1", "true", "yes"),
                        help="fail at once unless a CUDA GPU scores the images (GPU VM sizes; env SCORING_REQUIRE_CUDA)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate parsed arguments into Settings, naming the bad one."""
    if args.batch_size < 1:
        raise ScoringError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.imgsz < 32:
        raise ScoringError(f"--imgsz must be at least 32, got {args.imgsz}")
    if not 0.0 < args.conf <= 1.0:
        raise ScoringError(f"--conf must be in (0, 1], got {args.conf}")
    if args.workers < 1:
        raise ScoringError(f"--workers must be at least 1, got {args.workers}")
    if args.max_pixels < 1:
        raise ScoringError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    root = args.root
    if root and _is_url(root) and urllib.parse.urlsplit(root).query:
        # Never echo the value: it may hold a SAS token.
        raise ScoringError(f"--root must not contain a query string; put the SAS token in {SAS_ENV}")
    return Settings(
        weights=str(args.weights), device=args.device, batch_size=args.batch_size, imgsz=args.imgsz,
        conf=args.conf, workers=args.workers, max_pixels=args.max_pixels, root=root,
        decode_on_device=bool(args.decode_on_device),
    )


# --------------------------------------------------------------------------- model


def is_openvino_export(path: Path) -> bool:
    """A *_openvino_model folder, or any folder holding an export's .xml and metadata.yaml (an Azure ML input)."""
    return path.is_dir() and (
        path.name.endswith("_openvino_model") or (path / "metadata.yaml").is_file() and any(path.glob("*.xml"))
    )


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
            + [p for p in path.rglob("*_openvino_model") if p.is_dir()]
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
    if _USER_THREADS is not None:
        try:
            threads = int(_USER_THREADS)
        except ValueError:
            raise ScoringError(f"OMP_NUM_THREADS={_USER_THREADS!r} is not a whole number") from None
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
        metadata_file = folder / "metadata.yaml"
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
            raise ScoringError(f"OpenVINO weights {resolved} need the openvino package: {_one_line(exc)}") from None
        except ScoringError:
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure means the run cannot happen
            raise ScoringError(f"cannot load weights {resolved}: {_one_line(exc)}") from None
    try:
        from ultralytics import YOLO

        model = YOLO(resolved, task="detect")
    except Exception as exc:  # noqa: BLE001 - any load failure means the run cannot happen
        raise ScoringError(f"cannot load weights {resolved}: {_one_line(exc)}") from None
    return UltralyticsDetector(model, chosen, imgsz)


def _use_all_cores(device: str) -> None:
    """On CPU, let torch use every core unless the user set OMP_NUM_THREADS.

    Called after each forward pass too: Ultralytics' first predict (its device
    selection) resets torch to ``cpu_count - 1`` threads, which on a 2-core node
    halves the speed.
    """
    if device != "cpu" or _USER_THREADS is not None:
        return
    import torch

    if torch.get_num_threads() != _cpu_count():
        torch.set_num_threads(_cpu_count())


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Item:
    """One input: its name in the ``image`` column and where to read it from."""

    name: str
    path: Path | None = None
    url: str | None = None
    error: str | None = None  # known bad before reading (e.g. escapes the root)


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def unsafe_name_reason(name: str) -> str | None:
    """Why a manifest line may not be opened, or None when it is a plain relative path."""
    if "\x00" in name:
        return "invalid path (NUL byte)"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path not allowed (must be relative to the root)"
    if ".." in name.replace("\\", "/").split("/"):
        return "path escapes the root ('..' not allowed)"
    return None


def blob_url(root_url: str, name: str) -> str:
    """The URL of a blob name under a container/folder URL, each segment URL-quoted."""
    quoted = "/".join(urllib.parse.quote(part, safe="") for part in name.split("/"))
    return root_url.rstrip("/") + "/" + quoted


def item_for_name(name: str, root: str) -> Item:
    """An Item for a manifest line relative to a local folder or a blob URL."""
    reason = unsafe_name_reason(name)
    if reason:
        return Item(name, error=reason)
    if _is_url(root):
        return Item(name, url=blob_url(root, name))
    return Item(name, path=Path(root) / name)


def iter_directory(directory: Path, root: Path | None = None) -> Iterator[Item]:
    """Image files under directory, recursively, in sorted (deterministic) order."""
    base = root or directory
    for current, dirs, files in os.walk(directory):
        dirs.sort()
        for filename in sorted(files):
            if Path(filename).suffix.lower() in IMAGE_SUFFIXES:
                path = Path(current) / filename
                yield Item(path.relative_to(base).as_posix(), path=path)


def open_manifest(manifest: Path) -> io.TextIOWrapper:
    """Open a manifest for streaming, failing early with a message that names it."""
    try:
        return open(manifest, encoding="utf-8-sig", newline=None)  # noqa: SIM115 - streamed by caller
    except OSError as exc:
        raise ScoringError(f"cannot read manifest {manifest}: {exc.strerror or exc}") from None


def iter_manifest(lines: Iterable[str], root: str, source: str = "manifest") -> Iterator[Item]:
    """Items for manifest lines (streamed), skipping blank lines."""
    try:
        for line in lines:
            name = line.rstrip("\r\n")
            if name.strip():
                yield item_for_name(name, root)
    except UnicodeDecodeError:
        raise ScoringError(f"cannot read {source}: it is not UTF-8 text") from None
    except OSError as exc:
        raise ScoringError(f"cannot read {source}: {exc.strerror or exc}") from None


def item_for_aml_file(path: str | os.PathLike[str], root: str | None) -> Item:
    """An Item for a file Azure ML hands to run(): named relative to root when under it."""
    file = Path(path)
    if root and not _is_url(root):
        try:
            return Item(file.relative_to(root).as_posix(), path=file)
        except ValueError:
            pass
    return Item(file.name, path=file)


# --------------------------------------------------------------------------- reading


def _sas_query() -> str:
    return os.environ.get(SAS_ENV, "").strip().lstrip("?")


def redact(text: str) -> str:
    """Remove the SAS token (and its signature) from a message."""
    sas = _sas_query()
    if sas:
        text = text.replace(sas, "***")
        for key, value in urllib.parse.parse_qsl(sas):
            if key == "sig" and value:
                text = text.replace(value, "***").replace(urllib.parse.quote(value, safe=""), "***")
    return text


def _one_line(exc: object) -> str:
    """An exception (or reason) as one redacted line."""
    text = str(exc) or type(exc).__name__
    return redact(" ".join(text.split()))


def _retry_after_seconds(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _read_limited(stream: Any) -> bytes:
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"file larger than {MAX_FILE_BYTES} bytes")
    return data


def fetch_blob(url: str, name: str) -> bytes:
    """GET a blob with bounded retries; 404 is an error row, auth or outage stops the run."""
    sas = _sas_query()
    full_url = f"{url}?{sas}" if sas else url
    for attempt in range(1, DOWNLOAD_TRIES + 1):
        wait = min(MAX_RETRY_WAIT_S, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
        try:
            request = urllib.request.Request(full_url, headers={"x-ms-version": "2021-08-06"})
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
                return _read_limited(response)
        except urllib.error.HTTPError as exc:
            code = exc.code
            error_code = exc.headers.get("x-ms-error-code", "") if exc.headers else ""
            if error_code == "ContainerNotFound":
                raise ScoringError(f"container not found reading {name!r}; check --root") from None
            if code == 404:
                raise ImageError("not found") from None
            if code in (401, 403) or error_code == "PublicAccessNotPermitted":
                hint = f"check {SAS_ENV} (wrong, expired or without read permission?)"
                raise ScoringError(
                    f"storage refused access (HTTP {code} {error_code or exc.reason}) reading {name!r}; {hint}"
                ) from None
            if code not in RETRY_STATUSES:
                raise ImageError(f"download failed: HTTP {code} {error_code or exc.reason}") from None
            if attempt == DOWNLOAD_TRIES:
                raise ScoringError(
                    f"storage kept failing (HTTP {code}) reading {name!r} after {DOWNLOAD_TRIES} tries"
                ) from None
            retry_after = _retry_after_seconds(exc.headers)
            if retry_after is not None:
                wait = min(MAX_RETRY_WAIT_S, retry_after)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            if attempt == DOWNLOAD_TRIES:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                raise ScoringError(
                    f"cannot reach storage reading {name!r} after {DOWNLOAD_TRIES} tries: {_one_line(reason)}"
                ) from None
        time.sleep(wait)
    raise AssertionError("unreachable")


def read_bytes(item: Item) -> bytes:
    """The raw bytes of an input, from disk or blob storage."""
    if item.url:
        data = fetch_blob(item.url, item.name)
    else:
        assert item.path is not None
        try:
            mode = item.path.stat().st_mode
            if stat.S_ISDIR(mode):
                raise ImageError("is a directory, not an image file")
            if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
                raise ImageError("not a regular file")
            with open(item.path, "rb") as handle:
                data = _read_limited(handle)
        except FileNotFoundError:
            raise ImageError("file not found") from None
        except PermissionError:
            raise ImageError("permission denied") from None
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    if not data:
        raise ImageError("empty file")
    return data


@dataclass
class Decoded:
    """An image ready for the model: BGR pixels, possibly shrunk, plus the original size."""

    pixels: np.ndarray
    width: int   # original width after EXIF orientation
    height: int  # original height after EXIF orientation


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit scaled down, alpha composited on white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        peak = float(values.max()) if values.size else 0.0
        if mode.startswith("I;16") or peak > 255.0:
            values = values / 257.0  # 16-bit range to 8-bit
        elif mode == "F" and peak <= 1.0:
            values = values * 255.0  # float image in 0..1
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _pillow_open() -> Any:
    """Pillow's own Image.open.

    Ultralytics replaces Image.open with a wrapper that, on an unknown file,
    tries to pip-install a HEIF plugin; an unknown file here is just an error row.
    """
    opener = Image.open
    if opener.__module__ != Image.__name__:
        opener = getattr(sys.modules.get(opener.__module__), "_image_open", opener)
    return opener


def decode(data: bytes, imgsz: int, max_pixels: int) -> Decoded:
    """Decode image bytes (only as an image), orient by EXIF, shrink to the model size.

    Shrinking here, in a decode thread, keeps queued images small and lets JPEGs
    decode at reduced scale; boxes are mapped back to the original size later.
    """
    try:
        image = _pillow_open()(io.BytesIO(data), formats=PILLOW_FORMATS)
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised or unsupported format)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image too large (over {max_pixels} pixels)") from None
    except Exception as exc:  # noqa: BLE001 - a hostile header may raise anything
        raise ImageError(f"corrupt image: {_one_line(exc)}") from None
    try:
        raw_w, raw_h = image.size
        if raw_w < 1 or raw_h < 1:
            raise ImageError(f"invalid image size {raw_w}x{raw_h}")
        if raw_w * raw_h > max_pixels:
            raise ImageError(f"image too large ({raw_w}x{raw_h} pixels, limit {max_pixels})")
        scale = min(1.0, imgsz / max(raw_w, raw_h))
        target = (max(1, round(raw_w * scale)), max(1, round(raw_h * scale)))
        if scale < 1.0 and image.format in ("JPEG", "MPO"):
            image.draft(None, target)  # decode at 1/2, 1/4 or 1/8 scale, never below target
        image.load()
        loaded_size = image.size
        ImageOps.exif_transpose(image, in_place=True)  # copies nothing when there is nothing to turn
        turned = image.size != loaded_size  # a 90/270-degree orientation swaps the axes
        width, height = (raw_h, raw_w) if turned else (raw_w, raw_h)
        rgb = np.asarray(_to_rgb(image))
        if max(rgb.shape[:2]) > imgsz:
            # OpenCV's area filter: antialiased like Pillow's, at less than half its cost on a CPU.
            ratio = imgsz / max(rgb.shape[:2])
            size = (max(1, round(rgb.shape[1] * ratio)), max(1, round(rgb.shape[0] * ratio)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # Ultralytics takes BGR
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"image too large (over {max_pixels} pixels)") from None
    except MemoryError:
        raise ImageError("image too large to decode in memory") from None
    except OSError as exc:  # Pillow's way of saying the data is bad
        message = _one_line(exc)
        if "truncated" in message:
            raise ImageError(f"truncated image: {message}") from None
        raise ImageError(f"corrupt image: {message}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. an unsupported colour mode
        raise ImageError(f"cannot decode image: {_one_line(exc)}") from None
    return Decoded(pixels=pixels, width=width, height=height)


def load_item(item: Item, imgsz: int, max_pixels: int) -> Decoded:
    """Read and decode one input; ImageError for a bad one, ScoringError to stop the run."""
    if item.error:
        raise ImageError(item.error)
    return decode(read_bytes(item), imgsz, max_pixels)


# --------------------------------------------------------------------------- decode on the model's device
#
# On a GPU node the CPUs, not the GPU, bound the rate: entropy-decoding JPEGs is
# most of their work (docs/performance.md). torchvision.io.decode_jpeg decodes a
# list of JPEGs on a CUDA device with nvJPEG in one call; the decode threads then
# only download and read each header. Its limits, and what this path does:
# it decodes at full size (no reduced-scale draft), so the image is shrunk on
# the device (area filter, like OpenCV's INTER_AREA); it applies no EXIF
# orientation on CUDA, so the orientation read from the header is applied on
# the device; a failing call returns nothing for the whole list, so a failed
# batch is retried image by image and an image that still fails takes the CPU
# path (which names the problem in its error row). Images that are not plain
# JPEGs (PNG, CMYK JPEG, too many pixels) never leave the CPU path. The same
# code runs on the CPU device (torchvision's libjpeg-turbo), which is how it is
# tested without a GPU. Off by default until make bench-gpu has measured it.


@dataclass
class EncodedJpeg:
    """A JPEG whose header was read in a decode thread, waiting to be decoded with its batch."""

    data: bytes
    orientation: int  # EXIF orientation 1..8 (1: as stored)


def load_item_for_device(item: Item, imgsz: int, max_pixels: int) -> Decoded | EncodedJpeg:
    """Read one input; a plain (RGB or grey) JPEG is left encoded for the device, anything else decoded here."""
    if item.error:
        raise ImageError(item.error)
    data = read_bytes(item)
    if data[:3] == b"\xff\xd8\xff":
        try:
            with _pillow_open()(io.BytesIO(data), formats=("JPEG",)) as header:  # reads the header only
                width, height = header.size
                if header.mode in ("RGB", "L") and 0 < width * height <= max_pixels:
                    return EncodedJpeg(data, int(header.getexif().get(0x0112, 1) or 1))
        except Exception:  # noqa: BLE001 - let the CPU path name what is wrong
            pass
    return decode(data, imgsz, max_pixels)


def _orient(tensor: Any, orientation: int) -> Any:
    """A (3, H, W) tensor turned as EXIF orientation says (Pillow's exif_transpose, on the device)."""
    import torch

    if orientation == 2:
        return tensor.flip(2)
    if orientation == 3:
        return tensor.flip(1).flip(2)
    if orientation == 4:
        return tensor.flip(1)
    if orientation == 5:
        return tensor.transpose(1, 2)
    if orientation == 6:
        return torch.rot90(tensor, -1, (1, 2))
    if orientation == 7:
        return tensor.transpose(1, 2).flip(1).flip(2)
    if orientation == 8:
        return torch.rot90(tensor, 1, (1, 2))
    return tensor


def _shrunk(tensor: Any, imgsz: int) -> Decoded:
    """A decoded (3, H, W) uint8 RGB tensor, oriented, to BGR pixels at most imgsz on the long side."""
    import torch

    height, width = tensor.shape[1:]
    if max(height, width) > imgsz:
        ratio = imgsz / max(height, width)
        size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
        tensor = torch.nn.functional.interpolate(tensor[None].float(), size=size, mode="area")[0]
        tensor = tensor.round_().clamp_(0, 255).to(torch.uint8)
    pixels = tensor.flip(0).permute(1, 2, 0).contiguous().cpu().numpy()  # RGB to BGR, HWC
    return Decoded(pixels=pixels, width=int(width), height=int(height))


def decode_jpegs_on_device(jpegs: list[EncodedJpeg], imgsz: int, max_pixels: int, device: str) -> list[Decoded | str]:
    """Decode JPEGs in one torchvision call on `device`; per image on failure, then the CPU path.

    Returns, per input, its Decoded image or the reason it is an error row.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def tensors(group: list[EncodedJpeg]) -> list[Any]:
        return [torch.frombuffer(bytearray(jpeg.data), dtype=torch.uint8) for jpeg in group]

    try:
        decoded: list[Any | None] = list(decode_jpeg(tensors(jpegs), mode=ImageReadMode.RGB, device=device))
    except Exception:  # noqa: BLE001 - one bad JPEG fails the whole call: find it image by image
        decoded = []
        for jpeg in jpegs:
            try:
                decoded.append(decode_jpeg(tensors([jpeg]), mode=ImageReadMode.RGB, device=device)[0])
            except Exception:  # noqa: BLE001 - the CPU path decodes it or names the problem
                decoded.append(None)
    results: list[Decoded | str] = []
    for jpeg, tensor in zip(jpegs, decoded):
        try:
            if tensor is None:
                raise ValueError("not decodable on the device")
            results.append(_shrunk(_orient(tensor, jpeg.orientation), imgsz))
        except Exception:  # noqa: BLE001 - e.g. out of device memory for a huge image
            try:
                results.append(decode(jpeg.data, imgsz, max_pixels))
            except ImageError as exc:
                results.append(str(exc))
    return results


# --------------------------------------------------------------------------- scoring


def error_row(name: str, reason: str) -> Row:
    return (name, "error", None, None, None, None, None, None, None, None, None, reason)


def _detection_rows(item: Item, decoded: Decoded, boxes: Boxes, names: dict[int, str]) -> list[Row]:
    """Rows for one image's detections, boxes mapped back to original pixels."""
    if len(boxes.conf) == 0:
        return [(item.name, "empty", None, None, None, None, None, None, None, decoded.width, decoded.height, None)]
    height_px, width_px = decoded.pixels.shape[:2]
    sx, sy = decoded.width / width_px, decoded.height / height_px
    rows = []
    for (x1, y1, x2, y2), conf, cls in zip(boxes.xyxy, boxes.conf, boxes.cls):
        rows.append((
            item.name, "ok", int(cls), str(names[int(cls)]), round(float(conf), 4),
            round(min(max(x1 * sx, 0.0), decoded.width), 2), round(min(max(y1 * sy, 0.0), decoded.height), 2),
            round(min(max(x2 * sx, 0.0), decoded.width), 2), round(min(max(y2 * sy, 0.0), decoded.height), 2),
            decoded.width, decoded.height, None,
        ))
    return rows


def _infer(detector: Detector, batch: list[tuple[Item, Decoded]], settings: Settings) -> list[list[Row]]:
    """Rows per image of the batch; if a whole batch fails, retry its images one by one."""
    try:
        found = detector.detect([decoded.pixels for _, decoded in batch], settings.conf)
        return [_detection_rows(item, decoded, boxes, detector.names) for (item, decoded), boxes in zip(batch, found)]
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the run
        if len(batch) == 1:
            return [[error_row(batch[0][0].name, f"inference failed: {_one_line(exc)}")]]
    return [_infer(detector, [pair], settings)[0] for pair in batch]


def _score_pending(
    detector: Detector, pending: list[tuple[Item, Decoded | EncodedJpeg | str]], settings: Settings
) -> Iterator[list[Row]]:
    """Run the decoded images of pending through the model; yield every item's rows in order."""
    waiting = [index for index, (_, got) in enumerate(pending) if isinstance(got, EncodedJpeg)]
    if waiting:
        done = decode_jpegs_on_device([pending[index][1] for index in waiting], settings.imgsz,
                                      settings.max_pixels, _decode_device(detector))
        pending = list(pending)
        for index, got in zip(waiting, done):
            pending[index] = (pending[index][0], got)
    batch = [(item, got) for item, got in pending if isinstance(got, Decoded)]
    scored = iter(_infer(detector, batch, settings) if batch else [])
    for item, got in pending:
        yield next(scored) if isinstance(got, Decoded) else [error_row(item.name, got)]


def score_items(detector: Detector, items: Iterable[Item], settings: Settings) -> Iterator[list[Row]]:
    """Yield the rows of each input, in input order.

    Decoding and downloads run ahead in a thread pool (a bounded queue, so
    memory stays bounded however many items there are) while the model runs
    batches of ``settings.batch_size`` images.
    """
    _configure_pillow(settings.max_pixels)
    prefetch = settings.batch_size * 2 + settings.workers
    max_pending = settings.batch_size * 64  # also flush long runs of error rows
    load = load_item_for_device if settings.decode_on_device else load_item
    source = iter(items)
    queue: deque[tuple[Item, Future[Decoded | EncodedJpeg]]] = deque()
    # decoded image, a JPEG for the device, or the reason it is an error row
    pending: list[tuple[Item, Decoded | EncodedJpeg | str]] = []
    with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="decode") as pool:
        try:
            exhausted = False
            while True:
                while not exhausted and len(queue) < prefetch:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                    else:
                        queue.append((item, pool.submit(load, item, settings.imgsz, settings.max_pixels)))
                if not queue:
                    break
                item, future = queue.popleft()
                try:
                    pending.append((item, future.result()))
                except ImageError as exc:
                    pending.append((item, str(exc)))
                images = sum(isinstance(got, (Decoded, EncodedJpeg)) for _, got in pending)
                if images >= settings.batch_size or len(pending) >= max_pending:
                    yield from _score_pending(detector, pending, settings)
                    pending = []
            yield from _score_pending(detector, pending, settings)
        finally:
            for _, future in queue:
                future.cancel()


def _decode_device(detector: Detector) -> str:
    """Where device decode runs: the model's CUDA device, else the CPU (torchvision's own decoder)."""
    return detector.device if str(detector.device).startswith("cuda") else "cpu"


def score_paths(
    detector: Detector, paths: Iterable[str | os.PathLike[str]], settings: Settings | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Iterator[Row]:
    """Rows for local image files (image = path relative to root, else the file name)."""
    settings = settings or Settings()
    root_text = str(root) if root is not None else settings.root
    items = (item_for_aml_file(path, root_text) for path in paths)
    for rows in score_items(detector, items, settings):
        yield from rows


# --------------------------------------------------------------------------- output


class CsvOutput:
    """A CSV written to a temp file beside the target and renamed into place when complete."""

    def __init__(self, target: Path) -> None:
        self.target = target
        try:
            if target.is_dir():
                raise IsADirectoryError(21, "is a directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in commit/abort
                "w", encoding="utf-8", newline="", dir=target.parent, prefix=f".{target.name}.", suffix=".partial",
                delete=False,
            )
        except OSError as exc:
            raise ScoringError(f"cannot write output {target}: {exc.strerror or exc}") from None
        self._handle = handle
        self._writer = csv.writer(handle, lineterminator="\n")
        self._writer.writerow(COLUMNS)

    def write(self, rows: Iterable[Row]) -> None:
        self._writer.writerows(rows)

    def commit(self) -> None:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.chmod(self._handle.name, 0o644)
            os.replace(self._handle.name, self.target)
        except OSError as exc:
            self.abort()
            raise ScoringError(f"cannot write output {self.target}: {exc.strerror or exc}") from None

    def abort(self) -> None:
        self._handle.close()
        Path(self._handle.name).unlink(missing_ok=True)


@dataclass
class RunStats:
    """Counts for the closing summary line and the per-class summary."""

    images: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # ok / empty / error images
    classes: Counter[str] = field(default_factory=Counter)  # detections per class name

    def add(self, rows: Sequence[Row]) -> None:
        self.images += 1
        self.statuses[rows[0][1]] += 1
        if rows[0][1] == "ok":
            self.classes.update(row[3] for row in rows)

    def line(self) -> str:
        ok, empty, error = (self.statuses[k] for k in ("ok", "empty", "error"))
        return f"{self.images} images ({ok} ok, {empty} empty, {error} error), {self.classes.total()} detections"


def _configure_pillow(max_pixels: int) -> None:
    # Pillow raises DecompressionBombError above twice this; we reject above it ourselves.
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


PROGRESS_EVERY = 1000  # images between progress lines on stderr


def _cli_items(args: argparse.Namespace, settings: Settings) -> tuple[Iterable[Item], io.TextIOWrapper | None]:
    """The inputs named by --images/--root, and the open manifest (if any) to close afterwards."""
    images = Path(args.images)
    remote = bool(settings.root and _is_url(settings.root))
    if remote and not _sas_query() and not args.anonymous:
        # Azure answers anonymous reads of a private container with 404s: fail now, not with 10,000 error rows.
        raise ScoringError(f"{SAS_ENV} is not set; it is needed to read from a URL --root (or pass --anonymous)")
    if images.is_dir():
        if remote:
            raise ScoringError("--images must be a manifest file when --root is a URL")
        if not settings.root:
            return iter_directory(images), None
        root = Path(settings.root).resolve()
        if not images.resolve().is_relative_to(root):
            raise ScoringError(f"--images {images} is not inside --root {settings.root}")
        return iter_directory(images.resolve(), root), None
    if images.suffix.lower() in IMAGE_SUFFIXES and images.is_file():
        raise ScoringError(f"--images {images} is an image; pass a directory or a manifest (text file)")
    if settings.root and not remote and not Path(settings.root).is_dir():
        raise ScoringError(f"--root {settings.root} is not a directory")
    manifest = open_manifest(images)
    root_text = settings.root or str(images.parent)
    return iter_manifest(manifest, root_text, source=f"manifest {images}"), manifest


def run_cli(args: argparse.Namespace, settings: Settings) -> RunStats:
    """Score the inputs named by the command line into the output CSV."""
    items, manifest = _cli_items(args, settings)
    stats = RunStats()
    try:
        output = CsvOutput(Path(args.output))
        try:
            detector = load_model(settings.weights, settings.device, settings.imgsz)
            started = time.monotonic()
            for rows in score_items(detector, items, settings):
                output.write(rows)
                stats.add(rows)
                if stats.images % PROGRESS_EVERY == 0:
                    print(f"score.py: progress: {stats.line()}", file=sys.stderr, flush=True)
            output.commit()
        except BaseException:
            output.abort()
            raise
    finally:
        if manifest is not None:
            manifest.close()
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        f"score.py: {stats.line()} in {elapsed:.1f} s ({stats.images / elapsed:.2f} images/s) -> {args.output}",
        file=sys.stderr,
    )
    return stats


def print_class_summary(stats: RunStats, output: str) -> None:
    """Detections per class, most frequent first, and where the CSV is."""
    print(f"Detections per class ({stats.images} images, {stats.statuses['error']} unreadable):")
    for name, count in stats.classes.most_common():
        print(f"  {name:<20} {count:>6}")
    if not stats.classes:
        print("  (none)")
    print(f"CSV: {Path(output).resolve()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    try:
        parser = build_parser(dict(os.environ))
        args = parser.parse_args(argv)
        settings = settings_from_args(args)
        if args.require_cuda:
            require_cuda(settings.device, settings.weights)
        stats = run_cli(args, settings)
    except ScoringError as exc:
        print(f"score.py: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("score.py: interrupted; no output written", file=sys.stderr)
        return 130
    if args.summary:
        print_class_summary(stats, args.output)
    return EXIT_OK


# --------------------------------------------------------------------------- Azure ML

_aml_model: Any = None
_aml_settings: Settings | None = None


def init() -> None:
    """Azure ML entry: load the model once per worker process."""
    global _aml_model, _aml_settings
    env = dict(os.environ)
    args, _driver_args = build_parser(env, for_aml=True).parse_known_args(sys.argv[1:])
    settings = settings_from_args(args)
    if args.require_cuda:
        require_cuda(settings.device, settings.weights)
    model_dir = env.get("AZUREML_MODEL_DIR")
    weights = resolve_weights(model_dir, prefer=settings.weights) if model_dir else settings.weights
    _aml_settings = replace(settings, weights=weights)
    _aml_model = load_model(weights, settings.device, settings.imgsz)


def run(mini_batch: list[str]) -> pandas.DataFrame:
    """Azure ML entry: rows (``COLUMNS``) for every file of the mini batch."""
    import pandas as pd

    if _aml_model is None or _aml_settings is None:
        raise RuntimeError("init() must be called before run()")
    if not isinstance(mini_batch, (list, tuple)):
        raise TypeError(f"run() expects a list of file paths, got {type(mini_batch).__name__}")
    rows = list(score_paths(_aml_model, mini_batch, _aml_settings))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    # Whole numbers stay whole next to the blanks of empty/error rows (not 0.0 / NaN floats).
    return frame.astype({"class_id": "Int64", "image_width": "Int64", "image_height": "Int64"})


if __name__ == "__main__":
    sys.exit(main())
