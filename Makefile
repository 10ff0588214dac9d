# ssegate: the targets CI calls are the ones developers call.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install compile uncompile run test test-js npm-deps lint bench soak reliability system-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[compile]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,bench,compile]'
	touch $@ $(VENV)/.installed-run

# the compiled modules, unless COMPILE=0
COMPILED := $(if $(filter 0,$(COMPILE)),,$(VENV)/.compiled)

## install: virtualenv + the project + dev dependencies, its hot modules compiled (COMPILE=0: the source only)
install: $(VENV)/.installed-dev $(COMPILED)

# mypyc (scripts/compile.py): rebuilt when any source changed, since compiled modules call each other natively
$(VENV)/.compiled: $(shell find src/ssegate -name '*.py') pyproject.toml scripts/compile.py | $(VENV)/.installed-run
	$(BIN)/python scripts/compile.py
	touch $@

## compile: build the compiled modules now (make install and make run do it when a source changed)
compile:
	rm -f $(VENV)/.compiled
	$(MAKE) $(VENV)/.compiled

## uncompile: remove the compiled modules: the Python source runs (until the next make install / run / test)
uncompile:
	$(BIN)/python scripts/compile.py --remove
	rm -f $(VENV)/.compiled

## run: serve on http://127.0.0.1:8000 with the embedded demo model
run: $(VENV)/.installed-run $(COMPILED)
	$(BIN)/ssegate serve

## system-deps: Debian packages the tests drive for real (redis-server, nginx, chromium)
system-deps:
	bash scripts/system-deps.sh

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

## npm-deps: test-only npm packages (tests/npm: axe-core for the chat page's accessibility test; the AI SDK, ai 5.0.0 / 5.x / 6.x, for /api/chat)
npm-deps: tests/npm/node_modules/.installed

tests/npm/node_modules/.installed: tests/npm/package.json tests/npm/package-lock.json | system-deps
	npm ci --prefix tests/npm --no-audit --no-fund
	touch $@

## test: everything, from a fresh machine
test: install system-deps npm-deps lint test-js
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-js: the chat page's parser and stream logic under node's test runner
test-js:
	node --test tests/js/

## reliability: the whole suite, then docs/reliability.md regenerated from the fault-matrix tests that ran
reliability: install system-deps
	SSEGATE_WRITE_MATRIX=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: the benchmark suite; writes docs/benchmarks.md
bench: install system-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

## soak: mixed traffic with faults (SOAK_SECONDS, default 600)
soak: install
	$(BIN)/python -m tests.soak --seconds $${SOAK_SECONDS:-600}

clean:
	-$(BIN)/python scripts/compile.py --remove
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/npm/node_modules
