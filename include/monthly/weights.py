"""The run's copy of the detector weights: a file, an OpenVINO export folder, or a name to download.

Staging uploads local weights next to the run's code, so every node scores
with exactly the weights the run started with. A ``.pt`` file (or any single
weights file) becomes one blob; an Ultralytics OpenVINO export folder
(``*_openvino_model``: ``.xml``, ``.bin``, ``metadata.yaml``) becomes a blob
prefix ending in ``/``, which Batch downloads with a container resource file
and Azure ML as a ``uri_folder`` input. Anything else is a model name the
nodes fetch themselves (Ultralytics downloads ``yolov8n.pt``).
"""
from __future__ import annotations

from pathlib import Path

from azure.storage.blob import ContainerClient

from include.monthly.layout import RunPaths

WEIGHTS_FILE = "weights.pt"
WEIGHTS_FOLDER = "weights_openvino_model"  # score.py runs a *_openvino_model folder on OpenVINO


def local_weights(weights: str) -> Path | None:
    """The local file or export folder `weights` names, None for a model name; ValueError for any other folder."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if not (path / "metadata.yaml").is_file() or not any(path.glob("*.xml")):
            raise ValueError(
                f"param weights={weights!r} is a folder but not an Ultralytics OpenVINO export "
                "(*_openvino_model with a .xml, .bin and metadata.yaml)"
            )
        return path
    return None


def stage_weights(work_container: ContainerClient, paths: RunPaths, weights: str) -> str | None:
    """Upload local weights for the run: the blob name of a file, the prefix (ending in /) of a folder, or None."""
    local = local_weights(weights)
    if local is None:
        return None
    if local.is_file():
        blob = paths.code(WEIGHTS_FILE)
        with open(local, "rb") as fh:
            work_container.upload_blob(blob, fh, overwrite=True)
        return blob
    prefix = paths.code(WEIGHTS_FOLDER) + "/"
    for file in sorted(p for p in local.iterdir() if p.is_file()):
        with open(file, "rb") as fh:
            work_container.upload_blob(prefix + file.name, fh, overwrite=True)
    return prefix


def is_folder(weights_blob: str | None) -> bool:
    """Whether a staged weights location is an export folder (a prefix) rather than one file."""
    return bool(weights_blob) and weights_blob.endswith("/")
