# Two entry points, each creating (or reusing) a virtualenv with the pinned dependencies of
# setup.cfg. The venv lives outside the checkout, keyed by setup.cfg's hash, so every clone
# with the same pins reuses it; the code itself always runs from this checkout (PYTHONPATH).
PYTHON ?= python3.11
# Only what pip installs keys the venv ([options], the extras and [no-deps]), not e.g. pytest's settings.
PIN_HASH := $(shell sed -n '/^\[options\]/,/^\[options.packages.find\]/p;/^\[options.extras_require\]/,/^\[options.entry_points\]/p;/^\[no-deps\]/,/^$$/p' setup.cfg | sha256sum | cut -c1-16)
# Wheels installed without their dependencies: their metadata pins versions we don't use (see setup.cfg).
NO_DEPS := $(shell sed -n '/^\[no-deps\]/,/^$$/p' setup.cfg | grep -E '^[A-Za-z0-9_.-]+==' )
VENV ?= $(HOME)/.cache/latent-pmrf/venv-$(PIN_HASH)
RUN := PYTHONPATH=$(CURDIR) HF_HUB_OFFLINE=1 $(VENV)/bin/python
PYTEST_ARGS ?=
QUICKSTART_ARGS ?=

.PHONY: quickstart test venv print-venv browser
quickstart: $(VENV)/.ready
	$(RUN) -m latent_pmrf quickstart --out runs/quickstart $(QUICKSTART_ARGS)

test: $(VENV)/.ready browser
	$(RUN) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

# The demo's browser test (tests/test_demo.py) drives Debian's chromium through its chromedriver;
# installed here when absent and we may (root, apt-get), never fatal: without them that test skips.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) \
	      || echo "could not install chromium/chromium-driver: the browser test will skip"; \
	  else \
	    echo "chromium or chromedriver not on PATH (as root: apt-get install -y chromium chromium-driver):" \
	      "the browser test will skip"; \
	  fi; \
	fi

venv: $(VENV)/.ready

# The venv's path, for latent_pmrf/cli/latent-pmrf (the `latent-pmrf` command of this checkout).
print-venv:
	@echo $(VENV)

# No file prerequisites: the hash in the path already tracks the pins, and a fresh clone's
# setup.cfg is always newer than an existing venv.
$(VENV)/.ready:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	# Dependencies only: install the package with its extras, then remove the package itself.
	$(VENV)/bin/python -m pip install -q ".[dev,baselines,demo]"
	$(VENV)/bin/python -m pip uninstall -q -y latent-pmrf
	$(if $(NO_DEPS),$(VENV)/bin/python -m pip install -q --no-deps $(NO_DEPS))
	rm -rf build latent_pmrf.egg-info
	touch $@
