# `make help` lists the targets. Every target creates .venv and installs the project first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXP    ?= gru
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-fast lint format tensorboard clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install the project with its dev tools

train: install ## Fit then test configs/$(EXP).yaml (EXP=gru by default; extra flags in ARGS="...")
	$(PY) -m project fit -c configs/$(EXP).yaml --test_after_fit true $(ARGS)

test: install ## Run the whole test suite
	$(PY) -m pytest -q

test-fast: install ## Run the tests not marked slow
	$(PY) -m pytest -q -m "not slow"

lint: install ## Check style and format with ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install ## Reformat the code with ruff
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

tensorboard: install ## Serve logs/ on http://localhost:6006
	$(VENV)/bin/tensorboard --logdir logs --port 6006

clean: ## Delete logs, caches and .venv
	find logs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
