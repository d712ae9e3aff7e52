# The two commands a new user types: `make demo` and `make test`. Each does all its set-up itself
# (virtualenv, the package, the JVM jars) and skips what is already done (stamp files).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install only when the package's metadata (or the simulator's C hot path, built in place by
# pip install -e) changes.
VENV_STAMP := $(VENV)/.tbspark-installed
PYTEST_ARGS ?=

.PHONY: help demo test setup venv jars bench clean-state browser

help:
	@echo "make demo    run the whole pipeline on the embedded platform (sets everything up first)"
	@echo "make test    run the whole test suite, every marker (sets everything up first)"
	@echo "make setup   virtualenv + package + JVM jars only;  make venv / make jars for one part"
	@echo "make bench   run the benchmarks in bench/ (figures go to docs/benchmarks.md)"

demo: setup
	$(BIN)/tbspark demo

test: setup browser
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests — a run that tests nothing is a failure" >&2; fi; \
	exit $$rc

setup: venv jars

# Headless Chromium for tests/integration/test_web.py (Debian's package); that test skips, saying
# why, only where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }) || \
	  echo "make test: chromium could not be installed; the browser test will be skipped" >&2

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml setup.py tbspark/simulate/_fastsend.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# Quick when done: resolve_jars() compares the jar cache's stamp with the pom's hash; the second
# line records the broker's class-data archive once (it halves broker start-up on a busy machine).
jars: venv
	@$(BIN)/python -m tbspark.stack.jvm kafka spark
	@$(BIN)/python -m tbspark.stack.kafka

# Every script in bench/ is one benchmark (their shared parts live in tbspark/testing/); realtb.py
# compares with a real ThingsBoard, so it runs only when TB_URL names one (docs/thingsboard.md).
BENCHMARKS := $(filter-out bench/realtb.py,$(sort $(wildcard bench/*.py)))

bench: setup
	@set -e; for script in $(BENCHMARKS); do echo "== $$script"; $(BIN)/python $$script; done
	@if [ -n "$$TB_URL" ]; then echo "== bench/realtb.py"; $(BIN)/python bench/realtb.py; \
	else echo "== bench/realtb.py skipped: set TB_URL to a real ThingsBoard (tools/real-thingsboard.sh up)"; fi

clean-state:
	-$(BIN)/tbspark stack down
	rm -rf .tbspark
