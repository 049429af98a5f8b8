#!/bin/bash
# The pinned start-task recipe: a venv holding the scoring requirements under the
# node's shared directory, which every task on the node then runs score.py with.
#
#   node_setup.sh [--gpu] [--check PYTHON_CODE] VENV_DIR REQUIREMENT...
#
# --gpu    fail at once (exit 3) unless nvidia-smi works: a GPU pool with no working
#          driver must not take tasks (they would score on the CPU at GPU prices).
# --check  code the venv's python must run after the install (default: import the
#          scoring modules), so a broken install fails the start task, not every task.
# pip reads its usual settings from the environment (start task environmentSettings):
# PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX, PIP_CONSTRAINT.
# SCORING_PYTHON picks the interpreter (default python3.11: numpy 2.4 and pandas 3
# need Python >= 3.11, Ubuntu 22.04's python3 is 3.10; an elevated start task
# installs python3.11 from Ubuntu's archive when missing). SCORING_BASE_SITE (local
# registry builds only) names a site dir whose packages count as installed, the
# way a cached image layer does.
# Idempotent: a start task runs again after every reboot or pre-emption.
set -euo pipefail
gpu=0
check="import cv2, numpy, PIL, torch, ultralytics"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpu) gpu=1; shift ;;
    --check) check="$2"; shift 2 ;;
    *) break ;;
  esac
done
if [[ $# -lt 2 ]]; then
  echo "usage: node_setup.sh [--gpu] [--check CODE] VENV_DIR REQUIREMENT..." >&2
  exit 2
fi
venv="$1"; shift
python="${SCORING_PYTHON:-python3.11}"
stamp="$venv/.node-setup-complete"
wanted="$*|${SCORING_BASE_SITE:-}"

if (( gpu )); then
  if ! nvidia-smi; then
    echo "node_setup: nvidia-smi failed: this GPU node has no working NVIDIA driver; its tasks would run on the CPU" >&2
    exit 3
  fi
fi
if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
  echo "node_setup: $venv is complete"
  exit 0
fi
as_root() { [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; }
apt_install() { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }
# OpenCV needs libGL and glib; Ubuntu's venv module is a package of its own (ensurepip).
if ! ldconfig -p 2>/dev/null | grep -q 'libGL\.so\.1'; then
  if as_root; then apt_install libgl1 libglib2.0-0; fi
fi
if ! command -v "$python" >/dev/null && as_root; then
  apt_install "$(basename "$python")" "$(basename "$python")-venv"
fi
if ! command -v "$python" >/dev/null; then
  echo "node_setup: $python not found; run the start task elevated (admin) so it can install it, or set SCORING_PYTHON" >&2
  exit 4
fi
rm -rf "$venv"
if ! "$python" -m venv "$venv"; then
  if as_root; then
    apt_install "$(basename "$python")-venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
  else
    echo "node_setup: '$python -m venv' failed; run the start task elevated (admin) so it can install $(basename "$python")-venv" >&2
    exit 4
  fi
fi
if [[ -n "${SCORING_BASE_SITE:-}" ]]; then
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$SCORING_BASE_SITE" > "$site/_node_setup_base.pth"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet "$@"
"$venv/bin/python" -c "$check"
echo "$wanted" > "$stamp"
echo "node_setup: $venv ready"
