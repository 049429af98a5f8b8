"""The Azure ML environment of score.py: one conda spec (``aml/conda.yaml``) on one image.

Both the pipeline job and a batch endpoint deployment use `scoring_environment`, so the
packages the node gets are written down once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

CONDA_FILE = Path(__file__).resolve().parent / "aml" / "conda.yaml"
#: Microsoft's Azure ML CUDA base; include/scoring/aml/Dockerfile adds libGL on top of it.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"


def scoring_environment(image: str = BASE_IMAGE, name: str | None = None) -> Any:
    """An ``azure.ai.ml.entities.Environment``: the image plus the pinned conda spec."""
    from azure.ai.ml.entities import Environment

    if not image:
        raise ValueError("the Azure ML scoring environment needs an image (MONTHLY_DETECTION_AML_IMAGE)")
    return Environment(name=name, image=image, conda_file=str(CONDA_FILE))
