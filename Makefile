# Two commands matter (README): `make study` runs the study, `make test` runs the tests (`make test-all`: every test).
# Both create the environment in .venv/ first (pinned in pyproject.toml).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# The offline CIFAR copy beside this checkout, when present; otherwise torchvision downloads.
MVLIB_DATA ?= $(firstword $(wildcard $(CURDIR)/../shared/data))
export MVLIB_DATA

.PHONY: setup study test test-all bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name mvlib --display-name "mvlib (.venv)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

# SMOKE=1: every notebook of the profile on its code path at a few images (build/smoke/); MAX_HOURS=h stops cleanly;
# FORCE=1: every step and every run of the profile again, from scratch
study: $(STAMP)
	$(PY) -m mvlib.study.pipeline --profile $(PROFILE) $(if $(SMOKE),--smoke) $(if $(MAX_HOURS),--max-hours $(MAX_HOURS)) $(if $(FORCE),--force)

# Tests start several processes (papermill kernels, torchrun ranks): passive OpenMP waiting keeps
# their idle threads from spinning against each other on 2 cores.
# test: the fast tier (every module, the bit-exact kernels, notebook 01 end to end at the ci profile);
# test-all: the full tier too (tests marked slow: the other notebooks, the paper smoke run, torchrun ranks,
# benchmarks). PYTEST_ARGS=... passes more options, e.g. PYTEST_ARGS="-k engine" or "--durations=20".
test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m mvlib.bench.train_throughput
	$(PY) -m cuda_numba.bench

clean-venv:
	rm -rf $(VENV)
