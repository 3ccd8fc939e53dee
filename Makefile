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

.PHONY: help setup book test lint unit notebooks nbval book-check site-test grade bench gpu-test clean \
	zh-update i18n-check

help:
	@echo "make book   - set up and build the website into _build/html"
	@echo "make test   - set up and run every test (lint, unit+oracle, grader, nbval, book -W, site)"
	@echo "make zh-update - refresh the Chinese catalogues (locales/zh_CN) from the English source"
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
# The Practice page's scheduler (npm's ts-fsrs, MIT) is committed; fetched only when missing.
FSRS_JS := book/_static/vendor/ts-fsrs.umd.js
$(FSRS_JS):
	$(BIN)/python tools/vendor_fsrs.py

# After the two websites, the PDF of each edition (tools/book_pdf.py: a single-page build that
# reuses the parsed pages, printed by headless Chromium; one EDITION OUT pair per edition, side
# by side); the notebooks archive is written by the HTML build itself (book/_ext/course_site.py).
book: setup $(FSRS_JS)
	$(BIN)/python tools/build_appendices.py
	$(BIN)/python tools/build_practice.py
	$(SINGLE_THREAD) $(BIN)/jupyter-book build . -W -n --keep-going
	$(SINGLE_THREAD) $(BIN)/python tools/i18n.py build
	$(SINGLE_THREAD) $(BIN)/python tools/book_pdf.py en _build/html/cnn-course.pdf \
		zh _build/html/zh/cnn-course.pdf
	@echo "The website is in _build/html/index.html (Chinese edition: _build/html/zh/index.html)"

# The Chinese edition translates the text through gettext catalogues (locales/TRANSLATE.md).
# A message without a translation falls back to English in a build, but `make test` fails on
# any untranslated, fuzzy or obsolete message or broken markup (I18N_STRICT=0 only reports).
I18N_STRICT ?= 1
zh-update: setup
	$(SINGLE_THREAD) $(BIN)/python tools/i18n.py update

i18n-check: setup
	$(SINGLE_THREAD) $(BIN)/python tools/i18n.py check $(if $(filter 1,$(I18N_STRICT)),,--report)

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

book-check: book i18n-check

# The site's cards (written after the build, with the values the chapters glued) must be
# current and complete: every labelled question with its answer and keywords.
site-test: book
	$(BIN)/python tools/build_practice.py --strict --check --out _build/html/book/practice.json
	$(BIN)/python tools/site_test.py _build/html

# ---- students and performance ------------------------------------------------------------
# Installs only what grading needs (the `grade` extra): not PyTorch, not jupyter-book.
$(VENV)/.grade-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) -e ".[grade]" 2>&1 | $(PIP_FILTER)
	touch $@

# Exit status 3: graded without the sandbox (no bubblewrap), the report says "feedback only".
grade: $(VENV)/.grade-installed
	$(BIN)/cnn-course grade exercises --json grade-report.json --markdown grade-report.md || test $$? -eq 3

# Writes the tables the book shows (chapters 3 and 9): one thread and every core, wall clock,
# in the same process as PyTorch CPU, as users run. Run it on a quiet machine; commit the JSON.
bench: setup
	$(BIN)/cnn-course bench --threads 1,all --repeat 20 --json book/data/bench_cpu.json

# On a CUDA machine: the test-suite on CuPy, then every chapter and exercise notebook with the
# CuPy backend (what a student gets after setting CNN_COURSE_BACKEND=cupy in Colab).
gpu-test: setup notebooks
	$(BIN)/python -m pip install $(PIP_QUIET) -e ".[gpu]" 2>&1 | $(PIP_FILTER)
	$(BIN)/python -m pytest --backend cupy tests
	CNN_COURSE_BACKEND=cupy $(BIN)/python -m pytest -n $(JOBS) --nbval-lax --dist loadfile \
		--rootdir=. _build/nbval/notebooks exercises

clean:
	rm -rf _build .pytest_cache .hypothesis grade-report.json grade-report.md
