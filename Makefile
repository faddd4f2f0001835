# The two set-up commands (README.md): `make demo` and `make test`. Both build .venv themselves.
# Sweeps write to runs/ (git-ignored) by default, so the committed reference runs in results/ stay
# as made; --overwrite lets the demo replace its own earlier run (only a folder lossjax made).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lossjax sweep configs/digits.yaml --overwrite

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python experiments/benchmark.py

lint: $(STAMP)
	$(BIN)/ruff check .
