#!/usr/bin/env bash
# One GPU session's measurements, in two parts (DAB_PARTS, default "bench,sweeps"), written under
# OUT (default results/gpu) and packed with the run records (no checkpoints) into OUT/gpu_results.tgz:
#   bench:  scripts/bench.py (sorting throughput vs the plain reference loop, sort_t10 time to 94.2%),
#           scripts/bench_autoencoder.py, scripts/bench_classification.py (identity and sort, width 64)
#   sweeps: Table 1 (fast recipe), the estimator ablation, Figure 3, Figure 4 (Fashion-MNIST, seed 0)
#           and Table 2 (Fashion-MNIST-32 stand-in, bf16), several runs at once, each
#           part under a wall-clock cap (DAB_SWEEP_SECONDS) so the command ends in time; cells that
#           did not finish show as "n=k of 3" in the rendered tables.
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
mkdir -p "$out"
log() { echo "[$(date +%T)] $*" | tee -a "$out/device_log.txt"; }
if [[ -n ${DAB_SMOKE:-} ]]; then  # tiny budgets: checks the plumbing, measures nothing
  bench_args=(--seconds 1 --tta-minutes 0.05 --tta-steps 50 --eval-every 10 --no-plain-tta)
  ae_args=(--seconds 1) cls_args=(--seconds 1 --width 8 --workers 1 --images 512)
  dense=(--set trainer.max_steps=20) lstm=(--set trainer.max_steps=5) fig3=(--set trainer.max_steps=5)
  vae=(--set trainer.max_steps=5 --set trainer.eval_every=5 --set 'model.widths=[8,8,8]')
  cls=(--set trainer.max_steps=5 --set trainer.eval_every=5 --set model.width=8)
  small=(--set dataset.test_size=256 --set trainer.eval_every=10)
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
fi
common=(--runs-root "$runs" "${small[@]}")  # 3+2+2+2 sorting, 3 autoencoder, 3 classifier runs at once
log "device: $($py -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')"

if [[ $parts == *,bench,* ]]; then
  log "bench: sorting"
  timeout 200 $py scripts/bench.py "${bench_args[@]}" --out "$out/bench" 2>&1 | tee -a "$out/device_log.txt"
  log "bench: autoencoder"
  timeout 75 $py scripts/bench_autoencoder.py "${ae_args[@]}" --out "$out/bench" 2>&1 | tee -a "$out/device_log.txt"
  log "bench: classification"
  timeout 90 $py scripts/bench_classification.py "${cls_args[@]}" --out "$out/bench/bench_classification.json" \
    2>&1 | tee -a "$out/device_log.txt"
fi

if [[ $parts == *,sweeps,* ]]; then
  # Table 1's dense and LSTM cells, the two extra ablation columns (its DAB and ELU columns are the
  # very same runs as Table 1's and are copied from there) and Figure 3, all at once.
  log "sweeps: start (cap ${sweep_s}s)"
  timeout "$sweep_s" $py scripts/run_artifact.py experiments/table1.yaml "${common[@]}" "${dense[@]}" --jobs 3 \
    --only sort_t5,sort_t10,sort_t15,sort_elu_t5,sort_elu_t10,sort_elu_t15 > "$out/sweep_table1_dense.txt" 2>&1 &
  timeout "$sweep_s" $py scripts/run_artifact.py experiments/table1.yaml "${common[@]}" "${lstm[@]}" --jobs 2 \
    --only sort_lstm_t5,sort_lstm_t10,sort_lstm_t15 > "$out/sweep_table1_lstm.txt" 2>&1 &
  timeout "$sweep_s" $py scripts/run_artifact.py experiments/ablation_estimators.yaml "${common[@]}" "${dense[@]}" --jobs 2 \
    --only sort_t5_loss_to_input,sort_t5_ste,sort_t10_loss_to_input,sort_t10_ste > "$out/sweep_ablation.txt" 2>&1 &
  timeout "$sweep_s" $py scripts/run_artifact.py experiments/figure3.yaml "${common[@]}" "${fig3[@]}" --jobs 2 --seeds 0 \
    > "$out/sweep_figure3.txt" 2>&1 &
  # Figure 4 on Fashion-MNIST at full width (seed 0), Table 2 on the Fashion-MNIST-32 stand-in
  timeout "$sweep_s" $py scripts/run_artifact.py experiments/figure4.yaml "${common[@]}" "${vae[@]}" --jobs 3 \
    --only vae_fmnist --seeds 0 > "$out/sweep_figure4.txt" 2>&1 &
  timeout "$sweep_s" $py scripts/run_artifact.py experiments/table2.yaml "${common[@]}" "${cls[@]}" --jobs 3 \
    --set dataset=fmnist32 --set trainer.precision=bf16 > "$out/sweep_table2.txt" 2>&1 &
  wait
  log "sweeps: done; copying Table 1's DAB and ELU runs at T=5, 10 into the ablation"
  $py - "$runs" <<'PY'
import shutil, sys, yaml
from pathlib import Path
runs = Path(sys.argv[1])
for cfg_file in (runs / "table1").rglob("config.yaml"):
    cfg = yaml.safe_load(cfg_file.read_text())
    if cfg["run_name"] in ("sort_t5", "sort_t10", "sort_elu_t5", "sort_elu_t10") and (cfg_file.parent / "metrics.json").exists():
        dest = runs / "ablation_estimators" / "from_table1" / cfg_file.parent.relative_to(runs / "table1")
        shutil.copytree(cfg_file.parent, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint.pt"))
PY
  $py scripts/aggregate.py --runs-root "$runs" --results "$out" 2>&1 | tail -40 | tee -a "$out/device_log.txt"
  $py scripts/make_figures.py --results "$out" 2>&1 | tail -10 | tee -a "$out/device_log.txt"
fi
tar czf /tmp/gpu_results.tgz --exclude=checkpoint.pt --exclude='*.tmp' "$runs" "$out" 2>/dev/null
mv /tmp/gpu_results.tgz "$out/gpu_results.tgz"
log "packed $(du -h "$out/gpu_results.tgz" | cut -f1)"
