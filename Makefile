# `make help` lists the targets. Every target creates .venv and installs the project first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXP    ?= gru
# the experiment's file: configs/sequence/<EXP>.yaml or configs/image/<EXP>.yaml (or a path under configs/)
CONFIG ?= $(or $(firstword $(wildcard configs/$(EXP).yaml configs/sequence/$(EXP).yaml configs/image/$(EXP).yaml)),configs/sequence/$(EXP).yaml)
RUNS   := logs/$(notdir $(EXP))
ARGS   ?=
SWEEP  ?= scripts/slurm/example_sweep.txt
SPACE  ?= configs/search/$(notdir $(EXP)).yaml
TRIALS ?= 20
JOBS   ?= 2
WORKERS ?= 4
SEARCH = -c $(CONFIG) --space $(SPACE) --trials $(TRIALS)

.DEFAULT_GOAL := help
.PHONY: help install train resume tune finetune test test-slow test-all lint format tensorboard clean slurm-train sweep search search-report slurm-search collect slurm-local bench profile export gpu-wheels gpu-check

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,export,loggers]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install the project with its dev tools

train: install ## Fit then test the experiment EXP (gru by default: configs/sequence/gru.yaml; extra flags in ARGS="...")
	$(PY) -m project fit -c $(CONFIG) --test_after_fit true $(ARGS)

resume: install ## Continue the newest run of EXP after Ctrl-C, SIGTERM or a kill (or RUN=logs/<exp>/version_N)
	@run=$${RUN:-$$($(PY) -m project.runs newest $(RUNS))}; \
	test -n "$$run" || { echo "error: no run in $(RUNS)/ to resume" >&2; exit 2; }; \
	echo "resuming $$run"; \
	$(PY) -m project fit -c $$run/config.yaml --ckpt_path last $(ARGS)

tune: install ## Batch size and learning rate for the experiment EXP, as an overlay (logs/<exp>/tune/)
	$(PY) -m project tune -c $(CONFIG) $(ARGS)

finetune: install ## Offline transfer demo: a ResNet-18 pretrained on MNIST-1D plots 0-4, frozen, on 5-9
	$(PY) scripts/finetune_demo.py $(ARGS)

test: install ## The everyday tests (1.5 minutes on 2 cores): all but those marked slow, one worker per core
	$(PY) -m pytest -q -n auto -m "not slow"

test-slow: install ## The slow tier alone (real Slurm, DDP, kills, whole trainings): CI runs it after `test`
	$(PY) -m pytest -q -m slow

test-all: install ## Both tiers in one run
	$(PY) -m pytest -q

lint: install ## Check style and format with ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install ## Reformat the code with ruff
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

tensorboard: install ## Serve logs/ on http://localhost:6006
	$(VENV)/bin/tensorboard --logdir logs --port 6006

slurm-train: install ## Submit the experiment EXP to Slurm (scripts/slurm/train.sbatch; flags in ARGS)
	mkdir -p logs && PYTHON=$(abspath $(PY)) sbatch scripts/slurm/train.sbatch $(CONFIG) $(ARGS)

sweep: install ## Submit a job array: one run of the experiment EXP per line of SWEEP=file
	mkdir -p logs && PYTHON=$(abspath $(PY)) sbatch --array=1-$$(grep -cv '^\s*\(#\|$$\)' $(SWEEP)) \
		scripts/slurm/sweep.sbatch $(CONFIG) $(SWEEP) $(ARGS)

search: install ## Optuna search: the experiment EXP over SPACE=configs/search/<exp>.yaml (TRIALS=20, JOBS=2 workers)
	$(PY) -m project.search $(SEARCH) --jobs $(JOBS) $(ARGS)

search-report: install ## The search's table, best.yaml and plots (logs/<exp>/search/<study>/)
	$(PY) -m project.search $(SEARCH) --report $(ARGS)

slurm-search: install ## The same search on Slurm: an array of WORKERS tasks pulling from one study
	$(PY) -m project.search $(SEARCH) --prepare $(ARGS)
	mkdir -p logs && PYTHON=$(abspath $(PY)) sbatch --array=1-$(WORKERS) scripts/slurm/search.sbatch \
		$(SEARCH) $(ARGS)

collect: install ## Print one table of the metrics.json of every run under logs/<exp>
	$(PY) scripts/collect_metrics.py $(RUNS)

slurm-local: ## Start a one-node Slurm cluster here (root; stop: scripts/slurm/local_cluster.sh stop)
	scripts/slurm/local_cluster.sh start

clean: ## Delete logs, caches and .venv
	find logs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

bench: install ## Benchmark the template against a hand-written loop (logs/bench/results.md)
	$(PY) scripts/bench/benchmark.py

gpu-wheels: install ## Download the wheels gpu-check installs on a GPU machine without jsonargparse or mnist1d (.gpu_wheels/)
	$(PY) -m pip download --quiet --no-deps --dest .gpu_wheels \
		$$($(PY) -m pip freeze | grep -iE '^(jsonargparse|docstring.parser|typeshed.client|mnist1d)==')

gpu-check: ## On a GPU: every GPU overlay, ResNet-50 images/s, DDP, an exact resume (logs/gpu_check/; DRY_RUN=1 on a CPU)
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) scripts/gpu_check.sh

profile: install ## Where a step's time goes on each benchmark path: flame graphs and a table (logs/profiles/)
	$(PY) scripts/bench/profile_steps.py $(ARGS)

export: install ## Export a checkpoint to torch.export (.pt2) and ONNX: make export CKPT=logs/.../last.ckpt
	$(PY) -m project.export $(CKPT)
