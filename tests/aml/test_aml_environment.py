"""The Azure ML environment: one pinned conda spec on one image, the same for the pipeline job and a deployment."""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from azure_compute.operators.aml import make_environment

from include.scoring.aml_environment import CONDA_FILE, scoring_environment

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def pip_packages() -> list[str]:
    spec = yaml.safe_load(CONDA_FILE.read_text())
    return next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict))


def test_the_spec_carries_what_the_driver_and_ultralytics_need_all_pinned():
    packages = pip_packages()
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", p) for p in packages), packages
    names = {p.split("==")[0] for p in packages}
    # The parallel run driver's packages, as Microsoft's parallel-job environments carry them.
    assert {"azureml-core", "azureml-dataset-runtime[fuse]"} <= names
    constraints = dict(line.strip().split("==") for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines()
                       if "==" in line and not line.startswith("#"))
    for package in ("ultralytics", "torch", "torchvision", "pandas", "numpy", "pillow"):
        pinned = next(p for p in packages if p.startswith(package + "=="))
        assert pinned == f"{package}=={constraints[package]}", pinned  # the versions the tests run


def test_the_image_brings_libgl_for_opencv():
    dockerfile = (PROJECT_ROOT / "include" / "scoring" / "aml" / "Dockerfile").read_text()
    assert "libgl1" in dockerfile and "libglib2.0-0" in dockerfile


def test_the_dag_and_a_deployment_use_the_same_environment(parse_monthly_dag):
    env = scoring_environment("example.azurecr.io/yolo-aml-base:1")
    assert env.image == "example.azurecr.io/yolo-aml-base:1"
    assert env.conda_file == yaml.safe_load(CONDA_FILE.read_text())
    with parse_monthly_dag(MONTHLY_DETECTION_AML_IMAGE="example.azurecr.io/yolo-aml-base:1") as dag:
        submit = dag.get_task("submit")
        # The DAG names the image and the conda spec; the Environment is built when the task runs.
        built = make_environment(submit.image, conda_file=submit.conda_file)
        assert built.image == env.image
        assert built.conda_file == env.conda_file
