"""Stage -> real score.py per shard (YOLO on CPU, images read from Azurite) -> merge.

The scoring tasks on Batch run exactly this command line per shard; here it
runs as a local process so the merge reconciles real scorer output.
"""
from __future__ import annotations

import csv
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from local_stack.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from include.monthly.layout import parse_month, run_key
from include.monthly.merge import merge_shards
from include.monthly.staging import stage_month

SCORE_PY = Path(__file__).resolve().parents[2] / "include" / "scoring" / "score.py"
MONTH = parse_month("2024-01")


@pytest.mark.slow
def test_real_scorer_output_merges_with_every_image_accounted_for(
    containers, assets_dir, weights_path, tmp_path
) -> None:
    bus = (assets_dir / "bus.jpg").read_bytes()
    zidane = (assets_dir / "zidane.jpg").read_bytes()
    blobs = {
        "202401/cam 1/bus's \"photo\";$(touch pwned).jpg": bus,
        "202401/-zidane.jpg": zidane,
        "202401/ünï/bus copy.JPG": bus,
        "202401/corrupt.png": b"this is not a png",
        "202401/notes.txt": b"not an image",
    }
    for name, body in blobs.items():
        containers.input.upload_blob(name, body)
    stage = stage_month(containers.input, containers.work, MONTH, run_key("scored"), shard_size=2)
    assert stage.image_count == 4 and len(stage.shards) == 2
    sas = generate_container_sas(
        ACCOUNT_NAME, containers.input.container_name, account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True),
        expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1),
    )
    env = {**os.environ, "SCORING_SAS_TOKEN": sas, "OMP_NUM_THREADS": "1"}

    for shard in stage.shards:
        manifest = tmp_path / f"{shard.id}.txt"
        manifest.write_bytes(containers.work.download_blob(shard.manifest).readall())
        out = tmp_path / f"{shard.id}.csv"
        subprocess.run(
            [sys.executable, str(SCORE_PY), "--images", str(manifest), "--output", str(out),
             "--root", containers.input.url, "--weights", str(weights_path),
             "--device", "cpu", "--workers", "1", "--batch-size", "2"],
            env=env, cwd=tmp_path, check=True, timeout=600, capture_output=True,
        )
        containers.work.upload_blob(stage.paths.result(shard.id), out.read_bytes())

    report = merge_shards(containers.work, stage, tmp_path / "predictions.csv")

    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    images = {name for name in blobs if not name.endswith(".txt")}
    assert {row["image"] for row in rows} == images
    assert report.images == 4 and report.rows == len(rows)
    by_image: dict[str, set[str]] = {}
    for row in rows:
        by_image.setdefault(row["image"], set()).add(row["class_name"] if row["status"] == "ok" else row["status"])
    assert by_image["202401/corrupt.png"] == {"error"}
    for name in ("202401/cam 1/bus's \"photo\";$(touch pwned).jpg", "202401/ünï/bus copy.JPG"):
        assert {"bus", "person"} <= by_image[name]
    assert "person" in by_image["202401/-zidane.jpg"]
    assert report.status_counts == {"error": 1, "ok": 3}
    assert not (tmp_path / "pwned").exists()
