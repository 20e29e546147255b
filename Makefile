# Two commands on a fresh machine:
#   make bench   set up .venv and write a benchmark report for the device that is there
#   make test    set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0 is the version CI pins; on a machine that has torch already in the
# venv, nothing is reinstalled
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup bench test

# a Python whose torch sees a GPU (a CUDA build matched to this machine's driver) lends
# it to the venv instead of a download of torch==2.13.0
SYSTEM_TORCH = $$($(PYTHON) -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
	&& echo --system-site-packages)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SYSTEM_TORCH) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

bench: setup
	$(BIN)/tritonlab bench $(ARGS)

# CI's suite hands the triton tier CPU tensors, which only Triton's interpreter takes, and
# tests/conftest.py turns it on only where torch sees no GPU: so `make test` hides any
# GPU and runs that suite anywhere, while ARGS naming gpu (`ARGS="-m gpu"`: the GPU
# checks) keep it visible
test: setup
	$(if $(findstring gpu,$(ARGS)),,CUDA_VISIBLE_DEVICES= )$(BIN)/python -m pytest $(ARGS)
