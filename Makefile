# Two entry points a new user needs: `make demo` and `make test`.
# Each creates the virtual environment it needs, pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench audit clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/duanka quickstart

test: $(STAMP)
	$(BIN)/ruff check .
	scripts/install-browser
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Known vulnerabilities in the installed dependencies (needs the PyPI JSON API or OSV; see SECURITY.md).
audit: $(STAMP)
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off

bench: $(STAMP)
	$(BIN)/python bench/bench_generate.py

clean:
	rm -rf $(VENV) data/quickstart .pytest_cache .ruff_cache
