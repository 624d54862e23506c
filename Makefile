VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install run test e2e bench soak lint typecheck openapi clean spark-cluster spark-test

## install: .venv with Strata and its dev tools (.venv/bin/strata)
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

## the Spark engine's tests need PySpark, with the Spark Connect client (Java is on the machine)
$(VENV)/.spark: $(VENV)/.installed
	$(PIP) install -q -e '.[dev,spark,connect]'
	touch $@

## run: migrate and serve the embedded default on 127.0.0.1:8000
run: install
	$(VENV)/bin/strata migrate
	$(VENV)/bin/strata serve

## test: lint, types, and the whole suite on SQLite and PostgreSQL
test: install $(VENV)/.spark
	$(VENV)/bin/ruff check app tests migrations
	$(VENV)/bin/mypy app
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/pytest -m "not e2e and not spark_cluster"

## spark-cluster: a standalone Spark master, two workers and a Spark Connect server on 127.0.0.1
spark-cluster: $(VENV)/.spark
	$(PY) -m tests.spark_cluster

## spark-test: the Spark engine on that cluster and through Spark Connect (minutes)
spark-test: $(VENV)/.spark
	$(VENV)/bin/pytest -m spark_cluster

## e2e: the dashboard in headless Chromium (installs Debian's chromium if missing)
e2e: install
	bash .ci/e2e-setup.sh
	$(VENV)/bin/pytest -m e2e

## bench: benchmarks against the hand-written baselines; writes docs/benchmarks.md
bench: install
	$(PY) -m bench

## soak: randomized SIGKILLs of a running service for minutes; writes docs/soak.md
soak: install
	$(PY) -m tests.soak --kills 50 --minutes 5 --rows 20000 --backend postgres

lint: install
	$(VENV)/bin/ruff check app tests migrations

typecheck: install
	$(VENV)/bin/mypy app

## openapi: regenerate openapi/openapi.json from the app
openapi: install
	$(VENV)/bin/strata openapi > openapi/openapi.json

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache test-artifacts
