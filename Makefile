# The README's commands. `make demo` and `make test` set everything up first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit bench lint clean lock test-matrix docs docs-build

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/pdftasks demo

# Lint, types, import layers and the docs first (seconds), then every test.
test:
	bash scripts/setup.sh --test
	$(VENV)/bin/ruff check pdftasks tests benchmarks
	$(VENV)/bin/mypy pdftasks
	$(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory docs-build
	$(PY) -m pytest

# The documentation site in build/site, warnings (broken links and anchors too) as errors.
docs:
	bash scripts/setup.sh --test
	$(MAKE) --no-print-directory docs-build

docs-build:
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test-unit: setup
	$(PY) -m pytest tests/unit

bench: setup
	$(PY) benchmarks/run_all.py

lint: setup
	$(VENV)/bin/ruff check pdftasks tests benchmarks

clean:
	rm -rf .pdftasks output .pytest_cache build/site

# constraints.txt, the lock file setup.sh and CI install with: every package of .venv.
lock:
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable \
	  | grep -viE '^pdftasks( |==|@)'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

# The integration subset against the lowest and newest celery/kombu/weasyprint allowed by
# pyproject.toml, in venvs under .matrix/ (downloads packages; not part of `make test`).
test-matrix: setup
	bash scripts/test_matrix.sh

# Build the wheel, install it into a fresh venv and run it from an empty directory.
.PHONY: test-wheel
test-wheel:
	bash scripts/setup.sh --test
	$(PY) -m pytest tests/integration/test_wheel.py
