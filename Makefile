# make demo  - set up .venv (if missing) and run the main job (char LSTM on the stdlib's source, ~3 min)
# make test  - set up .venv (if missing) and run the fast test suite (engine tests under both backends)
# make bench - set up .venv (if missing) and run the engine benchmark (tuned malloc, then default malloc)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Written after a successful install; redone when the package metadata or the pins change.
STAMP  := $(VENV)/.rnnlab-installed
PYTEST := $(BIN)/python -m pytest -q
BENCH_ARGS ?=

.PHONY: demo test test-slow bench bench-quick install clean

# The main job: a char-level LSTM trained on the Python standard library's own source (no download), then samples.
demo: $(STAMP)
	$(BIN)/rnnlab train lm --stdlib-demo --max-minutes 3 --out runs/demo

# The fast suite. Engine tests take the `backend` fixture (tests/conftest.py), so this one run covers both the
# C++ and the pure-PyTorch backend; a C++ build failure fails them rather than falling back silently.
# It includes tests/test_wheel_install.py (marker `install`, 1-3 min): the wheel in a fresh venv without extras,
# which needs the package index for the core dependencies (it fails, not skips, without one).
test: $(STAMP)
	$(PYTEST) -m "not slow"

test-slow: $(STAMP)
	$(PYTEST) -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/engine.py --default-malloc $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/engine.py --quick $(BENCH_ARGS)

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# constraints.txt pins torch to the CPU build on this machine's disk; never let pip choose another torch.
# The dev extra is every optional extra (text, plots, onnx) plus the test tools.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $@

clean:
	rm -rf build dist src/*.egg-info .pytest_cache
