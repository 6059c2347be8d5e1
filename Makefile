# Kathikon's developer and CI commands. `make help` lists them.
# Everything a fresh machine needs is installed by these targets (Python tools into
# virtualenvs under .venv*/, Rust crates into target/), nothing by hand.

SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .venv-tools
TESTENV := .venv-test
TOOLS_PY := $(TOOLS)/bin/python
TEST_PY := $(TESTENV)/bin/python
MATURIN_VERSION := 1.16.0

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(TOOLS_PY):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS_PY) -m pip install -q --upgrade pip
	$(TOOLS_PY) -m pip install -q "maturin==$(MATURIN_VERSION)" "ruff==0.17.6" "mypy==2.4.1" "pytest==9.2.0" \
		"click==8.5.1" "rich==15.0.0"

.PHONY: tools
tools: $(TOOLS_PY) ## install maturin, ruff, mypy (and pytest, click, rich for their types) into .venv-tools

.PHONY: wheel
wheel: tools ## build the release wheel into dist/
	rm -rf dist
	$(TOOLS)/bin/maturin build --release --out dist

.PHONY: build-dev
build-dev: tools ## build and install the package, editable, into .venv-tools
	VIRTUAL_ENV=$(abspath $(TOOLS)) $(TOOLS)/bin/maturin develop --release

.PHONY: format
format: tools ## format Rust and Python sources
	cargo fmt --all
	$(TOOLS)/bin/ruff format python tests benches examples
	$(TOOLS)/bin/ruff check --fix python tests benches examples

.PHONY: lint-rust
lint-rust: ## rustfmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: lint-python
lint-python: tools ## ruff and mypy (strict) over the package
	$(TOOLS)/bin/ruff format --check python tests benches examples
	$(TOOLS)/bin/ruff check python tests benches examples
	$(TOOLS)/bin/mypy

.PHONY: lint
lint: lint-rust lint-python ## every linter

.PHONY: test-rust
test-rust: ## the core's Rust tests (nextest when installed) and doc-tests
	if command -v cargo-nextest >/dev/null; then cargo nextest run --workspace --no-tests=warn; \
	else cargo test --workspace --lib --tests; fi
	cargo test --workspace --doc

.PHONY: test-env
test-env: wheel ## a fresh virtualenv with the built wheel and the test dependencies
	rm -rf $(TESTENV)
	$(PYTHON) -m venv $(TESTENV)
	$(TEST_PY) -m pip install -q --upgrade pip
	$(TEST_PY) -m pip install -q dist/*.whl "pytest==9.2.0" "pytest-timeout==2.4.0" "hypothesis==6.170.17"

.PHONY: test-python
test-python: test-env ## pytest against the installed wheel (run from tests/, so the source tree is not imported)
	cd tests && ../$(TEST_PY) -m pytest -q -p no:cacheprovider

.PHONY: test
test: lint test-rust test-python ## everything CI runs

.PHONY: bench
bench: test-env ## the main job: install the wheel and run `kathikon bench` on the embedded default
	$(TESTENV)/bin/kathikon bench

.PHONY: bench-peers
bench-peers: test-env ## kathikon bench --peers (installs Redis, PostgreSQL and the peers), results and chart
	bash benches/peers/setup.sh
	$(TESTENV)/bin/kathikon bench --peers --json benches/results.json
	$(TOOLS_PY) -m pip install -q "matplotlib==3.11.2"
	$(TOOLS_PY) benches/chart.py benches/results.json benches/drain.png

.PHONY: quickstart
quickstart: test-env ## run examples/quickstart.py against the installed wheel
	$(TEST_PY) examples/quickstart.py

.PHONY: clean
clean: ## remove build products and virtualenvs
	rm -rf dist $(TOOLS) $(TESTENV) target
