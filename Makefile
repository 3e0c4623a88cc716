# prefkit: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench-features clean

setup: $(STAMP)

# torch first (the local CPU build), then everything that depends on it.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/prefkit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

bench-features: $(STAMP)
	bash bench/arena_features.sh

clean:
	rm -rf $(VENV) runs
