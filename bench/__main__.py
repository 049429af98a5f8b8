"""`python -m bench` (or `make bench`): every benchmark of issue 7, side by side, in one run.

Starts a private local stack (Azurite + the local Batch service) and, for the
worker-slot figure, a private `airflow standalone`; writes bench-results.json
at the repo root and prints a table. A missed target is reported, not fatal;
the exit status is 1 only when a benchmark could not run.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from bench.config import PROJECT_ROOT

# Before anything imports Airflow or Ultralytics: import paths, offline YOLO, a private Airflow home.
for _path in (PROJECT_ROOT, PROJECT_ROOT / "plugins"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
os.environ["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")])
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", str(PROJECT_ROOT / ".local" / "yolo-config"))
Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
WORK_DIR = Path(tempfile.mkdtemp(prefix="bench-"))
os.environ["AIRFLOW_HOME"] = str(WORK_DIR / "airflow")

from bench.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(WORK_DIR))
