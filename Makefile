# hub: `make run` starts a single-process server on :6001, `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JS     := tests/js
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run venv lint test test-unit system-deps node-deps screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

# The Python SDK only accepts numeric app ids, so the quick-start app is "1" unless PUSHER_APP_ID says otherwise.
# The console is on: with HUB_ADMIN_TOKEN, or with a random token printed once, in the console's URL.
run: $(STAMP)
	@token="$${HUB_ADMIN_TOKEN:-}"; \
	if [ -z "$$token" ]; then \
	  token=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))'); \
	  echo "hub console: http://127.0.0.1:$${HUB_ADMIN_PORT:-9602}/console/#token=$$token"; \
	  echo "  (admin token $$token, made up for this run; set HUB_ADMIN_TOKEN to choose your own)"; \
	else \
	  echo "hub console: http://127.0.0.1:$${HUB_ADMIN_PORT:-9602}/console/ (log in with HUB_ADMIN_TOKEN)"; \
	fi; \
	HUB_ADMIN_TOKEN="$$token" PUSHER_APP_ID=$${PUSHER_APP_ID:-1} exec $(BIN)/hub serve

# redis-server (and redis-cli, which creates the Redis Cluster) are real dependencies of the tests; install them from Debian when missing.
# PostgreSQL (Debian's, found under /usr/lib/postgresql/*/bin) runs the postgres app store's tests.
system-deps:
	@{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; }
	@command -v node >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Laravel Echo 2 needs Node.js 20.19 or newer; say so plainly instead of failing inside a test.
node-deps: system-deps
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a==20&&b<19)) { console.error("make test needs Node.js >= 20.19 for the pusher-js/Laravel Echo test clients, found "+process.version); process.exit(1) }'
	@$(MAKE) --no-print-directory $(JS)/node_modules/.installed

lint: $(STAMP)
	$(BIN)/ruff check hub tests benchmarks
	$(BIN)/ruff format --check hub tests benchmarks
	$(BIN)/mypy

test: $(STAMP) node-deps lint
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The console's screenshots in docs/console/ (README), taken by headless Chromium from a live 2-node cluster.
screenshots: $(STAMP) node-deps
	$(BIN)/python -m tests.browser.screenshots docs/console

clean:
	rm -rf $(VENV) $(JS)/node_modules .mypy_cache .ruff_cache .pytest_cache

-include deploy/deploy.mk
-include benchmarks/bench.mk
-include tests/stress/stress.mk
