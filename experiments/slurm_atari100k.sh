#!/usr/bin/env bash
# The 26-game x 5-seed reproduction as one SLURM array job: one array task per game, its seeds packed into one
# program (--num_seeds, jax.vmap over the training state), then a job that writes the tables. The one-machine
# version is experiments/reproduce_atari100k.sh.
#
#   experiments/slurm_atari100k.sh RUNS_DIR [train flags ...]        # submit (from the repository root)
#   SBATCH_ARGS="--partition=gpu --account=me" experiments/slurm_atari100k.sh runs/ --config.wm.kind=diamond
#
# Resume: rerun the same command. Games whose results.json exist are skipped; the array holds only the
# unfinished ones, and each of those resumes from the newest checkpoint in RUNS_DIR/<game> (experiments.train
# resumes by rerunning, exactly). A task that hits its time limit or is preempted therefore loses at most the
# epochs since its last checkpoint (run.checkpoint_every); tasks are also submitted with --requeue, so SLURM
# restarts a task whose node fails and it resumes the same way. The tables job runs once every task of the
# array has succeeded (afterok); if one failed, rerunning resubmits that game and the tables job.
#
# Environment: SBATCH_ARGS (extra sbatch options: partition, account, time, ...; they override the #SBATCH
# defaults below), NUM_SEEDS (seeds per game, default 5), SEED (first seed, default 0), PYTHON (default
# python), GAMES (a space-separated subset, default all 26; the tables then use --allow_missing), DRY_RUN=1
# (print the sbatch commands, submit nothing).
# Logs: RUNS_DIR/slurm/<job name>_<job id>_<task>.out.
#
# Inside an array task this script is the batch script (called with `task`): it trains game number
# SLURM_ARRAY_TASK_ID of the Atari100k list (jedi_jax/data/atari100k_games.txt).
#SBATCH --job-name=jedi_atari100k
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=48:00:00
#SBATCH --requeue
set -euo pipefail

PYTHON=${PYTHON:-python}
NUM_SEEDS=${NUM_SEEDS:-5}
SEED=${SEED:-0}

all_games() {  # the 26 games, one per line, in the order of jedi_jax.atari100k.GAMES
  grep -v '^[[:space:]]*$' "$REPO/jedi_jax/data/atari100k_games.txt"
}

done_game() {  # a game is done when its seeds wrote results.json
  ls "$1/$2"/seed_*/results.json >/dev/null 2>&1
}

if [[ "${1:-}" == task ]]; then  # ---- one array task: train one game ----------------------------------
  shift
  RUNS=$1; shift
  REPO=${REPO:-$PWD}
  index=${SLURM_ARRAY_TASK_ID:?task mode runs inside a SLURM array job}
  game=$(all_games | sed -n "$((index + 1))p")
  if [[ -z "$game" ]]; then echo "error: array index $index is not one of the 26 games" >&2; exit 1; fi
  if done_game "$RUNS" "$game"; then echo "$game: done"; exit 0; fi
  cd "$REPO"
  exec "$PYTHON" -m experiments.train --game="$game" --seed="$SEED" --num_seeds="$NUM_SEEDS" \
    --workdir="$RUNS/$game" "$@"
fi

# ---- submit: an array of the unfinished games, then the tables -------------------------------------------
RUNS=${1:?usage: $0 RUNS_DIR [train flags ...]}; shift
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$RUNS/slurm"
RUNS=$(cd "$RUNS" && pwd)
mapfile -t GAME_LIST < <(all_games)
wanted=" ${GAMES:-${GAME_LIST[*]}} "
for g in ${GAMES:-}; do
  if [[ " ${GAME_LIST[*]} " != *" $g "* ]]; then echo "error: unknown game '$g' in GAMES" >&2; exit 1; fi
done
indices=()
for i in "${!GAME_LIST[@]}"; do
  game=${GAME_LIST[$i]}
  [[ "$wanted" == *" $game "* ]] || continue
  if done_game "$RUNS" "$game"; then echo "$game: done"; else indices+=("$i"); fi
done

run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "$@" >&2; echo >&2; echo 0; else "$@"; fi
}

# shellcheck disable=SC2086  # SBATCH_ARGS is a list of options
common=(--parsable --chdir="$REPO" --output="$RUNS/slurm/%x_%A_%a.out" ${SBATCH_ARGS:-})
dependency=()
if ((${#indices[@]})); then
  array=$(IFS=,; echo "${indices[*]}")
  job=$(run sbatch "${common[@]}" --array="$array" --export=ALL,REPO="$REPO" \
    "$REPO/experiments/slurm_atari100k.sh" task "$RUNS" "$@")
  job=${job%%;*}  # --parsable prints "id" or "id;cluster"
  echo "submitted array job $job: ${#indices[@]} game(s), array indices $array"
  dependency=(--dependency="afterok:$job")
else
  echo "all games done"
fi
wrap="$PYTHON -m experiments.tables --results=$(printf '%q' "$RUNS") --out=$(printf '%q' "$RUNS/tables")"
if [[ -n "${GAMES:-}" ]]; then wrap+=" --allow_missing"; fi  # a subset of the games: tables over those
tables=$(run sbatch --parsable --chdir="$REPO" --output="$RUNS/slurm/%x_%j.out" --job-name=jedi_tables \
  --gres=none --time=01:00:00 ${SBATCH_ARGS:-} "${dependency[@]}" \
  --wrap="$wrap")
echo "submitted tables job ${tables%%;*}"
