# Two commands do all the set-up on a fresh machine:
#   make demo   -> virtual environment + the whole paper pipeline on built-in synthetic data
#   make test   -> virtual environment + the test suite
# torch is pinned through constraints.txt so a CPU machine never pulls CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= demo-out
SIZE ?= small

.PHONY: venv demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

demo: venv
	@if [ "$(SIZE)" = "standard" ]; then $(BIN)/voxelfm report get-lm smollm2 || true; fi
	$(BIN)/voxelfm demo --out $(OUT) --size $(SIZE)

test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: venv
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(OUT)
