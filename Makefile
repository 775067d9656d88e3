# Two entry points, both self-contained on a fresh clone:
#   make demo   set up .venv, then fine-tune and evaluate a MoleBLEND model on a shipped dataset
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/pyg-molblend finetune --out runs/demo

# One worker per core, one torch thread each: the tests are small and spend their time in
# per-call overhead, which a second thread does not shorten (2 cores: 104 s against 158 s
# for one process of two threads).
test: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto

lint: setup
	$(BIN)/ruff check pyg_molblend tests benchmarks

bench: setup
	$(BIN)/python benchmarks/shortest_path.py
