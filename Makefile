# Two commands for readers and CI (see README.md):
#   make book   install what is needed, then build the book into _build/html
#   make test   install what is needed, then lint, unit tests and the notebooks (ci profile)
# `make venv` does only the install step.
#
# The install step is skipped when .venv holds a stamp for the current requirements.txt and
# pyproject.toml (.venv/.installed-<hash>). .venv may be a real directory or a symlink to a venv.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
REQ_HASH := $(shell cat requirements.txt pyproject.toml | (sha256sum 2>/dev/null || shasum -a 256) | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)

# Data for the unit tests and the notebooks (nothing downloads in tests).
JEBM_DATA ?= $(abspath $(CURDIR)/../shared/data)
export JEBM_DATA

NBVAL_ARGS := --nbval-lax --nbval-current-env -p no:cacheprovider -n 2 --dist loadfile --nbval-cell-timeout=300

.PHONY: help venv test lint unit notebooks book clean

help:
	@echo "make book   build the book into _build/html (installs .venv first if needed)"
	@echo "make test   ruff, unit tests, notebooks in the ci profile (installs .venv first if needed)"
	@echo "make venv   only the install step"
	@echo "make clean  remove _build"

venv: $(STAMP)

$(STAMP):
	@if [ -L "$(VENV)" ] && [ ! -e "$(VENV)" ]; then mkdir -p "$$(readlink "$(VENV)")"; fi
	@if [ ! -x "$(VPY)" ]; then \
		echo "== creating $(VENV) with $$($(PYTHON) --version)"; \
		$(PYTHON) -m venv "$(VENV)"; \
	fi
	$(VPY) -m pip install --progress-bar off -r requirements.txt
	$(VPY) -m pip install --progress-bar off -e . --no-deps
	@rm -f "$(VENV)"/.installed-*
	@touch "$(STAMP)"
	@echo "== $(VENV) is ready ($(notdir $(STAMP)))"

lint: venv
	$(VENV)/bin/ruff check .

unit: venv
	$(VPY) -m pytest tests -q -n 2

# pytest exits 5 when it collects nothing: with no notebooks yet that is a success.
# Two xdist workers on two cores: one torch thread each (two 2-thread kernels thrash the cores).
notebooks: venv
	@rc=0; OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 JEBM_PROFILE=ci TQDM_DISABLE=1 $(VPY) -m pytest $(NBVAL_ARGS) notebooks/ || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no notebooks collected under notebooks/: nothing to run"; rc=0; fi; \
	exit $$rc

# All three stages run even if one fails (so one run reports everything); the exit status is
# non-zero if any failed. Each stage prints its wall time.
test: venv
	@failed=""; \
	for stage in lint unit notebooks; do \
		t0=$$(date +%s); \
		$(MAKE) --no-print-directory $$stage || failed="$$failed $$stage"; \
		echo "== make $$stage: $$(( $$(date +%s) - t0 )) s"; \
	done; \
	if [ -n "$$failed" ]; then echo "== make test FAILED in:$$failed"; exit 1; fi; \
	echo "== make test passed"

book: venv
	TQDM_DISABLE=1 $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "== the book is at _build/html/index.html"

clean:
	rm -rf _build
