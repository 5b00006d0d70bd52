# DermaSynth: `make demo` and `make test` are all a newcomer needs; both set everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo up down test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash deploy/local/demo.sh

up: setup  # the local stack, left running: Redis, worker, tritonserver, gateway, web app (prints URLs and keys)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash deploy/local/up.sh

down:  # stops exactly what `make up` started
	bash deploy/local/down.sh

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services

bench: setup
	for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
