# Two commands matter on a fresh machine: `make demo` and `make test`.
# Every target creates .venv and installs estim into it on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HYPOTHESIS_PROFILE ?= ci

.PHONY: demo test test-fast bench lint typecheck diagram clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/estim demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --hypothesis-profile=$(HYPOTHESIS_PROFILE) tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --hypothesis-profile=dev tests

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check estim tests bench
	$(BIN)/ruff format --check estim tests bench
	$(BIN)/mypy

diagram: $(STAMP)
	$(BIN)/estim session diagram --out docs/state-machine.md
	$(BIN)/python -m estim.safety.hazards --tests tests --out docs/safety/hazards.md

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
