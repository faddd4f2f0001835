# The two set-up commands (README.md): `make demo` and `make test`. Both build .venv themselves.
# The demo writes to runs/ (git-ignored), so the committed reference runs in results/ stay as made.
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
	$(BIN)/lossjax sweep configs/digits.yaml --set output.dir=runs --overwrite

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python experiments/benchmark.py

lint: $(STAMP)
	$(BIN)/ruff check .
