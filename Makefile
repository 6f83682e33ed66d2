# Set-up, tests, the main job, the benchmark and the paper artifacts.
PY ?= .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup run test test-slow bench

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e ".[test]"
	touch $(VENV_STAMP)

setup: $(VENV_STAMP)

run: $(VENV_STAMP)  ## the main job: Table 1's Signum-Dense T=10 cell
	$(PY) train.py +experiment=sort_t10

test: $(VENV_STAMP)
	$(PY) -m pytest -q

test-slow: $(VENV_STAMP)
	$(PY) -m pytest -q -m slow

bench: $(VENV_STAMP)
	$(PY) scripts/bench.py --out results/bench
