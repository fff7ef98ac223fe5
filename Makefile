# Two commands set up a fresh machine:  `make run`  (main job)  and  `make test`.
# Both call `setup`, which is idempotent and fast when everything is already installed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt scripts/setup.sh | cksum | cut -d' ' -f1)

.PHONY: setup run test test-slow test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	PY=$(PY) VENV=$(VENV) bash scripts/setup.sh
	@rm -f $(VENV)/.installed-*
	@touch $@

run: setup
	$(BIN)/catp-agent run

# The default run leaves out the tests marked slow (end-to-end training, Ray clusters, every
# family's saved checkpoint, ...): about 14 minutes on 2 cores. CI runs both.
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/catp-agent bench

clean:
	rm -rf $(VENV)
