"""Offline: the scoring pipeline builds, validates and serializes with every setting in place."""
from __future__ import annotations

from pathlib import Path

import pytest

from azure_compute.operators.aml import (
    APPEND_ROW_FILE_ARG,
    ParallelScoringSettings,
    build_scoring_pipeline,
    datastore_uri,
    deterministic_job_name,
    make_environment,
)

SCORING_DIR = Path(__file__).resolve().parents[2] / "include" / "scoring"


def settings(**overrides) -> ParallelScoringSettings:
    values = dict(
        code_dir=str(SCORING_DIR),
        entry_script="score.py",
        environment=make_environment("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
                                     pip_packages=["ultralytics==8.4.0", "pandas"]),
        program_arguments="--root ${{inputs.images}} --conf 0.3 --imgsz 640 --batch-size 16",
        mini_batch_size=7,
        instance_count=3,
        max_concurrency_per_instance=2,
        error_threshold=11,
        mini_batch_error_threshold=2,
        max_retries=4,
        retry_timeout_seconds=900,
        output_file_name="predictions.csv",
        environment_variables={"SCORING_DEVICE": "cuda:0"},
    )
    values.update(overrides)
    return ParallelScoringSettings(**values)


def build(weights: str | None = None, **overrides):
    return build_scoring_pipeline(
        weights=weights,
        settings=settings(**overrides),
        input_path=datastore_uri("images", "202401"),
        output_path=datastore_uri("workspaceblobstore", "predictions/202401"),
        compute="gpu-cluster",
        job_name="monthly-202401-abc",
        experiment_name="monthly-detection",
        tags={"dag_id": "monthly_detection", "run_id": "manual__1", "month": "2024-01"},
    )


def test_pipeline_validates() -> None:
    result = build()._validate()
    assert result.passed, result.error_messages


def test_rest_object_carries_every_setting() -> None:
    rest = build()._to_rest_object().as_dict()["properties"]
    assert rest["jobType"] == "Pipeline"
    assert rest["computeId"] == "gpu-cluster"
    assert rest["experimentName"] == "monthly-detection"
    assert rest["tags"] == {"dag_id": "monthly_detection", "run_id": "manual__1", "month": "2024-01"}
    assert rest["inputs"]["images"] == {"uri": "azureml://datastores/images/paths/202401/", "jobInputType": "uri_folder"}
    assert rest["outputs"]["predictions"]["uri"] == "azureml://datastores/workspaceblobstore/paths/predictions/202401/"

    (step,) = rest["jobs"].values()
    assert step["type"] == "parallel"
    assert step["mini_batch_size"] == 7
    assert step["error_threshold"] == 11
    assert step["mini_batch_error_threshold"] == 2
    assert step["max_concurrency_per_instance"] == 2
    assert step["resources"]["instance_count"] == 3
    assert step["retry_settings"] == {"max_retries": 4, "timeout": 900}
    assert step["environment_variables"] == {"SCORING_DEVICE": "cuda:0"}
    assert step["input_data"] == "${{inputs.images}}"
    assert step["inputs"]["images"]["value"] == "${{parent.inputs.images}}"
    assert step["outputs"]["predictions"]["value"] == "${{parent.outputs.predictions}}"

    task = step["task"]
    assert task["type"] == "run_function"
    assert task["entry_script"] == "score.py"
    assert task["code"] == str(SCORING_DIR)
    # append_row_to is on the run function, where Azure ML reads it.
    assert task["append_row_to"] == "${{outputs.predictions}}"
    assert task["program_arguments"] == (
        f"--root ${{{{inputs.images}}}} --conf 0.3 --imgsz 640 --batch-size 16 {APPEND_ROW_FILE_ARG} predictions.csv"
    )
    environment = task["environment"]
    assert environment["image"] == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
    assert environment["conda_file"]["dependencies"][-1] == {"pip": ["ultralytics==8.4.0", "pandas"]}


@pytest.mark.parametrize(
    ("weights", "input_type"),
    [("azureml://datastores/workspaceblobstore/paths/models/yolov8n.pt", "uri_file"),
     ("azureml://datastores/workspaceblobstore/paths/models/yolov8n_int8_openvino_model/", "uri_folder"),
     ("azureml:yolov8n:2", "custom_model")],
)
def test_weights_are_an_input_handed_to_the_script(weights, input_type) -> None:
    job = build(weights=weights)
    assert job._validate().passed
    rest = job._to_rest_object().as_dict()["properties"]
    assert rest["inputs"]["weights"]["jobInputType"] == input_type
    (step,) = rest["jobs"].values()
    assert step["inputs"]["weights"]["value"] == "${{parent.inputs.weights}}"
    assert "--weights ${{inputs.weights}} --append_row_file_name predictions.csv" in step["task"]["program_arguments"]


def test_weights_elsewhere_than_a_datastore_are_refused() -> None:
    with pytest.raises(ValueError, match="weights '/home/me/yolov8n.pt'"):
        build(weights="/home/me/yolov8n.pt")


def test_registered_environment_is_referenced_by_name() -> None:
    rest = build(environment="azureml:yolo-scoring:3")._to_rest_object().as_dict()["properties"]
    (step,) = rest["jobs"].values()
    assert step["task"]["environment"] == "azureml:yolo-scoring:3"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mini_batch_size": 0}, "mini_batch_size must be a positive integer"),
        ({"instance_count": -2}, "instance_count must be a positive integer"),
        ({"error_threshold": -5}, "error_threshold must be -1"),
        ({"max_retries": 0}, "max_retries"),
        ({"output_file_name": "../x.csv"}, "output_file_name must be a plain file name"),
        ({"program_arguments": f"{APPEND_ROW_FILE_ARG} x.csv"}, "set output_file_name instead"),
    ],
)
def test_bad_settings_fail_before_anything_is_built(override, message) -> None:
    with pytest.raises(ValueError, match=message):
        build(**override)


@pytest.mark.parametrize(
    ("datastore", "path", "message"),
    [("images", "", "must be a non-empty folder"), ("images", "2024/../other", "without '..'"),
     ("bad-name!", "202401", "datastore name")],
)
def test_bad_datastore_paths_are_named(datastore, path, message) -> None:
    with pytest.raises(ValueError, match=message):
        datastore_uri(datastore, path)


def test_job_names_are_deterministic_and_valid() -> None:
    first = deterministic_job_name("monthly_detection", "manual__2024-02-01T00:00:00+00:00", "score", "2024-01")
    again = deterministic_job_name("monthly_detection", "manual__2024-02-01T00:00:00+00:00", "score", "2024-01")
    other = deterministic_job_name("monthly_detection", "manual__2024-03-01T00:00:00+00:00", "score", "2024-01")
    assert first == again != other
    assert all(c.isalnum() or c in "-_" for c in first) and len(first) <= 255
