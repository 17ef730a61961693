# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean system-deps screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Servers the integration tests start themselves (Prometheus from Debian's package).
system-deps:
	bash scripts/ensure-system-deps.sh

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: $(STAMP) system-deps
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
	rm -rf $(VENV) demo-workspace build *.egg-info
