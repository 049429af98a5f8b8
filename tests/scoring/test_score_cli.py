"""The command line as Azure Batch tasks and users run it: a real subprocess."""
from __future__ import annotations

import sys
import shutil
from pathlib import Path

import pytest
from scoring_helpers import read_csv, rows_by_image, run_cli

HOSTILE_NAMES = [
    "with space.jpg",
    "quo'te\"s.jpg",
    "semi;colon.jpg",
    "$(touch pwned-dollar).jpg",
    "`touch pwned-backtick`.jpg",
    "ünïcødé 图像.jpg",
    "-leading-dash.jpg",
    "new\nline.jpg",
]


def test_cli_scores_a_folder_of_hostile_file_names(
    assets_dir: Path, weights_path: Path, tmp_path: Path
) -> None:
    images = tmp_path / "in put"
    (images / "-sub dir").mkdir(parents=True)
    for name in HOSTILE_NAMES:
        shutil.copy(assets_dir / "zidane.jpg", images / name)
    shutil.copy(assets_dir / "bus.jpg", images / "-sub dir" / "bus.JPG")
    out = tmp_path / "out dir" / "predictions.csv"

    result = run_cli(
        "--images", str(images), "--output", str(out), "--weights", str(weights_path),
        "--device", "cpu", "--batch-size", "4", "--summary", cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    header, rows = read_csv(out)
    grouped = rows_by_image(rows)
    assert sorted(grouped) == sorted([*HOSTILE_NAMES, "-sub dir/bus.JPG"])
    for name in HOSTILE_NAMES:
        assert {"person", "tie"} <= {row["class_name"] for row in grouped[name]}, name
    assert list(tmp_path.rglob("pwned*")) == []  # no name ever reached a shell
    assert "Traceback" not in result.stderr
    summary = [line for line in result.stderr.splitlines() if line.startswith("score.py: ")]
    assert summary == [summary[0]] and "9 images (9 ok, 0 empty, 0 error)" in summary[0]
    assert "images/s" in summary[0]
    assert "person" in result.stdout and "bus" in result.stdout and str(out) in result.stdout


def test_cli_failure_is_one_line_without_traceback(weights_path: Path, tmp_path: Path) -> None:
    result = run_cli(
        "--images", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "o.csv"),
        "--weights", str(weights_path), cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"score.py: error: cannot read manifest {tmp_path / 'missing.txt'}: No such file or directory"
    ]
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("argv", [["--output", "x.csv"], ["--images", "d", "--output", "x.csv", "--batch-size", "two"]])
def test_cli_usage_errors_exit_2(argv: list[str], tmp_path: Path) -> None:
    result = run_cli(*argv, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: score.py" in result.stderr and "Traceback" not in result.stderr


def test_cpu_scoring_keeps_every_core_after_ultralytics_first_predict(score, weights_path, assets_dir, monkeypatch):
    """Ultralytics resets torch to cpu_count - 1 threads on its first predict; the script takes them back."""
    import torch

    monkeypatch.setattr(sys.modules["yolo_scoring.runtime"], "USER_THREADS", None)
    detector = score.load_model(weights_path, "cpu")
    list(score.score_paths(detector, [assets_dir / "bus.jpg"], score.Settings(), root=assets_dir))
    assert torch.get_num_threads() == score._cpu_count()


def test_require_cuda_refuses_a_cpu_fallback_before_reading_anything(tmp_path, openvino_weights_path):
    """GPU VM sizes pass --require-cuda: no CUDA, --device cpu or CPU-only weights fail at once, naming why."""
    import torch

    missing = tmp_path / "no-such-manifest.txt"  # never read: the check comes first
    out = tmp_path / "out.csv"
    refused = {
        "--device cpu": run_cli("--images", str(missing), "--output", str(out), "--require-cuda", "--device", "cpu",
                                cwd=tmp_path),
        "OpenVINO": run_cli("--images", str(missing), "--output", str(out), "--require-cuda",
                            "--weights", str(openvino_weights_path), cwd=tmp_path),
    }
    for reason, result in refused.items():
        assert result.returncode == 1 and "--require-cuda" in result.stderr, (reason, result.stderr)
    if not torch.cuda.is_available():
        env_flag = run_cli("--images", str(missing), "--output", str(out), cwd=tmp_path,
                           env={"SCORING_REQUIRE_CUDA": "1"})
        assert env_flag.returncode == 1
        assert "CUDA is not available on this node" in env_flag.stderr and "refusing to score on the CPU" in env_flag.stderr
    assert not out.exists()
