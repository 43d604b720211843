# `make demo` and `make test` each create or update .venv by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/maskformer demo

test: $(STAMP)
	$(VENV)/bin/ruff check maskformer tests benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check maskformer tests benchmarks
	$(VENV)/bin/ruff format --check maskformer tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
