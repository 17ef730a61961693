# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean system-deps js-deps screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Servers the integration tests start themselves (Prometheus from Debian's package).
system-deps:
	bash scripts/ensure-system-deps.sh

# tuf-js, the second TUF client of the interop tests (tests/js, pinned by its package-lock.json).
JS_DIR   := tests/js
JS_STAMP := $(JS_DIR)/node_modules/.installed

$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  echo "make: Node.js (>= 20.17) and npm are required: the tests run tuf-js, a second TUF client, from $(JS_DIR)" >&2; \
	  exit 1; }
	npm ci --prefix $(JS_DIR) --no-audit --no-fund
	touch $@

js-deps: $(JS_STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: $(STAMP) system-deps $(JS_STAMP)
	$(BIN)/ruff check otactl tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15

# The report screenshots in docs/screenshots/: the demo's story rendered by headless Chromium, checked by
# the test that takes them (tests/integration/report/test_html_screenshots.py).
screenshots: $(STAMP) system-deps
	OTACTL_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q -p no:cacheprovider tests/integration/report/test_html_screenshots.py

lint: $(STAMP)
	$(BIN)/ruff format otactl tests benchmarks
	$(BIN)/ruff check --fix otactl tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) demo-workspace build *.egg-info $(JS_DIR)/node_modules
