# hwflow: two commands on a fresh machine — `make demo` and `make test`.
# Everything is installed by these rules: Debian packages by scripts/install-deps.sh, Python
# packages (pinned in pyproject.toml) into .venv.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast bench deps lint clean

$(STAMP): pyproject.toml scripts/install-deps.sh
	bash scripts/install-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP)

demo: $(STAMP)
	$(PY) -m hwflow.demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_emulator.py
	$(PY) benchmarks/bench_campaign.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf out build .pytest_cache
