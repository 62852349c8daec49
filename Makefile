# One virtual environment, filled once; `make setup` is a no-op when it is up to date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

# torch is installed first and pinned: the CPU build comes from the local wheel,
# otherwise pip resolves torch from the registry and pulls the CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/meddistill demo --out demo_report

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo_report
