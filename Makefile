# hubbub — `make demo` runs the service, `make test` runs every check. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
NODE_DIR := tests/interop/node
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit bench setup node-deps system-deps redis-deps browser-deps clean

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
	$(VENV)/bin/ruff check src tests bench samples/serverless-chat samples/notifications samples/signalr-chat
	$(VENV)/bin/ruff format --check src tests bench samples/serverless-chat samples/notifications samples/signalr-chat
	$(VENV)/bin/mypy

unit: setup redis-deps
	$(VENV)/bin/pytest -q

test: setup node-deps redis-deps browser-deps lint
	$(VENV)/bin/pytest -q

# redis-server for tests/broker and tests/cluster (each test session starts its own on a free port);
# installed with apt-get when missing and we are root, else those tests skip.
redis-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing and we are not root: the Redis tests will be skipped"; \
	  fi; }

# Debian's chromium for tests/browser (driven by the playwright package; never `playwright install`);
# installed with apt-get when missing and we are root, else those tests skip.
browser-deps:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing and we are not root: the browser tests will be skipped"; \
	  fi; }

# The benchmark suite (bench/run.py, docs/performance.md): installs its peers into bench/.peers/ on first
# run; BENCH_ARGS="--full" adds the 100k / 10-minute idle hold.
bench: setup redis-deps
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .cache .pytest_cache .mypy_cache .ruff_cache
