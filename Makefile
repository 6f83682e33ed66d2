# Set-up, tests, the main job, the benchmark and the paper artifacts.
PY ?= .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup run test test-slow bench data

# TORCH=cpu: PyTorch's CPU-only wheels (about 1 GB) instead of PyPI's default CUDA build (about 6 GB).
# Checked on every call, not only when the venv is built, so that a typo is never silently ignored.
TORCH ?= default
ifneq ($(TORCH),default)
ifneq ($(TORCH),cpu)
$(error unknown TORCH=$(TORCH); valid choices: default, cpu)
endif
endif
TORCH_PINS := "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
# a pair within the pins that the tests pass with: the fix by hand that set-up offers
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# TORCH=cpu where pip cannot install from the CPU index: set-up stops and says what to do. Whatever pip
# installed (it may take a wheel from elsewhere), scripts/check_torch.py then runs a torchvision op; the
# stamp is written only if it works, so that the next call installs and checks again.
$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	@if [ "$(TORCH)" = cpu ]; then \
	  .venv/bin/pip install -q $(TORCH_PINS) --index-url $(TORCH_CPU_INDEX) || { \
	    echo "error: TORCH=cpu: pip could not install torch and torchvision from PyTorch's CPU wheel index" \
	      "($(TORCH_CPU_INDEX)); is it reachable from here? Either run 'make setup' without TORCH=cpu" \
	      "(PyPI's default build, about 6 GB, which also runs on a CPU), or install a matching pair by hand" \
	      "(.venv/bin/pip install $(TORCH_PAIR)) and run 'make setup' again" >&2; exit 1; }; \
	elif ! command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "note: no NVIDIA GPU found; 'make setup TORCH=cpu' installs the CPU-only torch (about 1 GB) instead"; fi
	.venv/bin/pip install -q -e ".[test]"
	.venv/bin/python scripts/check_torch.py --pair "$(TORCH_PAIR)"
	touch $(VENV_STAMP)

setup: $(VENV_STAMP)

