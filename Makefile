# The two commands a newcomer needs (see README):
#   make run    set up .venv and run the service on ./config.toml
#   make test   set up .venv and run lint, type checks and the test suite
# and, while editing:
#   make test-fast  lint, type checks and tests/unit only (no process, no sleeping)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint setup clean

setup: $(VENV)/.installed

# setup.py compiles the combine kernel into the checkout: a changed source builds again.
# -c constraints.txt: the versions the suite last passed with (.ci/pins constraints
# writes it from a tested .venv), so an install next month is the tested one.
$(VENV)/.installed: pyproject.toml setup.py src/biaswatch/combine/_kernel.c constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,dask]'
	touch $@

run: setup
	mkdir -p var/incoming/cryo var/incoming/te
	$(BIN)/biaswatch run --config config.toml

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

# The unit tier (tests/conftest.py sets tiers by folder): well under a minute.
test-fast: lint
	$(BIN)/python -m pytest tests/unit -q

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
