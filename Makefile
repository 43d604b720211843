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

# Two test processes of one thread each: 1.6x faster than one of two threads on two cores (small models
# leave threads idle); the tests' results do not depend on the thread count.
test: $(STAMP)
	$(VENV)/bin/ruff check maskformer tests benchmarks
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) benchmarks/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check maskformer tests benchmarks
	$(VENV)/bin/ruff format --check maskformer tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
