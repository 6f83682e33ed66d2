#!/usr/bin/env bash
# Everything one GPU session should measure, in one command, written under OUT (default results/gpu):
# the benchmark (throughput, time to 94.2%), then Table 1 (T=5, 10) and Figure 3 at a per-run
# minute cap with torch.compile, aggregated and rendered with the same pipeline as the CPU results.
#
#   source .device-carry/setup.sh && bash scripts/device_run.sh "$OUT"        # on the GPU machine
#   DAB_MINUTES=0.05 DAB_SEEDS=0 DAB_BENCH_SECONDS=1 bash scripts/device_run.sh /tmp/gpu_smoke   # CPU smoke
# A device command may run 10 minutes at most: with the defaults (~1 min per run, 4 at a time)
# each part takes 3-5 minutes, so run DAB_PARTS=bench,table1 and DAB_PARTS=figure3 as two commands
# if time is short. Runs go to DAB_RUNS_ROOT (default runs_device), never mixed with CPU runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu}
minutes=${DAB_MINUTES:-1}         # wall-clock cap per training run
seeds=${DAB_SEEDS:-0,1}
jobs=${DAB_JOBS:-4}               # small models: several runs share one GPU
parts=,${DAB_PARTS:-bench,table1,figure3},
bench_seconds=${DAB_BENCH_SECONDS:-10}
py=${PY:-python3}
runs=${DAB_RUNS_ROOT:-runs_device}
mkdir -p "$out"
common=(--runs-root "$runs" --fast --jobs "$jobs" --set "trainer.max_minutes=$minutes"
        --set trainer.progress=false --set trainer.eval_every=500)

[[ $parts == *,bench,* ]] && $py scripts/bench.py --seconds "$bench_seconds" --tta-minutes 2 --eval-every 250 --out "$out" | tee "$out/bench_stdout.txt"
[[ $parts == *,table1,* ]] && $py scripts/run_artifact.py experiments/table1.yaml "${common[@]}" --seeds "$seeds" \
    --only sort_t5,sort_t10,sort_lstm_t5,sort_lstm_t10,sort_elu_t5,sort_elu_t10
[[ $parts == *,figure3,* ]] && $py scripts/run_artifact.py experiments/figure3.yaml "${common[@]}" --seeds "${seeds%%,*}"
$py scripts/aggregate.py --runs-root "$runs" --results "$out"
$py scripts/make_figures.py --results "$out"
