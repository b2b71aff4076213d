# Chatee — every target creates .venv and installs the pinned dependencies first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
QUEUES ?=

.PHONY: deps migrate dev run-api run-worker test lint fmt bench bench-scale lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP)                 ## create .venv with pinned dependencies

migrate: deps                  ## apply migrations to CHATEE_DATABASE_URL
	$(VENV)/bin/chatee migrate

dev: deps                      ## the whole stack: Temporal + UI, Redis, SQLite, API, all workers
	$(VENV)/bin/chatee dev

run-api: deps                  ## the API alone, against configured services
	$(VENV)/bin/chatee api

run-worker: deps               ## workers alone; QUEUES="--queue llm --queue tools" for a subset
	$(VENV)/bin/chatee worker $(QUEUES)

test: deps                     ## the whole suite against real servers
	$(PY) -m pytest -q --durations=10 $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: deps
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: deps                    ## bench/turn_latency.py; JSON on stdout
	$(PY) -m bench.turn_latency

bench-scale: deps              ## bench/scale.py: 2 APIs, 3 workers, 1,000 sessions at once
	$(PY) -m bench.scale

lock:                          ## re-pin requirements.lock from a fresh resolve
	rm -rf .lockvenv && python3 -m venv .lockvenv
	.lockvenv/bin/pip install -q --upgrade pip && .lockvenv/bin/pip install -q -e '.[dev]'
	.lockvenv/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
