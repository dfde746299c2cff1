# Two entry points, each self-sufficient on a fresh machine:
#   make demo   RNA-FM vs Ridge and HE2RNA on HER2ST pseudo-bulk, leave-one-section-out
#               (report in skrnafm_reports/demo)
#   make test   the test suite, the examples and the documentation build
#
# Both create .venv and install the package into it on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch from pip's configured index, by default PyPI, whose Linux wheel is the
# CUDA build. For the CPU build, add PyTorch's CPU index:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make demo
TORCH_SPEC ?= torch==2.13.0
SKRNAFM_DATA ?= $(abspath ../shared/data)
export SKRNAFM_DATA

.PHONY: demo test install clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/skrnafm demo --out skrnafm_reports/demo

test: $(VENV)/.installed
	$(PY) -m pytest -n 2
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build skrnafm_reports
