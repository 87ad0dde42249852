# The README's two commands: `make demo` (embedded default end to end -> paper/build/report.pdf)
# and `make test` (the test suite). `make demo` installs what the workflow runs on a laptop (`install`);
# `make test` adds the test tools and the SLURM extra its cluster tests drive (`install-dev`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rules run `python -m goodtransfer`: the venv's python must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
CORES ?= 2
# A laptop without a GPU: `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs torch's
# CPU wheels (pyproject's torch and torchvision pins) before the rest: a .venv of 1.4 GB, not 6.0 GB.
TORCH_INDEX ?=
TORCH_PINS := $(shell sed -n 's/^ *"\(torch\(vision\)\{0,1\}==[^"]*\)".*/\1/p' pyproject.toml)
# Debian packages: a LaTeX that has booktabs, siunitx, multirow, lmodern; poppler for PDF checks.
APT_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-science \
	latexmk lmodern poppler-utils

.PHONY: demo test install install-dev system-deps lint format clean

# One line per finished job (done/total, elapsed, time left); Snakemake's full output: logs/snakemake-follow.log
# --warm: jobs fork from a server that imported torch once (logs/warm-server.log); drop it to start each fresh
demo: install system-deps
	$(BIN)/python -m goodtransfer.follow paper/build/report.pdf --warm --profile profiles/local --cores $(CORES)

# Two pytest workers, each taking whole test files (their module fixtures build a workspace once): the
# suite's subprocesses, Snakemake runs and SLURM waits overlap on 2 cores.
TEST_WORKERS ?= 2
test: install-dev system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) $(TORCH_PINS))
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

system-deps:
	@if command -v latexmk >/dev/null && command -v pdftotext >/dev/null \
	    && kpsewhich lmodern.sty booktabs.sty siunitx.sty >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	else \
	    echo "LaTeX is missing. Run as root:"; \
	    echo "  sudo apt-get install -y --no-install-recommends $(APT_PACKAGES)"; exit 1; \
	fi

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

format: install-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/snakefmt Snakefile rules

clean:
	rm -rf results logs data/generated paper/build .snakemake
