# DermaSynth: `make demo` and `make test` are all a newcomer needs; both set everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo up down test lint bench clean k8s-secrets

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

# Kubernetes secrets for one overlay (cpu, gpu, production): k8s/overlays/$(OVERLAY)/secrets.env, random
# values for every empty key of k8s/secrets.env.example; an existing file is never overwritten.
OVERLAY ?= production
k8s-secrets:
	@test ! -e k8s/overlays/$(OVERLAY)/secrets.env || { echo "k8s/overlays/$(OVERLAY)/secrets.env exists; not overwritten"; exit 1; }
	@umask 077; while IFS= read -r line; do \
	  case "$$line" in ''|'#'*) continue;; *=) echo "$${line}$$(openssl rand -hex 24)";; *) echo "$$line";; esac; \
	done < k8s/secrets.env.example > k8s/overlays/$(OVERLAY)/secrets.env
	@echo "wrote k8s/overlays/$(OVERLAY)/secrets.env"
