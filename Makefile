# The README's commands: `make demo`, `make test` (`make test-quick`: without the slow tests). Each creates .venv
# and installs xfd into it on first use (pip's own cache, outside the repo, makes later installs fast).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# DeepSpeed compiles a small C++ op on the first CPU launch: xfd keeps it in a cache of this installation's own
# outside the repository (~/.cache/xfd/torch_extensions/<torch, DeepSpeed, Python, venv>; xfd/engine/ops.py),
# unless TORCH_EXTENSIONS_DIR is set.
# DeepSpeed's accelerator: cuda where a GPU driver is present, else cpu (gloo).
export DS_ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)

.PHONY: demo ablate test test-quick bench install clean-venv gpu-wheels gpu-check

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m xfd.cli.demo $(DEMO_ARGS)

# The paper's Table 6 on the synthetic benchmark: 6 trainings of about 3.5 minutes each on 2 CPU cores (23 minutes in all).
ablate: $(VENV)/.installed
	$(PY) -m xfd.cli.ablate $(ABLATE_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (DeepSpeed launches, full trainings, default-size datasets).
test-quick: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The quick benchmarks; bench/rerank.py (about 13 minutes on 2 quiet cores: N = 20k against the GEMM floor and the dense form, N = 200k on 1 and 2 ranks) runs alone.
bench: $(VENV)/.installed
	$(PY) bench/shard.py
	$(PY) bench/synth.py
	$(PY) bench/distance.py
	$(PY) bench/metrics.py
	$(PY) bench/bootstrap.py
	$(PY) bench/model.py
	$(PY) bench/pipeline.py --seconds 10
	$(PY) bench/train_step.py

# A bare GPU machine (torch, CuPy, nvcc; no index): `make gpu-wheels` here first, copy the tree with .gpu_wheels/,
# then `make gpu-check` there writes one JSON (versions, kernel compiles, gpu tests, ViT-L/14 step, 10k x 1M
# re-ranking) in at most 8 minutes. Without a GPU the GPU parts are recorded as skipped. See the README.
GPU_CHECK_OUT ?= runs/gpu_check.json
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)

gpu-wheels: $(VENV)/.installed
	$(PY) bench/gpu_check.py --download-wheels .gpu_wheels

gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py --out $(GPU_CHECK_OUT)

clean-venv:
	rm -rf $(VENV)
