# The two commands of the quick start are `make demo` and `make test`; each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
LINT_VENV := .venv-lint
GLUE_VENV := .venv-glue
TRAINING_VENV := .venv-training
TOOLKIT_VENV := .venv-toolkit
PYKT_VENV := .venv-pykt
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv

# torch CPU build: from this machine's wheel folder when there is one, else PyTorch's CPU index.
TORCH_WHEELS := $(firstword $(wildcard /opt/wheels))
ifeq ($(TORCH_WHEELS),)
TORCH_SOURCE := --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
else
TORCH_SOURCE := --find-links $(TORCH_WHEELS)
endif

.PHONY: demo demo-fast airflow test lint lock lock-toolkit package api clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# --compile-bytecode: imports read .pyc files even where PYTHONDONTWRITEBYTECODE is set (pandas, pyspark,
# airflow: seconds per process otherwise, and the tests and DAG runs start many processes).
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || { $(VENV)/bin/python -m pip --version >/dev/null 2>&1 || $(VENV)/bin/python -m ensurepip -q; \
	  $(VENV)/bin/python -m pip install -q uv==$(UV_VERSION); }
	$(UV) pip install -q --compile-bytecode --python $(VENV)/bin/python $(TORCH_SOURCE) -r requirements.txt
	$(UV) pip install -q --python $(VENV)/bin/python --no-deps -e .
	touch $@

$(LINT_VENV)/.installed: requirements-lint.txt $(VENV)/.installed
	test -x $(LINT_VENV)/bin/python || $(UV) venv -q --python $(PYTHON) $(LINT_VENV)
	$(UV) pip install -q --compile-bytecode --python $(LINT_VENV)/bin/python -r requirements-lint.txt
	touch $@

# Glue 5.1's versions of the modules it provides that the Glue job imports, and nothing else (tests/test_glue_job.py).
$(GLUE_VENV)/.installed: requirements-glue.txt $(VENV)/.installed
	test -x $(GLUE_VENV)/bin/python || $(UV) venv -q --python $(PYTHON) $(GLUE_VENV)
	$(UV) pip install -q --no-deps --compile-bytecode --python $(GLUE_VENV)/bin/python -r requirements-glue.txt
	touch $@

# The SageMaker training toolkit, as the PyTorch training image runs our sourcedir (tests/test_toolkit_training.py).
# A venv of its own: sagemaker-training's pins stay out of the app's. Resolve requirements-training.txt with the
# command in requirements-training.in. sagemaker-training is an sdist with a C extension: it builds with gcc.
$(TRAINING_VENV)/.installed: requirements-training.txt $(VENV)/.installed
	test -x $(TRAINING_VENV)/bin/python || $(UV) venv -q --python $(PYTHON) $(TRAINING_VENV)
	$(UV) pip install -q --compile-bytecode --python $(TRAINING_VENV)/bin/python $(TORCH_SOURCE) -r requirements-training.txt
	touch $@

# The AWS PyTorch inference image's serving stack (TorchServe, sagemaker-pytorch-inference) for
# tests/test_toolkit_inference.py and bench/serve.py, in a venv of its own: its pins conflict with the app's.
$(TOOLKIT_VENV)/.installed: requirements-toolkit.txt $(VENV)/.installed
	test -x $(TOOLKIT_VENV)/bin/python || $(UV) venv -q --python $(PYTHON) $(TOOLKIT_VENV)
	$(UV) pip install -q --compile-bytecode --python $(TOOLKIT_VENV)/bin/python $(TORCH_SOURCE) -r requirements-toolkit.txt
	touch $@

# pyKT 0.0.38, the peer the issue compares with, for bench/pykt_peer.py (bench/train.py --peer); never the tests.
$(PYKT_VENV)/.installed: requirements-pykt.txt $(VENV)/.installed
	test -x $(PYKT_VENV)/bin/python || $(UV) venv -q --python $(PYTHON) $(PYKT_VENV)
	$(UV) pip install -q --compile-bytecode --python $(PYKT_VENV)/bin/python $(TORCH_SOURCE) -r requirements-pykt.txt
	touch $@

demo: $(VENV)/.installed  ## run the whole pipeline locally on simulated students, through the real Airflow DAGs
	$(VENV)/bin/python -m kt.airflow_demo

demo-fast: $(VENV)/.installed  ## the same pipeline without Airflow (`kt demo`: python ETL, no DAG runs)
	$(VENV)/bin/kt demo

airflow: $(VENV)/.installed  ## Airflow's UI on http://localhost:8080 and the scheduler running the DAGs locally (no Docker)
	$(VENV)/bin/python -m kt.airflow_stack  # until Ctrl-C; state in .kt/airflow-stack (kt.airflow_stack)

test: $(VENV)/.installed $(LINT_VENV)/.installed $(GLUE_VENV)/.installed $(TRAINING_VENV)/.installed $(TOOLKIT_VENV)/.installed  ## run the test suite
	bash scripts/ensure-chromium.sh  # the browser tests need chromium: installed here, or stop saying how
	$(VENV)/bin/python -m pytest -q --durations=15  # the slowest tests: the suite must stay under ~15 minutes on 2 cores

api: $(VENV)/.installed  ## serve the mastery API and the Knowledge State page on :8000 (after `make demo`)
	$(VENV)/bin/kt api --port 8000

package: $(VENV)/.installed  ## build dist/kt_glue.zip and dist/sourcedir.tar.gz for Glue and SageMaker
	$(VENV)/bin/kt package --out dist

lint: $(LINT_VENV)/.installed  ## checkov on terraform/
	$(LINT_VENV)/bin/checkov -d terraform --quiet --compact --skip-download

lock: $(VENV)/.installed  ## re-resolve requirements.txt from requirements.in
	$(UV) pip compile -q requirements.in --python-version 3.11 $(TORCH_SOURCE) --no-header -o requirements.txt

lock-toolkit: $(VENV)/.installed  ## re-resolve requirements-toolkit.txt from requirements-toolkit.in
	$(UV) pip compile -q requirements-toolkit.in --python-version 3.11 $(TORCH_SOURCE) --no-header -o requirements-toolkit.txt

clean:  ## remove venvs and generated data
	rm -rf $(VENV) $(LINT_VENV) $(GLUE_VENV) $(TRAINING_VENV) $(TOOLKIT_VENV) .kt dist
