VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install run test lint typecheck openapi soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

run: install
	$(VENV)/bin/strata migrate
	$(VENV)/bin/strata serve

test: install
	$(VENV)/bin/ruff check app tests migrations
	$(VENV)/bin/mypy app
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check app tests migrations
	$(VENV)/bin/ruff format --check app tests migrations

typecheck: install
	$(VENV)/bin/mypy app

openapi: install
	$(VENV)/bin/strata openapi > openapi/openapi.json

soak: install
	$(PY) -m tests.soak --kills 50 --minutes 5 --backend postgres

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
