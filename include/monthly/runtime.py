"""How the scoring runtime reaches a Batch node: a container image, or a start-task venv.

A bare node (``ubuntu-hpc``) has a system ``python3`` without numpy, OpenCV or
Ultralytics, so a pool needs one of:

* ``container``: the image built from ``include/scoring/Dockerfile``, prefetched
  by the pool (``containerConfiguration``) and logged into with an Airflow
  connection's user and password or token; tasks run ``python3 score.pyz`` in it.
* ``venv``: the pinned recipe ``include/scoring/node_setup.sh`` runs as the
  pool's start task (elevated, so it can apt-get what Ubuntu lacks) and installs
  ``include/scoring/requirements.txt`` into ``$AZ_BATCH_NODE_SHARED_DIR/scoring-venv``;
  tasks run that venv's python.

On a GPU VM size (N-series) the start task first checks the driver with
``nvidia-smi`` and the tasks require CUDA (``score.pyz --require-cuda``), so a
node without a working GPU fails at once instead of scoring on the CPU.
"""
from __future__ import annotations

import base64
import re
import shlex
from pathlib import Path

from include.monthly.config import DagConfig

RUNTIMES = ("venv", "container")
SCORING_DIR = Path(__file__).resolve().parents[1] / "scoring"
RECIPE = SCORING_DIR / "node_setup.sh"
REQUIREMENTS = SCORING_DIR / "requirements.txt"
VENV = "$AZ_BATCH_NODE_SHARED_DIR/scoring-venv"
_GPU_SIZE = re.compile(r"^standard_n", re.IGNORECASE)


def is_gpu_vm_size(vm_size: str) -> bool:
    """N-series sizes (NC, ND, NV, ...) carry GPUs; every other Azure family is CPU only."""
    return bool(_GPU_SIZE.match(vm_size or ""))


def pinned_requirements() -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    return [line for line in lines if line]


def check_runtime(config: DagConfig) -> None:
    """Refuse a configuration whose pool would have no scoring runtime, naming the settings to set."""
    runtime = config.scoring_runtime
    if runtime not in RUNTIMES:
        raise ValueError(
            f"MONTHLY_DETECTION_SCORING_RUNTIME={runtime!r}: the pool would have no scoring runtime (a bare node's "
            "python3 has no numpy, OpenCV or ultralytics). Set it to 'container' with MONTHLY_DETECTION_CONTAINER_IMAGE "
            "(include/scoring/Dockerfile, pushed to your registry) or to 'venv' (the start task installs "
            "include/scoring/requirements.txt on every node)")
    if runtime == "container" and not config.container_image:
        raise ValueError("MONTHLY_DETECTION_SCORING_RUNTIME=container needs MONTHLY_DETECTION_CONTAINER_IMAGE "
                         "(the image built from include/scoring/Dockerfile, e.g. myregistry.azurecr.io/yolo-scoring:1)")
    if runtime == "venv" and config.container_image:
        raise ValueError("MONTHLY_DETECTION_CONTAINER_IMAGE is set but MONTHLY_DETECTION_SCORING_RUNTIME=venv; "
                         "set SCORING_RUNTIME=container to use the image, or unset CONTAINER_IMAGE")
    if config.container_registry_conn_id and runtime != "container":
        raise ValueError("MONTHLY_DETECTION_CONTAINER_REGISTRY_CONN_ID is set but MONTHLY_DETECTION_SCORING_RUNTIME "
                         "is not 'container'")


def recipe_command_line(requirements: list[str], gpu: bool = False, check: str | None = None) -> str:
    """A start task command line that writes the recipe to its working directory and runs it.

    The recipe travels inside the command line (base64), so the pool needs no
    resource file, hence no SAS that could expire before a node reboots.
    """
    encoded = base64.b64encode(RECIPE.read_bytes()).decode()
    flags = ("--gpu " if gpu else "") + (f"--check {shlex.quote(check)} " if check else "")
    body = f'echo {encoded} | base64 -d > node_setup.sh && exec bash node_setup.sh {flags}"{VENV}" "$@"'
    return shlex.join(["/bin/bash", "-c", body, "node_setup", *requirements])


def start_task(config: DagConfig) -> dict | None:
    """The pool's start task: {"command_line", "elevated"}, or None when a node needs none."""
    gpu = is_gpu_vm_size(config.vm_size)
    if config.scoring_runtime == "venv":
        return {"command_line": recipe_command_line(pinned_requirements(), gpu=gpu), "elevated": True}
    if gpu:
        check = ("nvidia-smi || { echo 'nvidia-smi failed: this GPU node has no working NVIDIA driver; "
                 "its tasks would run on the CPU' >&2; exit 3; }")
        return {"command_line": shlex.join(["/bin/bash", "-c", check]), "elevated": False}
    return None


def scoring_argv(config: DagConfig, script_args: list[str]) -> list[str]:
    """argv of a scoring task: the scoring artifact (score.pyz) with the runtime's python (and --require-cuda on GPU sizes)."""
    args = [*script_args, *(["--require-cuda"] if is_gpu_vm_size(config.vm_size) else [])]
    if config.scoring_runtime == "container":
        return ["python3", *args]
    # Batch does not expand variables in a command line: a shell finds the venv (its args stay quoted).
    return ["/bin/sh", "-c", f'exec "{VENV}/bin/python" "$@"', "score", *args]
