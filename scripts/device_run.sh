#!/usr/bin/env bash
# One GPU session's measurements, written under OUT (default results/gpu) and packed with the run
# records (no checkpoints) into OUT/gpu_results.tgz. Parts (DAB_PARTS, default "bench,sweeps"):
#   bench:  the three families' benchmarks (plain loop, eager, compiled whole step) and the
#           projected GPU time of every spec from the measured rates (scripts/project_times.py)
#   sweeps: every artifact spec in priority order (Table 1, the estimator ablation, Table 2, Figure 4,
#           Figure 3, Figure 6, the estimator table), several runs at once; each group gets at most
#           DAB_SWEEP_SECONDS and never runs past the deadline: DAB_DEADLINE_SECONDS after the start
#           (default 780, a 15-minute session less start-up), minus DAB_RESERVE_SECONDS (default 60) kept
#           for aggregating and packing. A group with under 30 s left is skipped and logged; a stopped
#           run checkpoints (SIGTERM), and its cells show as "n=k of 3" in the rendered tables.
#
#   bash scripts/device_run.sh "$OUT"                                              # on the GPU
#   DAB_SMOKE=1 DAB_PARTS=bench,sweeps bash scripts/device_run.sh /tmp/gpu_smoke   # CPU smoke test
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu}
parts=,${DAB_PARTS:-bench,sweeps},
py=${PY:-python3}
runs=${DAB_RUNS_ROOT:-runs_device}
sweep_s=${DAB_SWEEP_SECONDS:-300}
start_s=$(date +%s)
deadline_s=${DAB_DEADLINE_SECONDS:-780}
reserve_s=${DAB_RESERVE_SECONDS:-60}
mkdir -p "$out"
log() { echo "[$(date +%T)] $*" | tee -a "$out/device_log.txt"; }
# seconds a benchmark may run: its cap, cut to the deadline less the reserve (at least 1)
cap_left() {
  local left=$(( start_s + deadline_s - reserve_s - $(date +%s) ))
  (( left > $1 )) && left=$1
  (( left < 1 )) && left=1
  echo "$left"
}
# seconds a group may still run: its cap, cut to the deadline less the reserve; 0 = skip it
budget_left() {
  local left=$(( start_s + deadline_s - reserve_s - $(date +%s) ))
  (( left > sweep_s )) && left=$sweep_s
  (( left < 30 )) && left=0
  echo "$left"
}
if [[ -n ${DAB_SMOKE:-} ]]; then  # tiny budgets: checks the plumbing, measures nothing
  bench_args=(--seconds 1 --tta-minutes 0.05 --tta-steps 50 --eval-every 10 --no-plain-tta)
  ae_args=(--seconds 1) cls_args=(--seconds 1 --width 8 --workers 1 --images 512)
  dense=(--set trainer.max_steps=20) lstm=(--set trainer.max_steps=5) fig3=(--set trainer.max_steps=5)
  vae=(--set trainer.max_steps=5 --set trainer.eval_every=5 --set 'model.widths=[8,8,8]')
  cls=(--set trainer.max_steps=5 --set trainer.eval_every=5 --set model.width=8)
  small=(--set dataset.test_size=256 --set trainer.eval_every=10)
  pack_device=cpu pack_counts=1,2 pack_s=3 project_device=cpu
else
  bench_args=(--seconds 5 --tta-experiment sort_t10 --tta-target 0.942 --tta-minutes 2 --tta-steps 120000
              --eval-every 5000 --no-plain-tta)
  ae_args=(--seconds 8) cls_args=(--seconds 8 --width 64)
  dense=(--set trainer.max_steps=30000) lstm=(--set trainer.max_steps=10000) fig3=(--set trainer.max_steps=5000)
  vae=(--set trainer.max_steps=1000 --set trainer.eval_every=1000 --set trainer.ckpt_every=1000
       --set dataset.test_size=5000 --set dataset.probe_size=5000)
  cls=(--set trainer.max_steps=600 --set trainer.eval_every=200 --set trainer.log_every=200
       --set trainer.ckpt_every=600 --set model.width=64)
  small=()
  pack_device=cuda pack_counts=1,2,4,8 pack_s=15 project_device=gpu
fi
common=(--runs-root "$runs" "${small[@]}")  # 3+2+2+2 sorting, 3 autoencoder, 3 classifier runs at once
log "device: $($py -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')"

