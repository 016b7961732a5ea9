# Everything runs from a local virtual environment, .venv, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser train test lint lab

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# Debian's Chromium for the real-browser tests (playwright cannot download browsers offline) and
# node for running the views' JavaScript in tests; only what is missing is installed.
browser:
	@missing=$$(for p in chromium:chromium fonts-dejavu-core:/usr/share/fonts/truetype/dejavu \
	  nodejs:node; do bin=$${p#*:}; { command -v $$bin || test -e $$bin; } >/dev/null \
	  || echo $${p%%:*}; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing $$missing"; \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The main job: JupyterLab on the quickstart notebook. LAB_ARGS go to jupyter lab, e.g.
# make lab LAB_ARGS="--no-browser --port 8899"
lab: setup
	$(BIN)/nca-widgets lab --notebook notebooks/quickstart.ipynb $(LAB_ARGS)

# Headless training from the CLI.
train: setup
	$(BIN)/nca-widgets train sa-nca --preset auto

test: setup browser
	$(BIN)/ruff check nca_widgets tests benchmarks
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check nca_widgets tests benchmarks
