# LiverXAI — set-up, demo and tests on a fresh machine with Python 3.11 and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints-dev.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## Segment & Explain the bundled sample CT with the bundled weights
	$(BIN)/python -m LiverXAILib demo --out demo-output

test: $(STAMP)  ## lint, then the whole test suite (MRML tests on slicer-core, real CT)
	$(BIN)/ruff check LiverXAI LiverXAITraining Testing
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check LiverXAI LiverXAITraining Testing
	$(BIN)/ruff format --check LiverXAI LiverXAITraining Testing

format: $(STAMP)
	$(BIN)/ruff format LiverXAI LiverXAITraining Testing

clean:
	rm -rf $(VENV) demo-output .pytest_cache
