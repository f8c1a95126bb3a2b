# Two entry points: `make pipeline` runs the DVC pipeline, `make test` runs the tests.
# Both create .venv and install the pinned requirements first (once, or when they change).
VENV   := .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
STAMP  := $(VENV)/.requirements-installed

# Stage commands call `python` and `dvc`: make them the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: pipeline test venv plots-offline bench exps
venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

pipeline: $(STAMP)
	dvc repro

test: $(STAMP)
	python -m pytest

# `dvc plots` HTML loads vega from a CDN; this builds a template that works offline
# (needs npm once): dvc plots diff A B --html-template .dvc/plots/offline.html
plots-offline: $(STAMP)
	python -m descent.offline_html

# Speed and memory of every backend, scikit-learn and the pipeline, measured in one run:
# writes bench/results.json and bench/results.png (a few minutes; needs `make pipeline`).
bench: $(STAMP)
	python -m bench.benchmark

# Every experiment in one table that fits 120 columns: the params that differ and the
# headline losses (dvc exp show adds a hash column per dependency: 1,400 characters wide).
# No venv step: there are experiments only after `make pipeline` has made it.
exps:
	@python -m descent.exps
