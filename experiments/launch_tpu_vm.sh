#!/usr/bin/env bash
# Train one game on a Cloud TPU VM slice (every host runs the same command; data parallel over all chips).
#
#   experiments/launch_tpu_vm.sh TPU_NAME ZONE GAME SEED [extra flags...]
#
# Assumes this repository is checked out at ~/jedi_jax on every worker (e.g. with
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="git clone ... ~/jedi_jax").
set -euo pipefail
TPU=$1; ZONE=$2; GAME=$3; SEED=$4; shift 4
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  set -e
  cd ~/jedi_jax
  python3 -m venv .venv && . .venv/bin/activate
  pip install -q -r requirements-tpu.txt
  python -m experiments.train --multihost --game=$GAME --seed=$SEED --workdir=\$HOME/runs/${GAME}_${SEED} \
    --config.parallel.num_devices=0 $*
"
