# The two commands: `make demo` and `make test`. Each sets up its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := outputs/demo
export JAX_PLATFORMS ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,torch]'
	touch $@

demo: setup
	mkdir -p $(DEMO)
	$(BIN)/fp-data --config=configs/data/synthetic.py:demo --data_dir=$(DEMO)/data
	$(BIN)/fp-preview --data_dir=$(DEMO)/data --name=demo --split=test --out=$(DEMO)/previews
	@echo "demo: dataset in $(DEMO)/data, previews in $(DEMO)/previews"

test: setup
	$(BIN)/python -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) outputs
