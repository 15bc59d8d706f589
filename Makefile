# LiverXAI — set-up, demo and tests on a fresh machine with Python 3.11 and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint format clean
SOURCES := LiverXAI LiverXAITraining Testing bench

# pip prints one line per package (no progress bars), so a first run is never silent.
PIP := $(BIN)/pip install --progress-bar off --disable-pip-version-check

$(STAMP): pyproject.toml constraints-dev.txt
	@echo "== LiverXAI: creating $(VENV) and installing torch, MONAI, slicer-core and the test"
	@echo "== tools (about 2 minutes and 3 GB the first time; later runs reuse it)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -c constraints-dev.txt -e ".[test,bench]"
	$(PIP) --no-deps -c constraints-dev.txt grad-cam
	touch $(STAMP)
	@echo "== LiverXAI: $(VENV) is ready"

demo: $(STAMP)  ## Segment & Explain the bundled sample CT with the bundled weights
	$(BIN)/python -m LiverXAILib demo --out demo-output

test: $(STAMP)  ## lint, then the whole test suite (MRML tests on slicer-core, real CT)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/python -m pytest

bench: $(STAMP)  ## speed and memory against pure model compute and a naive baseline
	$(BIN)/python bench/run_bench.py --out bench-results.json

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

format: $(STAMP)
	$(BIN)/ruff format $(SOURCES)

clean:
	rm -rf $(VENV) demo-output .pytest_cache bench-results.json
