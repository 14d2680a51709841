# retouch: one command installs and runs the demo, one installs and runs the tests.
# The virtualenv lives outside the clone, keyed by the dependency file, so a
# fresh clone (or CI) reuses it when pyproject.toml has not changed.
PYTHON ?= python3
CACHE ?= $(HOME)/.cache/retouch
DEPS_KEY := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
VENV ?= $(CACHE)/venv-$(DEPS_KEY)
BIN := $(VENV)/bin
MODELS ?= $(CACHE)/models
export RETOUCH_MODEL_DIR ?= $(MODELS)
PYTEST_ARGS ?=

.PHONY: install system-deps models demo test bench revisions-demo clean

# Something other than a venv at its path (a file, a link, a venv without its
# python) is removed first: `venv` refuses to create over a file or a link.
$(VENV)/.installed: pyproject.toml
	@if [ -L $(VENV) ] || { [ -e $(VENV) ] && [ ! -x $(VENV)/bin/python ]; }; then rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The package itself is re-linked to this clone every time (cheap, no deps).
install: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

# Servers the tests start for real: Redis, Prometheus, Chromium; the deploy
# validators: docker-compose (`config`) and kubectl (`kustomize`) (Debian packages).
system-deps:
	@missing=""; \
	for pair in redis-server:redis-server prometheus:prometheus promtool:prometheus chromium:chromium \
	            docker-compose:docker-compose kubectl:kubernetes-client; do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing (install them to run every test):$$missing"; fi; \
	fi

# Convert the weights shipped in installed packages into the model store.
models: install
	$(BIN)/python -m orchestration.provision --model-dir $(MODELS)

demo: models
	$(BIN)/retouch run examples --out out --save-masks
	@echo "outputs, sidecars and masks are in out/"

# Tests marked slow (the chaos drill, minutes on 2 cores) are left out here;
# `retouch bench chaos` runs the same drill, `make test PYTEST_ARGS="-m slow"` the test.
test: install system-deps models
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: models
	$(BIN)/retouch bench

# The revisions walk-through (README, "Revisions") on its own servers, with its figures.
revisions-demo: models
	$(BIN)/retouch bench revisions

clean:
	rm -rf out report .pytest_cache
