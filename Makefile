# Two commands do everything on a fresh machine (Python >= 3.11 with venv):
#   make serve   install and run optflow on an embedded SQLite database
#   make test    install and run the whole test suite (PostgreSQL tests included when possible)
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: serve test bench multinode lint revision clean screenshots

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(VENV)/.installed $@

serve: $(VENV)/.installed
	$(BIN)/optflow serve

test: $(VENV)/.installed-test
	BIN=$(abspath $(BIN)) scripts/test.sh

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

multinode: $(VENV)/.installed-test
	$(BIN)/python -m bench.multinode

# The console's screenshots in docs/console/ (a real server and Debian's chromium)
screenshots: $(VENV)/.installed-test
	$(BIN)/python scripts/console_screenshots.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# A schema revision for a change to src/optflow/adapters/orm.py: make revision m="add contacts.locale"
revision: $(VENV)/.installed
	$(BIN)/python -m optflow.adapters.migrations revision -m "$(m)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
