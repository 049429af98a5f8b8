"""`make bench-gpu` on a machine without CUDA: a clear message and exit status 2, nothing measured or written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_bench_gpu_refuses_cleanly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: make bench-gpu would run the benchmark")
    results = PROJECT_ROOT / "bench-gpu-results.json"
    before = results.stat().st_mtime if results.exists() else None
    done = subprocess.run([sys.executable, "-m", "bench.gpu"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{PROJECT_ROOT / 'plugins'}"},
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs a CUDA GPU" in done.stderr and "Nothing was measured" in done.stderr
    assert (results.stat().st_mtime if results.exists() else None) == before
