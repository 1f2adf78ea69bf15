# The two quickstart commands: `make chat` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: chat test lint bench soak sandbox run clean redis

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

chat: $(STAMP)  ## talk to the bot in the terminal, demo sandbox, in-memory sessions
	@$(BIN)/python -m bot chat

sandbox: $(STAMP)  ## serve the WispHub-compatible demo API on :8099
	$(BIN)/python -m bot sandbox --port 8099

run: $(STAMP)  ## the service (reads .env)
	$(BIN)/python -m bot run

redis:  ## make sure a Redis answers on REDIS_URL (starts one if none does)
	@scripts/ensure-redis

lint: $(DEVSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(DEVSTAMP) redis lint  ## ruff, mypy and the whole pytest suite against a real Redis
	$(BIN)/pytest

bench: $(DEVSTAMP) redis  ## understanding's CPU per message; throughput and latency against the aiogram peer
	$(BIN)/python -m benchmarks.understand
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.notices

soak: $(DEVSTAMP) redis  ## 20,000 messages over 2,000 conversations: bot RSS, Redis keys and TTLs
	$(BIN)/python -m benchmarks.soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
