# The whole set-up on a fresh machine is `make sandbox` or `make test`:
# each creates .venv when missing and installs what it needs from PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM := $(VENV)/.system

.PHONY: sandbox test lint typecheck bench soak clean imports

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's docker-compose (1.29) validates docker-compose.yml without a Docker
# engine; there is no PyPI package for it that fits beside our dependencies.
# Best effort: where apt-get is missing the compose test checks structure only.
# The transparent-source tests build network namespaces with iproute2 (`ip netns`,
# veth pairs) and set nodes up with iptables; as root they need both.
$(SYSTEM): $(STAMP)
	command -v docker-compose >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; } || \
	  echo "note: docker-compose not installed; docker-compose.yml gets the structural check only"
	{ command -v ip >/dev/null && command -v iptables >/dev/null; } || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null; } || \
	  echo "note: iproute2/iptables not installed; the network-namespace tests cannot run"
	touch $(SYSTEM)

sandbox: $(STAMP)
	$(BIN)/kxds sandbox $(SANDBOX_ARGS)

test: $(STAMP) $(SYSTEM)
	$(BIN)/ruff check kxds tests e2e bench scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check kxds tests e2e bench scripts
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# The import graph between kxds's packages (the direction lint-imports enforces).
imports: $(STAMP)
	$(BIN)/python scripts/import_graph.py

# BENCH_ARGS passes options through, e.g. `make bench BENCH_ARGS=--quick`.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# 30 minutes of churn with a real Envoy and traffic (SOAK_ARGS=--minutes 5 for less);
# results in bench/results/soak.{md,json}.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
