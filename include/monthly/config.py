"""The one settings module of the monthly job.

``DagConfig`` holds everything an operator of this product may change without
touching code, each with its environment variable (``MONTHLY_DETECTION_*``) and
its default: connections, container names, pool, scoring, job limits, Azure ML
and prices. The DAG reads it once at parse time; per-run overrides come from the
DAG's params (validated in ``include.monthly.plan``).

Below it, the fixed tunables of the library code (thread counts, block sizes,
how much a message lists): settings too, kept here so that no other module of
``include.monthly`` holds one. Blob paths and names live in ``layout``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields

_PREFIX = "MONTHLY_DETECTION_"
#: Azure ML's rule for datastore names (studio: "lowercase letters, digits, and underscore").
DATASTORE_NAME = re.compile(r"^[a-z0-9_]+$")

# Fixed tunables of the library code (not read from the environment).
# Block size for the atomic upload of predictions.csv (Azure allows 50,000 blocks per blob).
PUBLISH_BLOCK_SIZE = 4 * 1024 * 1024
# How many names an error message or a record lists before saying "and N more".
MAX_LISTED_NAMES = 20
# Staging: manifests uploaded by this many threads at once.
STAGE_UPLOAD_THREADS = 8
# Merge: shards fetched ahead of the one being written, by this many download threads.
MERGE_PREFETCH_SHARDS = 8
MERGE_DOWNLOAD_THREADS = 4
# Longest failure reason copied into an `error` row (stderr tails can be long).
MAX_ERROR_REASON_CHARS = 2000

# Compute prices in USD per node-hour (Linux), by VM size: what the month's node time costs.
# Override or extend with MONTHLY_DETECTION_VM_PRICES='{"Standard_X": {"spot": 0.1, "dedicated": 0.5}}'.
# Where the defaults come from (looked up 2026-12-02 with the docs/pages search; no Microsoft price
# page for these sizes was in reach, so both figures are third-party and NOT verified):
#   Standard_NC4as_T4_v3 dedicated 0.526: East US pay-as-you-go, a public repository's price table
#     ("Azure AKS (East US) ... Standard_NC4as_T4_v3 | $0.526"); the same figure x2/x4 for NC8/NC16.
#   Standard_NC4as_T4_v3 spot 0.1492: eastus spot, a public repository's simulation log of 2026-09-26
#     ("azure eastus Standard_NC4as_T4_v3 spot | 0.1492"). Spot prices move with demand.
# Check the current figures for your region with Azure's Retail Prices API
# (https://prices.azure.com/api/retail/prices, filter armSkuName and armRegionName) and override.
VM_PRICES_SOURCE = "third-party figures for East US, looked up 2026-12-02, not verified against Microsoft's price list"
DEFAULT_VM_PRICES: dict[str, dict[str, float]] = {
    "Standard_NC4as_T4_v3": {"dedicated": 0.526, "spot": 0.1492},
    "Standard_NC8as_T4_v3": {"dedicated": 1.052},   # spot: no figure found
    "Standard_NC16as_T4_v3": {"dedicated": 2.104},  # spot: no figure found
}


@dataclass(frozen=True)
class DagConfig:
    # Schedule: the run at the start of a month processes the month before.
    schedule_cron: str = "0 3 1 * *"
    owner: str = "ml-platform"
    # Connections (the same DAG runs on Azure and on the local stack).
    azure_batch_conn_id: str = "azure_batch_default"
    wasb_conn_id: str = "wasb_default"
    azure_ml_conn_id: str = "azure_ml_default"
    # Containers: the month folders (read only), the runs' working files, the published outputs.
    input_container: str = "images"
    work_container: str = "work"
    output_container: str = "predictions"
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
    shard_size: int = 500  # images per Batch task (and per Azure ML mini-batch)
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
    # Prices per node-hour, JSON by VM size ({"Standard_X": {"spot": 0.1, "dedicated": 0.5}}), over DEFAULT_VM_PRICES.
    vm_prices: str = ""
    price_currency: str = "USD"

    def price_table(self) -> dict[str, dict[str, float]]:
        """DEFAULT_VM_PRICES with ``vm_prices`` laid over them; a bad override names the setting."""
        table = {size: dict(prices) for size, prices in DEFAULT_VM_PRICES.items()}
        if not self.vm_prices.strip():
            return table
        name = f"{_PREFIX}VM_PRICES"
        try:
            override = json.loads(self.vm_prices)
        except ValueError as err:
            raise ValueError(f"{name} is not JSON: {err}") from None
        if not isinstance(override, dict):
            raise ValueError(f"{name} must be a JSON object of VM size -> {{spot, dedicated}}")
        for size, prices in override.items():
            if not isinstance(prices, dict) or not set(prices) <= {"spot", "dedicated"}:
                raise ValueError(f"{name}: {size!r} must map 'spot' and/or 'dedicated' to a price per hour")
            for kind, value in prices.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{name}: {size}.{kind}={value!r} is not a price (a number >= 0)")
            table.setdefault(size, {}).update({k: float(v) for k, v in prices.items()})
        return table

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
