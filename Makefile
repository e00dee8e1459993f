# The two commands: `make run` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SECRET_FILE := var/secret.key

.PHONY: run test lint bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# A local secret key for the embedded database, created once; set ANJEON_SECRET_KEY to use your own.
$(SECRET_FILE): | $(STAMP)
	$(BIN)/anjeon secret-key --file $(SECRET_FILE)

run: $(STAMP) $(SECRET_FILE)
	ANJEON_SECRET_KEY_FILE=$${ANJEON_SECRET_KEY_FILE:-$(SECRET_FILE)} $(BIN)/anjeon migrate
	ANJEON_SECRET_KEY_FILE=$${ANJEON_SECRET_KEY_FILE:-$(SECRET_FILE)} $(BIN)/anjeon serve

# With ANJEON_TEST_DATABASE_URL set, four legs of both backends' tests run side by side
# (scripts/test_legs.py); without it, the SQLite tests in one process.
test: $(STAMP)
	$(BIN)/ruff check .
	@if [ -n "$$ANJEON_TEST_DATABASE_URL" ]; then \
	  $(BIN)/python scripts/test_legs.py $(PYTEST_ARGS); \
	else \
	  $(BIN)/python -m pytest $(PYTEST_ARGS); \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check service tests

clean:
	rm -rf $(VENV) var .pytest_cache

# Benchmarks: geomatching with ANJEON_BENCH_N citizens (default 1,000,000), dispatch with
# ANJEON_BENCH_DISPATCH_N alerts (default 100,000), the roll call of an advisory that asked
# ANJEON_BENCH_ROLLCALL_N citizens (default 200,000), a rotation's `anjeon reseal` over
# ANJEON_BENCH_RESEAL_N citizens (default 200,000); PostgreSQL legs when
# ANJEON_BENCH_DATABASE_URL is set; then load with locust (PostgreSQL only, ANJEON_LOAD_S seconds
# a phase). Figures on stdout and in var/bench/.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python bench/geomatch.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/rollcall.py
	$(BIN)/python bench/reseal.py
	$(BIN)/python bench/load.py
