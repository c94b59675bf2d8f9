PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lint format test test-fast demo app space clean reliability-table

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,app]"
	touch $(STAMP)

setup: $(STAMP)

# what CI checks before the tests: the formatter leaves the tree unchanged, the linter and the type checker pass
# (their settings: pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# formats the tree and applies the linter's safe fixes
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/python examples/run_demo.py --output_dir outputs/demo

# the Space app on http://127.0.0.1:$(PORT): MODEL=folder_or_hub_id make app (default: the model `make demo` trains)
MODEL ?= outputs/demo/acn
PORT ?= 7860
app: $(STAMP)
	$(BIN)/python space/app.py --model $(MODEL) --port $(PORT)

# the folder to upload as a Hugging Face Space
space: $(STAMP)
	$(BIN)/python space/bundle.py --output_dir outputs/space

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache

# docs/reliability.md's table of bad inputs, rebuilt from the tests marked bad_input (they run; a failing one says so)
reliability-table: $(STAMP)
	$(BIN)/python -m pytest -q -m bad_input --reliability-table docs/reliability.md tests
