# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup test test-full lint typecheck pytest docs demo bench clean erlang

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,docs]'
	touch $(STAMP)

# Erlang/OTP is needed only for the differential tests; install it when we can, else they skip.
erlang:
	@bash scripts/ensure-erlang || true

lint: setup
	$(BIN)/ruff check relhandler tests bench sample_app scripts
	$(BIN)/ruff format --check relhandler tests bench sample_app scripts

typecheck: setup
	$(BIN)/mypy

# two workers, whole files each: module fixtures (builds, nodes) are not built twice;
# PYTEST_WORKERS=0 runs serially
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

pytest: setup
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

test: setup erlang lint typecheck docs pytest

# the documentation site, strict: a broken link, a missing page or a stale generated page fails
docs: setup
	$(BIN)/python scripts/cli_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# everything, the slow fault-injection sweeps too (`make test` runs a sample of them)
test-full: setup erlang lint typecheck docs
	$(BIN)/python -m pytest -q -m '' $(XDIST) $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m sample_app.demo

bench: setup erlang
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) _build .pytest_cache .mypy_cache .ruff_cache
