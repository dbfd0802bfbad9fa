# The README's commands: `make demo`, `make test` (`make test-quick`: without the slow tests). Each creates .venv
# and installs xfd into it on first use (pip's own cache, outside the repo, makes later installs fast).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Caches outside the repository survive clean clones (DeepSpeed compiles a small op on first CPU run).
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/xfd/torch_extensions
# DeepSpeed's accelerator: cuda where a GPU driver is present, else cpu (gloo).
export DS_ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)

.PHONY: demo ablate test test-quick bench install clean-venv

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m xfd.cli.demo $(DEMO_ARGS)

# The paper's Table 6 on the synthetic benchmark: 6 trainings, about 25 minutes on 2 CPU cores.
ablate: $(VENV)/.installed
	$(PY) -m xfd.cli.ablate $(ABLATE_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (DeepSpeed launches, full trainings, default-size datasets).
test-quick: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The quick benchmarks; bench/rerank.py (minutes: N = 5k..20k against the dense form, --large 200000) runs alone.
bench: $(VENV)/.installed
	$(PY) bench/shard.py
	$(PY) bench/synth.py
	$(PY) bench/distance.py
	$(PY) bench/metrics.py
	$(PY) bench/model.py
	$(PY) bench/pipeline.py --seconds 10
	$(PY) bench/train_step.py

clean-venv:
	rm -rf $(VENV)
