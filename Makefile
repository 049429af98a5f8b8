# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared)

# Offline, reproducible YOLO: never download weights, fonts or packages at run time.
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := False
export YOLO_CONFIG_DIR := $(CURDIR)/.local/yolo-config
export YOLO_WEIGHTS ?= $(SHARED)/models/yolov8n.pt
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv node test demo up down backfill local-up local-down clean

venv: $(VENV)/.installed
node: node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: venv node
	$(PY) -m pytest

# The product on the local stack: seed a month into Azurite, run the monthly DAG
# through Airflow on the local Batch service, keep a copy under demo-output/.
MONTH ?= 2024-01
BACKEND ?= batch
demo: venv node
	$(PY) -m include.local_azure.stack up
	scripts/local-env $(PY) -m include.demo.seed --months $(MONTH) --images 40
	scripts/local-env $(PY) -m include.demo.run_month --month $(MONTH) --backend $(BACKEND)

# The local stack plus `airflow standalone` (UI, scheduler, triggerer) with the DAG loaded.
up: venv node
	$(PY) -m include.local_azure.stack up
	scripts/local-env $(PY) -m include.demo.airflow_stack up

down:
	-scripts/local-env $(PY) -m include.demo.airflow_stack down
	$(PY) -m include.local_azure.stack down

# A real backfill through the scheduler and triggerer: make backfill FROM=2024-01 TO=2024-03
backfill: venv node
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make backfill FROM=YYYY-MM TO=YYYY-MM"; exit 2; }
	$(PY) -m include.local_azure.stack up
	scripts/local-env $(PY) -m include.demo.backfill --from $(FROM) --to $(TO) --seed-missing 40

clean:
	rm -rf .local demo-output bench-results.json bench-gpu-results.json bench-gpu-smoke.json

# Interim demo (issue 2 section 4): score the sample images the ultralytics wheel ships.
DEMO_SCORING_OUT := demo-output/scoring/predictions.csv
.PHONY: demo-scoring
demo-scoring: venv
	$(PY) include/scoring/score.py --images "$$($(PY) -c 'from ultralytics.utils import ASSETS; print(ASSETS)')" \
		--output $(DEMO_SCORING_OUT) --weights "$(YOLO_WEIGHTS)" --summary

# Local Azure stack (issue 3): Azurite + the local Batch service, state and services.env under .local/.
local-up: venv node
	$(PY) -m include.local_azure.stack up

local-down:
	$(PY) -m include.local_azure.stack down

# Benchmarks (issue 7): figures side by side in one run -> bench-results.json and a table.
.PHONY: bench
bench: venv node
	$(PY) -m bench

# The GPU node (issue 17): on a CUDA machine only (stops with a message elsewhere) -> bench-gpu-results.json.
.PHONY: bench-gpu
bench-gpu: venv
	$(PY) -m bench.gpu
