# Two commands do all set-up on a fresh machine:
#   make demo   analyse samples/ with the shipped default model, in-process (no services needed)
#   make test   the whole test suite (starts PostgreSQL/Redis if they are down, installs Chromium, dicom3tools)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tumorlens-installed

.PHONY: demo test services install

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench,monitor]'
	@touch $@

demo: $(STAMP)
	$(BIN)/tumorlens scan samples --local

services:
	scripts/services.sh

test: $(STAMP) services
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)
