"""Deployment settings of the monthly DAG, read once from the environment.

Everything an operator of this product may want to change without touching
code lives here, with its environment variable (``MONTHLY_DETECTION_*``) and
its default. The DAG reads these at parse time for defaults; per-run overrides
come from the DAG's params (validated in ``include.monthly.plan``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields

from include.monthly.layout import DEFAULT_SHARD_SIZE, BlobLayout

_PREFIX = "MONTHLY_DETECTION_"
#: Azure ML's rule for datastore names (studio: "lowercase letters, digits, and underscore").
DATASTORE_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class DagConfig:
    # Schedule: the run at the start of a month processes the month before.
    schedule_cron: str = "0 3 1 * *"
    owner: str = "ml-platform"
    # Connections (the same DAG runs on Azure and on the local stack).
    azure_batch_conn_id: str = "azure_batch_default"
    wasb_conn_id: str = "wasb_default"
    azure_ml_conn_id: str = "azure_ml_default"
    # Containers.
    input_container: str = BlobLayout.input_container
    work_container: str = BlobLayout.work_container
    output_container: str = BlobLayout.output_container
    # Batch pool: one T4 GPU per node, spot capacity by default.
    pool_prefix: str = "yolo-gpu"
    vm_size: str = "Standard_NC4as_T4_v3"
    dedicated_nodes: int = 0
    spot_nodes: int = 2
    task_slots_per_node: int = 1
    # Scoring runtime on the nodes (include/monthly/runtime.py): "venv" (the start task
    # installs include/scoring/requirements.txt) or "container" (CONTAINER_IMAGE, built
    # from include/scoring/Dockerfile; registry login from an Airflow connection whose
    # host/login/password are the registry server, user and password or token).
    scoring_runtime: str = "venv"
    container_image: str = ""
    container_registry_conn_id: str = ""
    node_wait_timeout_s: int = 1800
    # Scoring.
    shard_size: int = DEFAULT_SHARD_SIZE
    weights: str = "yolov8n.pt"
    conf: float = 0.25
    imgsz: int = 640
    batch_size: int = 16
    device: str = "auto"
    scoring_threads: int = 0  # OMP_NUM_THREADS of each task; 0 = every core of the node
    # Job behaviour.
    max_task_retry_count: int = 2
    task_timeout_s: int = 2 * 3600
    job_timeout_s: int = 12 * 3600
    error_threshold: str = "0"
    poll_interval_s: int = 30
    # Azure ML backend: a low-priority GPU cluster that scales to zero by itself.
    aml_compute: str = "gpu-cluster"
    # The image under include/scoring/aml/conda.yaml (build include/scoring/aml/Dockerfile for libGL).
    aml_image: str = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
    aml_max_concurrency_per_instance: int = 1
    # Datastores registered in the workspace for the input and work containers (names of their own:
    # a container may be called yolo-images, a datastore may not hold '-').
    aml_images_datastore: str = "images"
    aml_work_datastore: str = "work"
    # What teardown does with the pool: resize_to_zero, delete or keep.
    pool_teardown: str = "delete"
    tags: tuple[str, ...] = field(default=("yolo", "azure-batch", "monthly"))

    def __post_init__(self) -> None:
        for name in ("aml_images_datastore", "aml_work_datastore"):
            value = getattr(self, name)
            if not DATASTORE_NAME.match(value):
                raise ValueError(
                    f"{_PREFIX}{name.upper()}={value!r}: an Azure ML datastore name has only lowercase letters, "
                    "digits and '_'"
                )

    def aml_datastores(self) -> dict[str, str]:
        """The datastores the Azure ML backend needs: name -> the container it must point at."""
        return {self.aml_images_datastore: self.input_container, self.aml_work_datastore: self.work_container}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "DagConfig":
        """Defaults overridden by ``MONTHLY_DETECTION_<FIELD>`` variables; a bad value names itself."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(_PREFIX + f.name.upper())
            if raw is None or f.name == "tags":
                continue
            kind = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**values)
