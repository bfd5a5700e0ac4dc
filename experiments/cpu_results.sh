#!/usr/bin/env bash
# The learning result of docs/results.md on a 2-core CPU: the `cpu` preset on Boxing and Breakout, seeds 0
# and 1 packed per game, one process per core (single-threaded XLA), then the random baseline under the same
# test protocol, the report (table with CIs, curves), the score tables and the imagination strip.
#
#   experiments/cpu_results.sh [RUNS_DIR]      # default runs/; rerunning resumes unfinished runs
set -euo pipefail
RUNS=${1:-runs}
GAMES=(Boxing Breakout)
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
pids=()
for i in "${!GAMES[@]}"; do
  game=${GAMES[$i]}
  if ls "$RUNS/cpu_$game"/seed_*/results.json >/dev/null 2>&1; then echo "$game: done"; continue; fi
  taskset -c "$i" python -m experiments.train --preset=cpu --game="$game" --seed=0 --num_seeds=2 \
    --workdir="$RUNS/cpu_$game" >> "$RUNS/cpu_$game.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
unset XLA_FLAGS
[ -f results/random/Boxing.json ] && [ -f results/random/Breakout.json ] || \
  python -m experiments.random_baseline --games=Boxing,Breakout --seeds=0,1 --preset=cpu --out=results/random
python -m experiments.learning_report --runs="$RUNS/cpu_Boxing,$RUNS/cpu_Breakout" --random=results/random \
  --out=results/cpu
python -m experiments.tables --results=results/cpu/runs --allow_missing --baselines=DIAMOND --out=results/cpu/tables
for game in "${GAMES[@]}"; do
  python -m experiments.imagination_strip --workdir="$RUNS/cpu_$game" --num_seeds=2 --decoder_steps=1500 \
    --out="docs/images/imagination_$game"
done
