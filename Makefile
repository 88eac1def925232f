# `make repro` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

repro: setup
	dvc repro

lint: setup
	ruff check .

test: setup lint
	pytest -q

bench: setup
	python benchmarks/pipeline_overhead.py

clean:
	rm -rf $(VENV)
