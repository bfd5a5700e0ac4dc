#!/usr/bin/env bash
# The learning result of docs/results.md on a 2-core CPU: the `cpu` preset on Boxing and Breakout, seeds 0
# and 1, one run after another with both cores (measured: ~0.94 updates/s, ~21 s per epoch, so ~35 min per
# run; packing two seeds per process pinned to one core each was ~2x slower here). Then the random baseline
# under the same test protocol, the report (table with CIs, curves), the score tables and the imagination
# strips.
#
#   experiments/cpu_results.sh [RUNS_DIR]      # default runs/; rerunning resumes unfinished runs
set -euo pipefail
RUNS=${1:-runs}
GAMES=(Boxing Breakout)
SEEDS=(0 1)
mkdir -p "$RUNS"
dirs=()
for game in "${GAMES[@]}"; do
  for seed in "${SEEDS[@]}"; do
    dir="$RUNS/cpu_${game}_$seed"
    dirs+=("$dir")
    if [ -f "$dir/results.json" ]; then echo "$game seed $seed: done"; continue; fi
    python -m experiments.train --preset=cpu --game="$game" --seed="$seed" --workdir="$dir" 2>&1 | tee -a "$dir.log"
  done
done
[ -f results/random/Boxing.json ] && [ -f results/random/Breakout.json ] || \
  python -m experiments.random_baseline --games=Boxing,Breakout --seeds=0,1 --preset=cpu --out=results/random
runs=$(IFS=,; echo "${dirs[*]}")
python -m experiments.learning_report --runs="$runs" --random=results/random --out=results/cpu
python -m experiments.tables --results=results/cpu/runs --allow_missing --baselines=DIAMOND --out=results/cpu/tables
for game in "${GAMES[@]}"; do
  python -m experiments.imagination_strip --workdir="$RUNS/cpu_${game}_0" --decoder_steps=1500 \
    --out="docs/images/imagination_$game"
done