if [[ $parts == *,bench,* ]]; then
  log "bench: sorting"
  timeout "$(cap_left 200)" $py scripts/bench.py "${bench_args[@]}" --out "$out/bench" 2>&1 | tee -a "$out/device_log.txt"
  log "bench: autoencoder"
  timeout "$(cap_left 120)" $py scripts/bench_autoencoder.py "${ae_args[@]}" --compile --out "$out/bench" 2>&1 | tee -a "$out/device_log.txt"
  log "bench: classification"
  timeout "$(cap_left 150)" $py scripts/bench_classification.py "${cls_args[@]}" --compile \
    --out "$out/bench/bench_classification_$(date +%Y%m%d-%H%M%S).json" 2>&1 | tee -a "$out/device_log.txt"
  log "bench: runs per GPU (packing)"
  for e in sort_t10 vae_fmnist; do
    timeout "$(cap_left 120)" $py scripts/bench_concurrency.py --device "${pack_device}" --packing "${pack_counts}" \
      --seconds "${pack_s}" --experiment "$e" --out "$out/bench" 2>&1 | tee -a "$out/device_log.txt"
  done
  log "bench: projected time per spec"
  $py scripts/project_times.py --bench "$out/bench" --device "${project_device}" 2>&1 | tee -a "$out/device_log.txt"
fi

if [[ $parts == *,sweeps,* ]]; then
  # Groups in priority order; the runs of one group share the device (--jobs), each capped by `t`.
  group() {  # name: logs the group's budget and exports it as t; returns 1 when the deadline is too near
    t=$(budget_left)
    if (( t == 0 )); then log "sweeps: $1 skipped, deadline reached"; return 1; fi
    log "sweeps: $1 (up to ${t}s)"
  }
  art() { timeout "$t" $py scripts/run_artifact.py "experiments/$1.yaml" "${common[@]}" "${@:2}"; }
  # 1. Table 1's dense and LSTM cells and the two extra ablation columns (its DAB and ELU columns
  #    are the very same runs as Table 1's and are copied from there)
  if group "table1 + ablation"; then
    art table1 "${dense[@]}" --jobs 3 --only sort_t5,sort_t10,sort_t15,sort_elu_t5,sort_elu_t10,sort_elu_t15 \
      > "$out/sweep_table1_dense.txt" 2>&1 &
    art table1 "${lstm[@]}" --jobs 2 --only sort_lstm_t5,sort_lstm_t10,sort_lstm_t15 > "$out/sweep_table1_lstm.txt" 2>&1 &
    art ablation_estimators "${dense[@]}" --jobs 2 \
      --only sort_t5_loss_to_input,sort_t5_ste,sort_t10_loss_to_input,sort_t10_ste,sort_t15_ste > "$out/sweep_ablation.txt" 2>&1 &
    wait
  fi
  # 2. Table 2 on the Fashion-MNIST-32 stand-in and Figure 4 on Fashion-MNIST (seed 0)
  if group "table2 + figure4"; then
    art table2 "${cls[@]}" --jobs 3 --set dataset=fmnist32 --set trainer.precision=bf16 > "$out/sweep_table2.txt" 2>&1 &
    art figure4 "${vae[@]}" --jobs 3 --only vae_fmnist --seeds 0 > "$out/sweep_figure4.txt" 2>&1 &
    wait
  fi
  # 3. Figure 3 and Figure 6 (left, middle, right) on the stand-in
  if group "figure3 + figure6"; then
    art figure3 "${fig3[@]}" --jobs 2 --seeds 0 > "$out/sweep_figure3.txt" 2>&1 &
    for f in figure6_left figure6_middle figure6_right; do
      art "$f" "${cls[@]}" --jobs 2 --set dataset=fmnist32 --set trainer.precision=bf16 > "$out/sweep_$f.txt" 2>&1 &
    done
    wait
  fi
  # 4. the estimator table (its own script: per-task budgets, then the gradient-fidelity diagnostics)
  if group "estimators"; then
    DAB_TASK_SECONDS=$(( t / 3 )) DAB_RUNS_ROOT="$runs" timeout "$t" bash scripts/device_estimators.sh "$out" \
      > "$out/sweep_estimators.txt" 2>&1
  fi
  # Figure 5 needs ImageNet, which the device does not have: not scheduled.
  log "sweeps: done; copying Table 1's DAB runs at T=5, 10, 15 and ELU runs at T=5, 10 into the ablation"
  $py - "$runs" <<'PY'
import shutil, sys, yaml
from pathlib import Path
runs = Path(sys.argv[1])
for cfg_file in (runs / "table1").rglob("config.yaml"):
    cfg = yaml.safe_load(cfg_file.read_text())
    if cfg["run_name"] in ("sort_t5", "sort_t10", "sort_t15", "sort_elu_t5", "sort_elu_t10") and (cfg_file.parent / "metrics.json").exists():
        dest = runs / "ablation_estimators" / "from_table1" / cfg_file.parent.relative_to(runs / "table1")
        shutil.copytree(cfg_file.parent, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint.pt"))
PY
  $py scripts/aggregate.py --runs-root "$runs" --results "$out" 2>&1 | tail -40 | tee -a "$out/device_log.txt"
  $py scripts/make_figures.py --results "$out" 2>&1 | tail -10 | tee -a "$out/device_log.txt"
fi
tar czf /tmp/gpu_results.tgz --exclude=checkpoint.pt --exclude='*.tmp' "$runs" "$out" 2>/dev/null
mv /tmp/gpu_results.tgz "$out/gpu_results.tgz"
log "packed $(du -h "$out/gpu_results.tgz" | cut -f1)"