# Fashion-MNIST without a download where a local copy exists (Debian/Ubuntu: apt-get install -y
# dataset-fashion-mnist); elsewhere torchvision downloads it on first use.
FMNIST_LOCAL ?= /usr/share/datasets/fashion-mnist
data:
	@if [ -d "$(FMNIST_LOCAL)" ]; then mkdir -p data/FashionMNIST/raw && cp -u $(FMNIST_LOCAL)/*.gz data/FashionMNIST/raw/ && echo "Fashion-MNIST: local copy -> data/FashionMNIST/raw"; \
	else echo "Fashion-MNIST: no local copy at $(FMNIST_LOCAL); torchvision will download it on first use"; fi

RUN_ARGS ?=
run: $(VENV_STAMP)  ## the main job: Table 1's Signum-Dense T=10 cell with the fast recipe
	@echo "sort_t10 +recipe=fast, 30,000 steps; measured times: docs/timings.md (on a GPU add RUN_ARGS=trainer.compile=true; the bar shows the live ETA; Ctrl-C checkpoints)"
	$(PY) train.py +experiment=sort_t10 +recipe=fast trainer.max_steps=30000 trainer.eval_every=2000 $(RUN_ARGS)

# The suite on every core (pytest-xdist); a test file stays on one worker, so module-scoped fixtures are
# built once. TEST_WORKERS=0 runs it in this process alone.
TEST_WORKERS ?= auto
test: $(VENV_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Every preset at its real sizes for two steps, sorting learning, the benchmark scripts on a tiny
# budget (tests/test_slow.py, tests/test_bench_scripts.py; how long: docs/timings.md)
test-slow: $(VENV_STAMP)
	$(PY) -m pytest -q -m slow

# Each family: the plain loop, ours eager and ours with the compiled whole step, side by side; then two
# CPU runs at once against one alone; then every artifact's projected time from these rates.
BENCH_OUT ?= results/bench
bench: $(VENV_STAMP)  ## (CPU: small settings; GPU: scripts/device_run.sh)
	$(PY) scripts/bench.py --seconds 10 --out $(BENCH_OUT)
	$(PY) scripts/bench_autoencoder.py --seconds 10 --workers 1 --compile --out $(BENCH_OUT)
	$(PY) scripts/bench_classification.py --width 16 --seconds 10 --workers 1 --compile --out $(BENCH_OUT)/bench_classification_cpu_$$(date +%Y%m%d-%H%M%S).json
	$(PY) scripts/bench_concurrency.py --seconds 20 --out $(BENCH_OUT)
	$(PY) scripts/bench_settings.py --seconds 10 --out $(BENCH_OUT)
	$(PY) scripts/project_times.py --bench $(BENCH_OUT) --device cpu

# Paper artifacts (experiments/<name>.yaml): run the sweep at its default budget, then the CSVs,
# tables and figures. run_artifact.py options go in ARTIFACT_ARGS, e.g. a CPU subset:
#   make table1 ARTIFACT_ARGS="--only sort_t5 --seeds 0,1 --set trainer.max_minutes=2"
# One target per spec: $(ARTIFACTS) below.
# No training in these three:
#   make aggregate  collects the finished runs under $(RUNS)/ into $(RESULTS)/<artifact>_runs.csv
#                   (needs the run directories; an artifact without runs keeps its CSV);
#   make figures    aggregate, then re-render every tier's tables and figures from its CSVs;
#   make report     re-render every tier and write $(RESULTS)/REPORT.md, one report over every spec
#                   and every tier (results/ and each results/<tier>/ holding CSVs: gpu, cpu), from
#                   the CSVs alone: it does not aggregate, so it works on a fresh clone.
# Launchers: ARTIFACT_ARGS="--jobs 2" (joblib), "--launcher submitit_local" or "--launcher slurm"
# (conf/hydra/launcher/slurm.yaml).
ARTIFACTS := table1 table1_paper_recipe figure3 ablation_estimators figure4 figure5 table2 figure6_left \
             figure6_middle figure6_right estimators
.PHONY: $(ARTIFACTS) aggregate figures report
RUNS ?= runs
# Your runs' CSVs, tables, figures and REPORT.md (beside the committed tiers) go to a tier of their own,
# results/local, so `make table1` leaves the tracked files alone; the committed tiers are results/cpu,
# results/gpu and the files directly in results/ (`make report RESULTS=results` re-renders those).
RESULTS ?= results/local
ARTIFACT_ARGS ?=

$(ARTIFACTS): $(VENV_STAMP)
	$(PY) scripts/run_artifact.py experiments/$@.yaml --runs-root $(RUNS) $(ARTIFACT_ARGS)
	@# the estimator table also reports each finished run's gradient fidelity at initialisation and at the end
	@if [ "$@" = estimators ]; then $(PY) scripts/gradient_fidelity.py $(RUNS)/estimators --spec experiments/estimators.yaml; fi
	$(PY) scripts/aggregate.py --runs-root $(RUNS) --results $(RESULTS)
	$(PY) scripts/make_figures.py --results $(RESULTS)
	$(PY) scripts/make_report.py --results $(RESULTS)

# Equal tuning of every estimator of the estimator table on a validation split (scripts/tune_estimators.py):
# the choices go to experiments/tuned/estimators.yaml, the evidence to $(TUNE_RESULTS)/estimators_tuning.md
TUNE_RUNS ?= ../dab_runs/tuning
TUNE_RESULTS ?= $(RESULTS)  # the committed CPU tier's evidence: TUNE_RESULTS=results/cpu
.PHONY: tune-estimators
tune-estimators: $(VENV_STAMP)
	$(PY) scripts/tune_estimators.py --runs-root $(TUNE_RUNS) --results $(TUNE_RESULTS) --workers 2 --threads 1

# The CPU tier of every spec with a cpu: block, in priority order, each block extended by resume until
# its ranking settles or hits its cap; each finished spec aggregated, rendered and committed
# (scripts/campaign.py). Ctrl-C checkpoints; the same command continues. CAMPAIGN_ARGS="--dry-run": the plan.
CAMPAIGN_RUNS ?= ../dab_runs/campaign
CAMPAIGN_ARGS ?=
.PHONY: campaign
campaign: $(VENV_STAMP)
	$(PY) scripts/campaign.py --runs-root $(CAMPAIGN_RUNS) --results results/cpu --commit $(CAMPAIGN_ARGS)

# Before a spec's CPU tier may use a faster setting (its cpu.faster): one full block both ways.
# e.g. make check-settings CHECK_ARGS="figure4 --block latent.bpp=0.1 --setting trainer.precision=bf16"
.PHONY: check-settings
check-settings: $(VENV_STAMP)
	$(PY) scripts/check_settings.py --runs-root $(CAMPAIGN_RUNS) --results results/cpu $(CHECK_ARGS)

aggregate: $(VENV_STAMP)
	$(PY) scripts/aggregate.py --runs-root $(RUNS) --results $(RESULTS)

figures: aggregate
	$(PY) scripts/make_figures.py --results $(RESULTS)

report: $(VENV_STAMP)
	$(PY) scripts/make_figures.py --results $(RESULTS)
	$(PY) scripts/make_report.py --results $(RESULTS)
