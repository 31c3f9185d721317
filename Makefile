# Two commands for a new user: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
SHARED_DATA ?= ../shared/data

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

# Re-runs only when the project's requirements change; each step is skipped when done.
$(STAMP): pyproject.toml Makefile
	@command -v apt-get >/dev/null && ! dpkg -s libsuitesparse-dev >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsuitesparse-dev; } || true
	@# Debian's Chromium: the UI tests open the Prefect UI in it, headless.
	@command -v apt-get >/dev/null && ! command -v chromium >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || true
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip
	@# One torch for CPU and GPU machines: the registry's CUDA build, with the torchvision that
	@# ALIKED needs (runs on the CPU too). Installed before anything else can ask for torch.
	@$(PY) -c "import torchvision" 2>/dev/null || $(PIP) install -q torch==2.14.1 torchvision==0.29.1
	@$(PY) -c "import sksparse" 2>/dev/null || $(PIP) install -q "scikit-sparse<0.5"
	@$(PY) -c "import theseus" 2>/dev/null || $(PIP) install -q --no-build-isolation theseus-ai==0.2.3
	@$(PIP) install -q -e ".[test]"
	@touch $(STAMP)
	@echo "setup: $(VENV) is ready"

demo: setup
	$(VENV)/bin/landmark-sfm demo --out demo_out

test: setup
	$(PY) -m pytest -q -rs tests

# Skips the end-to-end runs on real photo sets.
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf demo_out .pytest_cache
