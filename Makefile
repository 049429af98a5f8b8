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
# The UI test drives Debian's chromium through Playwright: never download a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM

.PHONY: venv node browser runtime test demo report up down backfill local-up local-down clean conformance

venv: $(VENV)/.installed
node: node_modules/.installed
# The scoring image of the local registry (.local/registry), built once per machine by the
# start-task recipe from include/scoring/requirements.txt and reused, as a registry caches it.
runtime: .local/registry/images/yolo-scoring-1/digest

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

.local/registry/images/yolo-scoring-1/digest: $(VENV)/.installed include/scoring/requirements.txt include/scoring/node_setup.sh include/scoring/score.py $(wildcard include/scoring/yolo_scoring/*.py)
	$(PY) -m local_stack.scoring_image

# Headless Chromium for tests/ui: Debian's package, installed with apt when missing (needs root).
browser:
	@test -x "$(CHROMIUM)" || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the UI test (apt-get)"; \
	    apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	  else \
	    echo "the UI test needs Chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium'" >&2; exit 1; \
	  fi; }

test: venv node runtime browser
	$(PY) -m pytest --durations=25

# The product on the local stack: seed a month into Azurite, run the monthly DAG
# through Airflow on the local Batch service, keep a copy under demo-output/.
MONTH ?= 2024-01
BACKEND ?= batch
demo: venv node runtime
	$(PY) -m local_stack.stack up
	scripts/local-env $(PY) -m local_stack.demo.seed --months $(MONTH) --images 40
	scripts/local-env $(PY) -m local_stack.demo.run_month --month $(MONTH) --backend $(BACKEND)

# A published month's report.html (with its CSV, Parquet and summary) under demo-output/YYYYMM/.
report: venv
	scripts/local-env $(PY) -m include.monthly.report --month $(MONTH) --output demo-output

# The local stack plus `airflow standalone` (UI, scheduler, triggerer) with the DAG loaded.
up: venv node runtime
	$(PY) -m local_stack.stack up
	scripts/local-env $(PY) -m local_stack.demo.airflow_stack up

down:
	-scripts/local-env $(PY) -m local_stack.demo.airflow_stack down
	$(PY) -m local_stack.stack down

# A real backfill through the scheduler and triggerer: make backfill FROM=2024-01 TO=2024-03
backfill: venv node runtime
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make backfill FROM=YYYY-MM TO=YYYY-MM"; exit 2; }
	$(PY) -m local_stack.stack up
	scripts/local-env $(PY) -m local_stack.demo.backfill --from $(FROM) --to $(TO) --seed-missing 40

clean:
	rm -rf .local demo-output bench-results.json bench-gpu-results.json bench-gpu-smoke.json

# Interim demo (issue 2 section 4): score the sample images the ultralytics wheel ships.
DEMO_SCORING_OUT := demo-output/scoring/predictions.csv
.PHONY: demo-scoring
demo-scoring: venv
	$(PY) include/scoring/score.py --images "$$($(PY) -c 'from ultralytics.utils import ASSETS; print(ASSETS)')" \
		--output $(DEMO_SCORING_OUT) --weights "$(YOLO_WEIGHTS)" --summary

# Local Azure stack (issue 3): Azurite + the local Batch service, state and services.env under .local/.
local-up: venv node runtime
	$(PY) -m local_stack.stack up

local-down:
	$(PY) -m local_stack.stack down

# The azure-batch SDK's own tests/test_batch.py, fetched from the package index at run time, against
# the local Batch service (issue 18): prints test, result, reason; fails if an in-scope test fails.
conformance: venv
	$(PY) -m conformance

# Benchmarks (issue 7): figures side by side in one run -> bench-results.json and a table.
.PHONY: bench
bench: venv node runtime
	$(PY) -m bench

# The GPU node (issue 17): on a CUDA machine only (stops with a message elsewhere) -> bench-gpu-results.json.
.PHONY: bench-gpu
bench-gpu: venv
	$(PY) -m bench.gpu
