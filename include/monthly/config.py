"""Deployment settings of the monthly DAG, read once from the environment.

Everything an operator of this product may want to change without touching
code lives here, with its environment variable (``MONTHLY_DETECTION_*``) and
its default. The DAG reads these at parse time for defaults; per-run overrides
come from the DAG's params (validated in ``include.monthly.plan``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from include.monthly.layout import DEFAULT_SHARD_SIZE, BlobLayout

_PREFIX = "MONTHLY_DETECTION_"


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
    aml_image: str = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
    aml_pip_packages: str = "ultralytics==8.4.190 pandas"
    aml_max_concurrency_per_instance: int = 1
    # What teardown does with the pool: resize_to_zero, delete or keep.
    pool_teardown: str = "delete"
    tags: tuple[str, ...] = field(default=("yolo", "azure-batch", "monthly"))

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
