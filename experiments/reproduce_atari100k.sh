#!/usr/bin/env bash
# The full reproduction on one accelerator: 26 games x 5 seeds of the atari100k preset, then the tables.
#
#   experiments/reproduce_atari100k.sh RUNS_DIR [--config.wm.kind=diamond ...]
#
# Seeds are packed 5 per program (--num_seeds=5, jax.vmap over the training state): one process per game.
# Rerunning the script resumes unfinished runs (each workdir resumes from its last checkpoint).
# On a SLURM cluster: experiments/slurm_atari100k.sh (one array task per game).
set -euo pipefail
RUNS=${1:?usage: $0 RUNS_DIR [extra flags]}; shift
GAMES=$(python -c "from jedi_jax.envs import GAMES; print(' '.join(GAMES))")
for game in $GAMES; do
  if ls "$RUNS/$game"/seed_*/results.json >/dev/null 2>&1; then echo "$game: done"; continue; fi
  python -m experiments.train --game="$game" --seed=0 --num_seeds=5 --workdir="$RUNS/$game" "$@"
done
python -m experiments.tables --results="$RUNS" --out="$RUNS/tables"
