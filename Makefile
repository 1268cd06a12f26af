# hubbub — `make demo` runs the service, `make test` runs every check. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
NODE_DIR := tests/interop/node
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit bench setup node-deps system-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "hubbub needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

node-deps: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json
	cd $(NODE_DIR) && npm install --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) -m hubbub demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -q

test: setup node-deps lint
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .cache .pytest_cache .mypy_cache .ruff_cache
