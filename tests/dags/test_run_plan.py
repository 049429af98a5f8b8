"""Bad params fail the first task with a message naming the param, before Azure is touched."""
from __future__ import annotations

import datetime as dt

import pytest

from include.monthly.config import DagConfig
from include.monthly.plan import plan_run

GOOD = {"month": "2024-01", "backend": "batch", "shard_size": 50, "dedicated_nodes": 0, "spot_nodes": 2,
        "conf": 0.25, "imgsz": 640, "batch_size": 8, "weights": "yolov8n.pt", "error_threshold": "0"}


def plan(**overrides):
    return plan_run({**GOOD, **overrides}, dag_id="monthly_detection", run_id="manual__2024-02-01T00:00:00",
                    data_interval_start=dt.datetime(2023, 12, 1, tzinfo=dt.timezone.utc), config=DagConfig())


def test_month_param_wins_over_data_interval_and_ids_are_deterministic() -> None:
    first, again = plan(), plan()
    assert first.month_key == "202401"
    assert first.job_id == again.job_id and first.pool_id == again.pool_id
    assert plan(month="2024-02").job_id != first.job_id


def test_empty_month_param_uses_the_data_interval() -> None:
    assert plan(month="").month_key == "202312"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"month": "2024-13"}, "2024-13"),
        ({"month": "24-1"}, "24-1"),
        ({"shard_size": -5}, "shard_size"),
        ({"shard_size": 0}, "shard_size"),
        ({"backend": "k8s"}, "backend"),
        ({"conf": 1.5}, "conf"),
        ({"dedicated_nodes": 0, "spot_nodes": 0}, "spot_nodes"),
        ({"imgsz": 650}, "imgsz"),
        ({"error_threshold": "lots"}, "error_threshold"),
        ({"weights": " "}, "weights"),
    ],
)
def test_bad_params_are_named(override, named) -> None:
    with pytest.raises(ValueError, match=named):
        plan(**override)


def test_config_env_override_and_bad_value() -> None:
    assert DagConfig.from_env({"MONTHLY_DETECTION_SHARD_SIZE": "25"}).shard_size == 25
    with pytest.raises(ValueError, match="MONTHLY_DETECTION_SPOT_NODES"):
        DagConfig.from_env({"MONTHLY_DETECTION_SPOT_NODES": "two"})


def test_weights_folder_must_be_an_openvino_export(tmp_path, openvino_weights_path) -> None:
    with pytest.raises(ValueError, match=r"param weights=.*not an Ultralytics OpenVINO export"):
        plan(weights=str(tmp_path))
    assert plan(weights=str(openvino_weights_path)).weights == str(openvino_weights_path)


def runtime_plan(**config):
    return plan_run(GOOD, dag_id="monthly_detection", run_id="manual__2024-02-01T00:00:00",
                    data_interval_start=None, config=DagConfig(**config))


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"scoring_runtime": ""}, "MONTHLY_DETECTION_SCORING_RUNTIME"),
        ({"scoring_runtime": "none"}, "MONTHLY_DETECTION_SCORING_RUNTIME"),
        ({"scoring_runtime": "container"}, "MONTHLY_DETECTION_CONTAINER_IMAGE"),
        ({"scoring_runtime": "venv", "container_image": "r.azurecr.io/s:1"}, "MONTHLY_DETECTION_SCORING_RUNTIME"),
        ({"scoring_runtime": "venv", "container_registry_conn_id": "acr"}, "MONTHLY_DETECTION_CONTAINER_REGISTRY_CONN_ID"),
    ],
)
def test_a_pool_without_a_scoring_runtime_is_refused_naming_the_settings(config, named) -> None:
    with pytest.raises(ValueError, match=named):
        runtime_plan(**config)
    # The Azure ML backend brings its own environment: the Batch runtime settings do not matter there.
    assert plan_run({**GOOD, "backend": "aml"}, dag_id="monthly_detection", run_id="r", data_interval_start=None,
                    config=DagConfig(**config)).backend == "aml"


def test_the_default_runtime_is_the_pinned_start_task_recipe_with_a_driver_check_on_gpu_sizes() -> None:
    from include.monthly.runtime import pinned_requirements, scoring_argv, start_task

    runtime_plan()  # the defaults pass validate: they work on a real account without an image
    gpu = start_task(DagConfig())
    assert gpu["elevated"] and "--gpu" in gpu["command_line"]
    assert all(pin in gpu["command_line"] for pin in pinned_requirements())
    assert "torch==2.14.1" in pinned_requirements()
    assert "--gpu" not in start_task(DagConfig(vm_size="Standard_D4s_v3"))["command_line"]
    assert start_task(DagConfig(scoring_runtime="container", container_image="r.azurecr.io/s:1",
                                vm_size="Standard_D4s_v3")) is None
    assert "nvidia-smi" in start_task(DagConfig(scoring_runtime="container", container_image="r.azurecr.io/s:1"))["command_line"]
    assert scoring_argv(DagConfig(), ["score.py"])[-1] == "--require-cuda"
    assert "--require-cuda" not in scoring_argv(DagConfig(vm_size="Standard_D4s_v3"), ["score.py"])
