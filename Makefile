# hwflow: two commands on a fresh machine — `make demo` and `make test`.
# Everything is installed by these rules: Debian packages by scripts/install-deps.sh, Python
# packages (pinned in pyproject.toml) into .venv.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
# The board's Python (PYNQ 3.0 images: Python 3.10, numpy 1.x, as Ubuntu 22.04 ships it): when this
# machine has a Python 3.10 (scripts/find-python310.sh), `make test` runs the host package under it.
PY310_VENV := .venv-py310
PY310_STAMP := $(PY310_VENV)/.installed
BOARD_NUMPY := numpy==1.21.6

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

# No Python 3.10 here: no stamp, and the host's 3.10 test reports a skip saying so.
$(PY310_STAMP): Makefile
	@py=$$(bash scripts/find-python310.sh); \
	if [ -z "$$py" ]; then echo "hwflow: no Python 3.10 on this machine: the host's Python 3.10 test is skipped"; \
	else echo "hwflow: the board's Python: $$py with $(BOARD_NUMPY) in $(PY310_VENV)"; \
	  { test -x $(PY310_VENV)/bin/python || $$py -m venv $(PY310_VENV); } && \
	  $(PY310_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '$(BOARD_NUMPY)' && touch $@; fi

BOARD_PY := HWFLOW_PY310="$${HWFLOW_PY310:-$$(test -f $(PY310_STAMP) && echo $(CURDIR)/$(PY310_VENV)/bin/python)}"

test: $(STAMP) $(PY310_STAMP)
	$(BOARD_PY) $(PY) -m pytest -q

test-fast: $(STAMP) $(PY310_STAMP)
	$(BOARD_PY) $(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_emulator.py
	$(PY) benchmarks/bench_campaign.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf out build .pytest_cache
