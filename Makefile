# Two commands for readers and CI (see README.md):
#   make book   install what is needed, then build the book into _build/html
#   make test   install what is needed, then lint, unit tests and the notebooks (ci profile)
# `make venv` does only the install step. `make browser` opens the built book in headless Chromium
# (installing the Debian package `chromium` if it is missing) and checks every page.
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

.PHONY: help venv test lint unit notebooks chapter book mathjax browser chromium clean gpu-check

help:
	@echo "make book   build the book into _build/html (installs .venv first if needed)"
	@echo "make test   ruff, unit tests, notebooks in the ci profile (installs .venv first if needed)"
	@echo "make browser  open every page of the built book in headless Chromium (after make book)"
	@echo "make chapter NB=04  execute one chapter in the cpu profile and store its outputs"
	@echo "make venv   only the install step"
	@echo "make gpu-check  CUDA tests, CUDA benchmarks and two short full runs (on a GPU machine)"
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
	$(VPY) -m pytest tests -q -n 2 -m "not browser"

# pytest exits 5 when it collects nothing: with no notebooks yet that is a success.
# Two xdist workers on two cores: one torch thread each (two 2-thread kernels thrash the cores).
notebooks: venv
	@rc=0; OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 JEBM_PROFILE=ci TQDM_DISABLE=1 $(VPY) -m pytest $(NBVAL_ARGS) notebooks/ || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no notebooks collected under notebooks/: nothing to run"; rc=0; fi; \
	exit $$rc

# Execute one chapter for storing (cpu profile; tools/execute_chapter.py: no widget state, glue diff).
NB ?=
chapter: venv
	@if [ -z "$(NB)" ]; then echo "give the chapter: make chapter NB=04"; exit 2; fi
	OMP_NUM_THREADS=1 $(VPY) tools/execute_chapter.py $(NB)

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

# The book reads offline: MathJax is served from the book's own _static/mathjax/, fetched into
# _vendor/ (git-ignored) from a package registry (npm pack, or pip download when npm is missing);
# the fetch is skipped when the pinned version is already there.
mathjax: venv
	$(VPY) tools/fetch_mathjax.py

# Chapter 5's explorer runs the toy models in the page with ONNX Runtime Web (its wasm build), fetched the
# same way into _vendor/_static/onnxruntime-web/ (tools/fetch_onnxruntime_web.py; skipped when present).
book: venv mathjax
	$(VPY) tools/fetch_onnxruntime_web.py
	$(VPY) -m jebm_lite.experiments.findings --root notebooks --out book/_generated/findings.md
	TQDM_DISABLE=1 $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "== the book is at _build/html/index.html"

# Headless Chromium from Debian's package (apt-get, with sudo when not root); skipped when present.
CHROMIUM ?= chromium
chromium:
	@if command -v "$(CHROMIUM)" >/dev/null 2>&1; then echo "== $$($(CHROMIUM) --version 2>/dev/null)"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "error: $(CHROMIUM) is missing and there is no apt-get: install Chromium by hand" >&2; exit 1; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "error: $(CHROMIUM) is missing and cannot be installed here (not root, no passwordless" \
		"sudo): run 'sudo apt-get install -y chromium', then 'make browser'" >&2; exit 1; fi; \
	echo "== installing chromium with apt-get (about 1.5 min)"; \
	$$SUDO apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	command -v chromium >/dev/null 2>&1 || { echo "error: apt-get installed no chromium command" >&2; exit 1; }; \
	echo "== $$(chromium --version 2>/dev/null)"

# Every page of the built book (run `make book` first) in headless Chromium: math typeset, images
# loaded, no console errors, no request leaving localhost; and chapter 5's explorer panel at work.
browser: venv chromium
	@test -f _build/html/index.html || { echo "error: no _build/html; run 'make book' first" >&2; exit 1; }
	JEBM_REQUIRE_BROWSER=1 OMP_NUM_THREADS=1 $(VPY) -m pytest tests/test_browser.py tests/test_explorer_browser.py -q

# On a lent GPU machine: the CUDA test cases, the CUDA benchmarks and two short full-profile runs, as JSON in
# benchmarks/results/gpu-check-<date>/ (a few minutes). Without CUDA: the CPU parts only, exit 0 if they pass.
gpu-check: venv
	$(VPY) -m benchmarks.gpu_check

clean:
	rm -rf _build
