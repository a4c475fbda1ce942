# One virtual environment per checkout; every target installs what it needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned here (not in setup.cfg) so that a fresh machine takes the CPU build from local disk.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed
LINT_PATHS := fmdata fmmodel cli tests benchmarks examples

.PHONY: venv lint test demo bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[model,test,s3,lint]"
	touch $(STAMP)

venv: $(STAMP)

# ruff (lint and import order), mypy (types), import-linter (the layers of docs/architecture.md)
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# the tests in JOBS processes (pytest-xdist; one per CPU, at most 4), a test module's tests in one
# process so that its module fixtures (stores, trained runs) are built once; JOBS=1 runs them in this process
JOBS ?= $(shell $(PY) -c "import os; print(min(4, len(os.sched_getaffinity(0))))")
XDIST = $(if $(filter 1,$(JOBS)),-p no:xdist,-n $(JOBS) --dist loadscope)
test: lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) $(PYTEST_ARGS)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash benchmarks/demo.sh demo-out

# the benchmarks whose figures docs/performance.md records; QUICK=1 runs their small proof sizes
bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" QUICK=$(QUICK) bash benchmarks/run_all.sh bench-out

clean:
	rm -rf $(VENV) demo-out bench-out
