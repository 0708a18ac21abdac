# The README's commands. `make demo` and `make test` set everything up first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit bench lint clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/pdftasks demo

test:
	bash scripts/setup.sh --test
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest tests/unit

bench: setup
	$(PY) benchmarks/run_all.py

lint: setup
	$(VENV)/bin/ruff check pdftasks tests benchmarks

clean:
	rm -rf .pdftasks output .pytest_cache
