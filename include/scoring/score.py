"""Score images with a YOLOv8 detector and write one CSV row set per image.

This is the entry every backend names: Azure ML's parallel driver loads it and
calls ``init()`` / ``run(mini_batch)``; the command line below runs it here and
in the scoring image. The code is the package ``yolo_scoring`` beside this file
(one concern per module, see its docstring); a Batch node gets the package as
one artifact, the zipapp ``score.pyz`` (``include/scoring/artifact.py``), run as
``python3 score.pyz`` with the same arguments. It depends only on ultralytics,
torch, numpy, pandas, Pillow, OpenCV (which ultralytics brings), the standard
library and (for OpenVINO weights) openvino.

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

Importable API (for other code and benchmarks, re-exported from the package): ``COLUMNS``, ``Settings``,
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

import sys
from pathlib import Path

# The package lies beside this file (the repository, the Azure ML code asset, the image's workdir).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from yolo_scoring.aml import init, run  # noqa: E402
from yolo_scoring.cli import PROGRESS_EVERY, main, print_class_summary, run_cli  # noqa: E402
from yolo_scoring.contract import COLUMNS, IMAGE_SUFFIXES, Row, error_row, is_openvino_export  # noqa: E402
from yolo_scoring.decode import PILLOW_FORMATS, Decoded, decode, load_item  # noqa: E402
from yolo_scoring.device_decode import EncodedJpeg, decode_jpegs_on_device, load_item_for_device  # noqa: E402
from yolo_scoring.errors import SAS_ENV, ImageError, ScoringError, redact  # noqa: E402
from yolo_scoring.inputs import (  # noqa: E402
    Item, blob_url, item_for_aml_file, item_for_name, iter_directory, iter_manifest, open_manifest,
    unsafe_name_reason,
)
from yolo_scoring.output import CsvOutput, RunStats  # noqa: E402
from yolo_scoring.reading import DOWNLOAD_TRIES, MAX_FILE_BYTES, fetch_blob, read_bytes  # noqa: E402
from yolo_scoring.runtime import (  # noqa: E402
    Boxes, Detector, OpenVinoDetector, UltralyticsDetector, cpu_threads, load_model, pick_device, require_cuda,
    resolve_weights,
)
from yolo_scoring.scoring import _decode_device, score_items, score_paths  # noqa: E402
from yolo_scoring.settings import (  # noqa: E402
    DEFAULT_WEIGHTS, EXIT_FAILED, EXIT_OK, Settings, _cpu_count, _default_workers, build_parser, settings_from_args,
)

__all__ = [
    "COLUMNS", "DEFAULT_WEIGHTS", "DOWNLOAD_TRIES", "EXIT_FAILED", "EXIT_OK", "IMAGE_SUFFIXES", "MAX_FILE_BYTES",
    "PILLOW_FORMATS", "PROGRESS_EVERY", "SAS_ENV", "Boxes", "CsvOutput", "Decoded", "Detector", "EncodedJpeg",
    "ImageError", "Item", "OpenVinoDetector", "Row", "RunStats", "ScoringError", "Settings", "UltralyticsDetector",
    "_cpu_count", "_decode_device", "_default_workers", "blob_url", "build_parser", "cpu_threads", "decode",
    "decode_jpegs_on_device", "error_row", "fetch_blob", "init", "is_openvino_export", "item_for_aml_file",
    "item_for_name", "iter_directory", "iter_manifest", "load_item", "load_item_for_device", "load_model", "main",
    "open_manifest", "pick_device", "print_class_summary", "read_bytes", "redact", "require_cuda", "resolve_weights",
    "run", "run_cli", "score_items", "score_paths", "settings_from_args", "unsafe_name_reason",
]

if __name__ == "__main__":
    sys.exit(main())
