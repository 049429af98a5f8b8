"""The run's copy of the detector weights: a file, an OpenVINO export folder, or a name to download.

``WeightsRef`` answers, in one place, what the ``weights`` param names (a
file, a folder that is an Ultralytics OpenVINO export, or a model name), where
the run's staged copy lies, how a Batch task receives it and its Azure ML URI.

Staging uploads local weights next to the run's code, so every node scores
with exactly the weights the run started with. A ``.pt`` file (or any single
weights file) becomes one blob; an Ultralytics OpenVINO export folder
(``*_openvino_model``: ``.xml``, ``.bin``, ``metadata.yaml``; the rule is the
scoring contract's) becomes a blob prefix ending in ``/``, which Batch
downloads with a container resource file and Azure ML as a ``uri_folder``
input. Anything else is a model name the nodes fetch themselves (Ultralytics
downloads ``yolov8n.pt``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.storage.blob import ContainerClient

from include.monthly.layout import RunPaths
from include.scoring.yolo_scoring.contract import OPENVINO_SUFFIX, has_openvino_files

WEIGHTS_FILE = "weights.pt"
WEIGHTS_FOLDER = f"weights{OPENVINO_SUFFIX}"  # the scorer runs a *_openvino_model folder on OpenVINO
FILE, FOLDER, NAME = "file", "folder", "name"


@dataclass(frozen=True)
class WeightsRef:
    """What the weights are (``kind``: file, folder or name) and, once staged, their blob (a folder's ends in /)."""

    name: str
    kind: str
    blob: str | None = None

    @classmethod
    def of(cls, weights: str) -> WeightsRef:
        """Classify the ``weights`` param; ValueError for a folder that is not an OpenVINO export."""
        path = Path(weights).expanduser()
        if path.is_file():
            return cls(weights, FILE)
        if path.is_dir():
            if not has_openvino_files(path):
                raise ValueError(
                    f"param weights={weights!r} is a folder but not an Ultralytics OpenVINO export "
                    "(*_openvino_model with a .xml, .bin and metadata.yaml)"
                )
            return cls(weights, FOLDER)
        return cls(weights, NAME)

    @classmethod
    def staged(cls, blob: str | None, name: str = "") -> WeightsRef:
        """The reference for a staged location as XCom carries it (None: the nodes load ``name``)."""
        if not blob:
            return cls(name, NAME)
        return cls(name, FOLDER if blob.endswith("/") else FILE, blob)

    @property
    def local(self) -> Path | None:
        """The local file or folder, None for a model name."""
        return None if self.kind == NAME else Path(self.name).expanduser()

    @property
    def is_folder(self) -> bool:
        return self.kind == FOLDER

    def stage(self, work_container: ContainerClient, paths: RunPaths) -> WeightsRef:
        """Upload local weights for the run; the reference with its blob (a model name stays as it is)."""
        local = self.local
        if local is None:
            return self
        if self.kind == FILE:
            blob = paths.code(WEIGHTS_FILE)
            with open(local, "rb") as fh:
                work_container.upload_blob(blob, fh, overwrite=True)
            return WeightsRef(self.name, FILE, blob)
        prefix = paths.code(WEIGHTS_FOLDER) + "/"
        for file in sorted(p for p in local.iterdir() if p.is_file()):
            with open(file, "rb") as fh:
                work_container.upload_blob(prefix + file.name, fh, overwrite=True)
        return WeightsRef(self.name, FOLDER, prefix)

    def batch_resource(self, container: str) -> tuple[dict[str, Any] | None, str]:
        """A Batch task's resource file for the staged weights (None for a name) and the scorer's --weights value."""
        if self.blob is None:
            return None, self.name
        if self.is_folder:
            # A container resource file keeps the blob's whole name below its file_path.
            return ({"container": container, "prefix": self.blob, "file_path": "weights"},
                    f"weights/{self.blob.rstrip('/')}")
        return {"container": container, "blob": self.blob, "file_path": WEIGHTS_FILE}, WEIGHTS_FILE

    def aml_uri(self, datastore: str) -> str | None:
        """The staged weights as an Azure ML datastore URI (a folder's ends in /), None for a name."""
        return f"azureml://datastores/{datastore}/paths/{self.blob}" if self.blob else None

    @property
    def aml_input_type(self) -> str:
        """The Azure ML input type of the staged weights."""
        return "uri_folder" if self.is_folder else "uri_file"
