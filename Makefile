# The two set-up commands (README.md): `make demo` and `make test`. Both build .venv themselves.
# Sweeps write to runs/ (git-ignored) by default, so the committed reference runs in results/ stay
# as made; --overwrite lets the demo replace its own earlier run (only a folder lossjax made).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Tests come in two tiers. `make test`: ruff, then every test not marked slow (about 2 minutes
# on 2 cores). `make test-slow`: only the tests marked @pytest.mark.slow (kills and Ctrl-C of
# subprocesses, multi-device and float64 subprocesses, the benchmark, full-size sweeps). CI
# (.ci/run) runs both. `--dist loadscope` keeps each test module on one xdist worker, so a
# module's shared sweeps (module-scoped fixtures) are computed once, not once per worker.
# TESTS=... narrows either tier to some files, JOBS=... sets the number of workers.
JOBS ?= 2
TESTS ?=
# --durations: the slowest tests at the end of each run, where a slow one gets noticed.
PYTEST := $(BIN)/python -m pytest -q -n $(JOBS) --dist loadscope --durations=15

.PHONY: demo test test-slow bench lint notebook

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lossjax sweep configs/digits.yaml --overwrite

test: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST) -m "not slow" $(TESTS)

# pytest exits 5 when it selects no test (TESTS naming files without slow tests): not a failure.
test-slow: $(STAMP)
	$(PYTEST) -m slow $(TESTS) || [ $$? -eq 5 ]

bench: $(STAMP)
	$(BIN)/python experiments/benchmark.py

lint: $(STAMP)
	$(BIN)/ruff check .

# experiments/walkthrough.ipynb, executed, from experiments/walkthrough.py (jupytext, nbclient;
# run in a temporary folder, so its runs/ land there). Run it after editing walkthrough.py: a
# test fails while the two differ.
notebook: $(STAMP)
	$(BIN)/python experiments/build_notebook.py
