# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates or reuses .venv and installs the pinned stack of pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo demo-check browser test test-all bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) cli.py demo --out demo_out --report reports/demo

# Debian's chromium for the page test (tests skip it when chromium is absent; nothing downloads a browser)
browser:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# the demo page in headless Chromium: every image and video loads, no console errors; screenshot in docs/
demo-check: $(STAMP) browser
	$(PY) -m demo.browser reports/demo/index.html docs/demo_report.png

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do [ $$f = benchmarks/bench_quick.py ] && continue; echo "== $$f"; $(PY) $$f || exit 1; done

# the headline ratios (renderer, sharded synth, export vs eager), each with its same-run baseline
bench-quick: $(STAMP)
	$(PY) benchmarks/bench_quick.py

clean:
	rm -rf demo_out reports artifacts .pytest_cache demo_out.log artifacts.log
