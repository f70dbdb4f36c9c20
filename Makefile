# Two entry points (see README): `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
ARGS ?=
# A fixed run directory, so re-running `make train` after a crash resumes from its last checkpoint.
WORKDIR ?= runs/pusht_lowdim_cnn

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[env,tfds,torch,test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

.PHONY: setup train test
setup: $(STAMP)

train: $(STAMP)
	$(PY) -m dpjax.train --config=configs/pusht.py --workdir=$(WORKDIR) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist load tests $(ARGS)
