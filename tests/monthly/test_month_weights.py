"""The weights reference: what the weights param names, its staged copy, and how each backend receives it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from include.monthly.layout import RunPaths, parse_month
from include.monthly.weights import FILE, FOLDER, NAME, WEIGHTS_FILE, WeightsRef


def test_a_file_a_folder_and_a_name_are_told_apart(tmp_path: Path, openvino_weights_path: Path) -> None:
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"not really weights")
    assert WeightsRef.of(str(weights)).kind == FILE
    assert WeightsRef.of(str(openvino_weights_path)).kind == FOLDER
    assert WeightsRef.of("yolov8n.pt").kind == NAME and WeightsRef.of("yolov8n.pt").local is None
    with pytest.raises(ValueError, match=r"param weights=.*not an Ultralytics OpenVINO export"):
        WeightsRef.of(str(tmp_path))


def test_staged_weights_reach_batch_and_azure_ml_in_the_shape_each_expects(
    containers, tmp_path: Path, openvino_weights_path: Path,
) -> None:
    paths = RunPaths(parse_month("2024-01"), "k" * 12)
    export = tmp_path / "yolov8n_int8_openvino_model"
    shutil.copytree(openvino_weights_path, export)
    folder = WeightsRef.of(str(export)).stage(containers.work, paths)
    names = sorted(blob.name for blob in containers.work.list_blobs(name_starts_with=folder.blob))
    assert folder.blob.endswith("/") and names == sorted(folder.blob + p.name for p in export.iterdir() if p.is_file())
    resource, argument = folder.batch_resource("work")
    assert resource == {"container": "work", "prefix": folder.blob, "file_path": "weights"}
    assert argument == "weights/" + folder.blob.rstrip("/")
    assert folder.aml_uri("workstore") == f"azureml://datastores/workstore/paths/{folder.blob}"
    assert folder.aml_input_type == "uri_folder"

    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights bytes")
    blob = WeightsRef.of(str(weights)).stage(containers.work, paths).blob
    file = WeightsRef.staged(blob, str(weights))  # read back from XCom's blob name: the same reference
    assert containers.work.download_blob(blob).readall() == b"weights bytes" and not WeightsRef.staged(blob).is_folder
    assert file.batch_resource("work") == ({"container": "work", "blob": blob, "file_path": WEIGHTS_FILE}, WEIGHTS_FILE)
    assert file.aml_input_type == "uri_file"

    name = WeightsRef.of("yolov8n.pt").stage(containers.work, paths)
    assert name.blob is None and name.batch_resource("work") == (None, "yolov8n.pt") and name.aml_uri("x") is None
