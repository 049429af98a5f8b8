"""The one file a Batch node gets: the zipapp of the scoring package scores exactly like score.py.

Run from a folder outside the repository with no PYTHONPATH, so nothing of the
checkout can stand in for what the archive lacks; the local Batch test
(tests/local_batch/test_batch_runtime.py) runs the same file inside the scoring image.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from scoring_helpers import PROJECT_ROOT, read_csv, run_cli

from include.scoring import artifact


def test_the_artifact_is_the_package_built_the_same_way_every_time(tmp_path: Path) -> None:
    first = artifact.write(tmp_path)
    assert first.name == "score.pyz" and first.read_bytes() == artifact.build()
    names = zipfile.ZipFile(first).namelist()
    assert names[0] == "__main__.py"
    assert sorted(names[1:]) == sorted(p.relative_to(artifact.SCORING_DIR).as_posix() for p in artifact.sources())
    assert "yolo_scoring/contract.py" in names and "score.py" not in names


def test_the_artifact_scores_a_folder_like_score_py(assets_dir: Path, weights_path: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(assets_dir / "bus.jpg", images / "bus.jpg")
    (images / "broken.jpg").write_bytes(b"not an image")
    node = tmp_path / "node"
    node.mkdir()
    shipped = artifact.write(node)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    args = ["--images", str(images), "--weights", str(weights_path), "--device", "cpu"]

    from_artifact = subprocess.run([sys.executable, str(shipped), *args, "--output", str(node / "a.csv")],
                                   cwd=node, env=env, capture_output=True, text=True, timeout=300)
    from_script = run_cli(*args, "--output", str(tmp_path / "s.csv"), cwd=tmp_path)

    assert from_artifact.returncode == 0, from_artifact.stderr
    assert from_script.returncode == 0, from_script.stderr
    assert read_csv(node / "a.csv") == read_csv(tmp_path / "s.csv")
    assert "score.py: 2 images (1 ok, 0 empty, 1 error)" in from_artifact.stderr


def test_the_contract_needs_only_the_standard_library() -> None:
    """It ships to nodes and is imported by the merge: no third-party import may creep in."""
    path = PROJECT_ROOT / "include" / "scoring" / "yolo_scoring" / "contract.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
