# The README's quick start is `make demo` and `make test`; each builds .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: venv test harden demo bench lint format serve synth clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

test: $(STAMP) node_modules/.bin/cdk
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow"

# The heavy half of the hardening suite (docs/reliability.md): thousands of generated HTTP requests, CLI and
# spec fuzzing, fault injection, checkov on the synthesized templates and a 10,000-request load under a canary
# shift. checkov lives in its own venv: it pins boto3 1.35, which conflicts with ours.
CHECKOV_VENV := build/checkov-venv
harden: $(STAMP) $(CHECKOV_VENV)/.installed
	rm -f build/hardening/*.json
	$(PY) -m pytest -q -n 0 -m "slow or not slow" tests/hardening tests/infra/test_least_privilege.py
	$(PY) -m tests.hardening.checkov
	mkdir -p build/hardening && $(PY) -c "from benchmarks.load import run; print(run())" > build/hardening/load.md
	cat build/hardening/load.md

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

demo: $(STAMP)
	rm -rf .modeldeck/demo
	$(VENV)/bin/modeldeck --state-dir .modeldeck/demo --cdk-out .modeldeck/cdk.out demo

bench: $(STAMP)
	$(PY) -m benchmarks.run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Templates into cdk.out/, offline (no AWS account or credentials needed), through the pinned CDK CLI.
synth: $(STAMP) node_modules/.bin/cdk
	npx --no-install cdk synth -q --no-notices

node_modules/.bin/cdk: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

serve: $(STAMP)
	$(VENV)/bin/modeldeck serve

clean:
	rm -rf .modeldeck cdk.out build *.egg-info
