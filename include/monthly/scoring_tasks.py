"""Describe one Azure Batch scoring task per shard, from trusted values only.

No blob name ever reaches a command line: a task's images are listed in its
manifest (a resource file) and read by the scoring script from the input
container with a read-only SAS given in the environment. The descriptions
carry no credential; the add-tasks operator mints the SAS tokens.

The code a task runs is one resource file, the zipapp ``score.pyz``
(``include/scoring/artifact.py``), written next to the specs by
``write_task_specs``, so a node needs nothing of this repository.

The descriptions grow with the month (one per shard), so they are written to
the run's work folder (`tasks.jsonl`, one JSON object per line) and Airflow's
XCom carries only where they are and how many (`write_task_specs`).
"""
from __future__ import annotations

import json
import shlex
from typing import Any

from azure.storage.blob import ContainerClient, ContentSettings

from include.monthly.config import DagConfig
from include.monthly.layout import RunPaths
from include.monthly.plan import RunPlan
from include.monthly.runtime import scoring_argv
from include.monthly.staging import StageResult
from include.monthly.weights import WeightsRef
from include.scoring import artifact

MANIFEST_FILE = "manifest.txt"
SCRIPT_FILE = artifact.ARTIFACT_NAME  # the zipapp of the scoring package
OUTPUT_FILE = "predictions.csv"


def scoring_task_specs(
    stage: StageResult,
    plan: RunPlan,
    config: DagConfig,
    input_container_url: str,
    weights_blob: str | None,
) -> list[dict[str, Any]]:
    """Task dicts for ``AzureBatchAddTasksOperator``, one per shard.

    ``weights_blob`` is the run's copy of the weights in the work container (a
    file, or an OpenVINO export folder's prefix ending in ``/``), or None when
    the nodes load ``plan.weights`` by name (Ultralytics downloads it).
    """
    paths: RunPaths = stage.paths
    weights_file, weights_arg = WeightsRef.staged(weights_blob, plan.weights).batch_resource(config.work_container)
    script_args = [
        SCRIPT_FILE,
        "--images", MANIFEST_FILE,
        "--root", input_container_url,
        "--output", OUTPUT_FILE,
        "--weights", weights_arg,
        "--conf", str(plan.conf),
        "--imgsz", str(plan.imgsz),
        "--batch-size", str(plan.batch_size),
        "--device", config.device,
    ]
    command_line = shlex.join(scoring_argv(config, script_args))
    environment = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"} if weights_blob else {}
    if config.scoring_threads > 0:
        environment["OMP_NUM_THREADS"] = str(config.scoring_threads)
    specs = []
    for shard in stage.shards:
        resource_files = [
            {"container": config.work_container, "blob": shard.manifest, "file_path": MANIFEST_FILE},
            {"container": config.work_container, "blob": paths.code(SCRIPT_FILE), "file_path": SCRIPT_FILE},
        ]
        if weights_file:
            resource_files.append(weights_file)
        spec: dict[str, Any] = {
            "id": shard.id,
            "display_name": f"{plan.month} {shard.id} ({shard.image_count} images)",
            "command_line": command_line,
            "resource_files": resource_files,
            "output_files": [
                {"file_pattern": OUTPUT_FILE, "container": config.work_container,
                 "path": paths.result(shard.id), "upload_condition": "tasksuccess"},
                {"file_pattern": "../std*.txt", "container": config.work_container,
                 "path": paths.logs_prefix(shard.id).rstrip("/"), "upload_condition": "taskcompletion"},
            ],
            "environment": environment,
            "sas_environment": {"SCORING_SAS_TOKEN": {"container": config.input_container, "access": "read"}},
        }
        if config.scoring_runtime == "container":
            spec["container_image"] = config.container_image
        specs.append(spec)
    return specs


def upload_scoring_code(work_container: ContainerClient, paths: RunPaths) -> str:
    """Upload the scoring artifact the tasks run to the run's code folder; return its blob name."""
    blob = paths.code(SCRIPT_FILE)
    work_container.upload_blob(blob, artifact.build(), overwrite=True)
    return blob


def write_task_specs(work_container: ContainerClient, paths: RunPaths, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the specs as JSON lines to the run's `tasks.jsonl`, with the code they run; return where, for XCom."""
    upload_scoring_code(work_container, paths)
    body = "".join(json.dumps(spec, separators=(",", ":"), ensure_ascii=False) + "\n" for spec in specs)
    work_container.get_blob_client(paths.task_specs).upload_blob(
        body.encode("utf-8"), overwrite=True,
        content_settings=ContentSettings(content_type="application/x-ndjson; charset=utf-8"),
    )
    return {"container": work_container.container_name, "blob": paths.task_specs, "task_count": len(specs)}

