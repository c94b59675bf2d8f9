PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast demo clean reliability-table

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/python examples/run_demo.py --output_dir outputs/demo

clean:
	rm -rf $(VENV) outputs .pytest_cache

# README's table of bad inputs, rebuilt from the tests marked bad_input (they run; a failing one says so)
reliability-table: $(STAMP)
	$(BIN)/python -m pytest -q -m bad_input --reliability-table README.md tests/test_reliability.py tests/test_checkpoints.py
