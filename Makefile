# Two entry points (see README): `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
ARGS ?=
# A fixed run directory, so re-running `make train` after a crash resumes from its last checkpoint.
WORKDIR ?= runs/quickstart
# configs/pusht.py variant: the CPU-sized policy on a CPU, the paper's on a GPU/TPU (evaluated after the venv exists).
VARIANT ?= $(shell $(PY) -c "import jax; print('small' if jax.default_backend() == 'cpu' else 'lowdim')")

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[env,tfds,torch,hdf5,test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# XLA:GPU's compiler on a machine without a GPU (experiments/bench/deviceless_gpu.py counts a program's GPU kernels):
# jax's CUDA plugin at the version .venv runs, in its own venv (~4.4 GB).
GPU_AOT_VENV := .venv-gpu-aot
gpu-aot: $(STAMP)
	test -d $(GPU_AOT_VENV) || $(PYTHON) -m venv $(GPU_AOT_VENV)
	$(GPU_AOT_VENV)/bin/pip install --quiet -e . "jax[cuda13]==$$($(PY) -c 'import jax; print(jax.__version__)')"

# libtpu, for compiling for a Cloud TPU slice on a machine without one (experiments/bench/tpu_compile.py):
# jax[tpu] at the version .venv runs, in its own venv (~1.6 GB).
TPU_AOT_VENV := .venv-tpu-aot
tpu-aot: $(STAMP)
	test -d $(TPU_AOT_VENV) || $(PYTHON) -m venv $(TPU_AOT_VENV)
	$(TPU_AOT_VENV)/bin/pip install --quiet -e . "jax[tpu]==$$($(PY) -c 'import jax; print(jax.__version__)')"

.PHONY: setup train test gpu-aot tpu-aot
setup: $(STAMP)

train: $(STAMP)
	$(PY) -m dpjax.train --config=configs/pusht.py:$(VARIANT) --workdir=$(WORKDIR) $(ARGS)
	$(PY) -m dpjax.rollout --checkpoint=$(WORKDIR) --num_videos=2

# --durations=10: the ten slowest tests end every run's output, so CI's log shows where the suite's time goes.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist load --durations=10 tests $(ARGS)
