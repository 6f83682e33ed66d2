#!/usr/bin/env bash
# The estimator table's GPU tier (experiments/estimators.yaml, `gpu`): the same runs as the CPU tier
# at larger step budgets, several runs at once, each task's sweep group under a wall-clock cap, then
# the gradient-fidelity diagnostics and the rendered table under OUT (default results/gpu).
# Prepared, not yet run on a device: its time is unmeasured, hence the caps (DAB_TASK_SECONDS per task).
#
#   bash scripts/device_estimators.sh "$OUT"                          # on the GPU
#   DAB_SMOKE=1 bash scripts/device_estimators.sh /tmp/est_smoke      # CPU plumbing check, tiny budgets
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu}
py=${PY:-python3}
runs=${DAB_RUNS_ROOT:-runs_device}
cap=${DAB_TASK_SECONDS:-240}
jobs=${DAB_JOBS:-4}
mkdir -p "$out"
log() { echo "[$(date +%T)] $*" | tee -a "$out/device_log_estimators.txt"; }
if [[ -n ${DAB_SMOKE:-} ]]; then
  sort=(--set trainer.max_steps=10 --set trainer.eval_every=10) ae=(--set trainer.max_steps=4 --set trainer.eval_every=4)
  cls=(--set trainer.max_steps=4 --set trainer.eval_every=4) device=cpu seeds=0
else  # the spec's gpu budgets
  sort=(--set trainer.max_steps=10000 --set trainer.eval_every=2000 --set trainer.ckpt_every=10000)
  ae=(--set trainer.max_steps=2000 --set trainer.eval_every=1000 --set trainer.ckpt_every=2000
      --set dataset.test_size=5000 --set dataset.probe_size=5000)
  cls=(--set trainer.max_steps=1950 --set trainer.eval_every=390 --set trainer.ckpt_every=1950
       --set dataset.test_size=10000)
  device=cuda seeds=0,1,2
fi
for preset in sort_t10 vae_fmnist classify_sort1d; do  # the spec's sweep groups, one task each
  case $preset in sort_t10) budget=("${sort[@]}") ;; vae_fmnist) budget=("${ae[@]}") ;; classify_sort1d) budget=("${cls[@]}") ;; esac
  log "estimators: $preset"
  timeout "$cap" $py scripts/run_artifact.py experiments/estimators.yaml --only "$preset" --seeds "$seeds" \
    "${budget[@]}" --set trainer.device=$device --set "trainer.max_minutes=$((cap / 60))" --jobs "$jobs" \
    --runs-root "$runs" 2>&1 | tail -n 5 | tee -a "$out/device_log_estimators.txt"
done
log "estimators: gradient fidelity"
timeout "$cap" $py scripts/gradient_fidelity.py "$runs/estimators" --spec experiments/estimators.yaml 2>&1 \
  | tail -n 3 | tee -a "$out/device_log_estimators.txt"
$py scripts/aggregate.py --runs-root "$runs" --results "$out" >/dev/null && $py scripts/make_figures.py --results "$out" \
  | grep estimators | tee -a "$out/device_log_estimators.txt"
