# mediaflow — two commands on a fresh machine:
#   make demo   install everything into .venv, start the embedded stack, caption a bundled sample
#   make test   install everything into .venv and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Nothing here may fetch models at run time, and nothing phones home.
export HF_HUB_OFFLINE := 1
export PYANNOTE_METRICS_ENABLED := false

.PHONY: demo test install system-deps lint checks fuzz protos bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

install: $(UV) system-deps
	$(UV) sync --frozen --all-packages

system-deps:
	@scripts/system-deps.sh $(if $(filter test,$(MAKECMDGOALS)),test,runtime)

demo: install
	$(VENV)/bin/mediaflow demo --out out/demo

test: install
	@scripts/system-deps.sh test
	@$(MAKE) --no-print-directory checks
	$(VENV)/bin/python -m pytest -ra

# Schemathesis over the OpenAPI document against a real gateway alone (all checks, stateful phase,
# >= 1,000 requests; about a minute; `make test` runs it with everything else).
fuzz:
	$(VENV)/bin/python -m pytest -ra tests/integration/test_gateway_fuzz.py

lint: install
	@$(MAKE) --no-print-directory checks

# The boundaries the tools hold: lint, format, types (strict on the shared core), import contracts.
checks:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p mediaflow.common
	$(VENV)/bin/lint-imports

protos: install
	$(VENV)/bin/python scripts/gen_protos.py

bench: install
	$(UV) sync --frozen --all-packages --group bench
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) $(TOOLS) out
