# The two commands of the README: `make book` and `make test`. Both create .venv and install
# what they need first, so they work on a fresh clone with only Python 3.10+ and make.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Set ORACLE=0 to skip installing PyTorch (the test oracle); CI always installs it.
ORACLE ?= 1
comma := ,
EXTRAS := test,book$(if $(filter 1,$(ORACLE)),$(comma)oracle)
PIP_QUIET := --disable-pip-version-check --progress-bar off -q
# pip warns about every unused local index it is configured with; keep the log readable.
PIP_FILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }
JOBS ?= 2
# Test workers run side by side on the cores: one BLAS thread each, or they oversubscribe.
SINGLE_THREAD := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: help setup book test lint unit notebooks nbval book-check site-test grade bench gpu-test clean

help:
	@echo "make book   - set up and build the website into _build/html"
	@echo "make test   - set up and run every test (lint, unit+oracle, grader, nbval, book -W, site)"
	@echo "make grade  - grade the exercises in exercises/ (grade-report.json, grade-report.md)"
	@echo "make bench  - benchmark the operations against GEMM, PyTorch and naive loops"
	@echo "make gpu-test - run the test-suite and the notebooks on the CuPy backend (needs a CUDA GPU)"

$(VENV)/.installed-$(ORACLE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) --upgrade pip 2>&1 | $(PIP_FILTER)
	$(BIN)/python -m pip install $(PIP_QUIET) -e ".[$(EXTRAS)]" 2>&1 | $(PIP_FILTER)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(VENV)/.installed-$(ORACLE)

# ---- the website -------------------------------------------------------------------------
book: setup
	$(BIN)/python tools/build_appendices.py
	$(SINGLE_THREAD) $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The website is in _build/html/index.html"

# ---- the tests ---------------------------------------------------------------------------
test: setup lint unit nbval book-check site-test
	@echo "make test: all suites passed"

lint:
	$(BIN)/ruff check cnn_course tests tools book/_ext
	$(BIN)/ruff format --check cnn_course tests tools book/_ext

unit:
	$(SINGLE_THREAD) $(BIN)/python -m pytest -n $(JOBS) tests

notebooks:
	$(BIN)/python tools/notebooks.py _build/nbval

nbval: notebooks
	$(SINGLE_THREAD) $(BIN)/python -m pytest -n $(JOBS) --nbval-lax --dist loadfile --rootdir=. \
		_build/nbval/notebooks exercises

book-check: book

site-test: book
	$(BIN)/python tools/site_test.py _build/html

# ---- students and performance ------------------------------------------------------------
grade: setup
	$(BIN)/cnn-course grade exercises --json grade-report.json --markdown grade-report.md

# Writes the table the book shows (chapters 3 and 9): one thread, CPU time, so a busy
# machine does not distort the ratios. Commit the JSON after a run.
bench: setup
	$(BIN)/cnn-course bench --threads 1 --timer cpu --repeat 10 --json book/data/bench_cpu.json

# On a CUDA machine: the test-suite on CuPy, then every chapter and exercise notebook with the
# CuPy backend (what a student gets after setting CNN_COURSE_BACKEND=cupy in Colab).
gpu-test: setup notebooks
	$(BIN)/python -m pip install $(PIP_QUIET) -e ".[gpu]" 2>&1 | $(PIP_FILTER)
	$(BIN)/python -m pytest --backend cupy tests
	CNN_COURSE_BACKEND=cupy $(BIN)/python -m pytest -n $(JOBS) --nbval-lax --dist loadfile \
		--rootdir=. _build/nbval/notebooks exercises

clean:
	rm -rf _build .pytest_cache .hypothesis grade-report.json grade-report.md
