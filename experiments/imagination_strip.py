"""A picture of a world model's imagination: real frames next to imagined ones, as a PNG strip and a GIF grid.

Loads a run's newest checkpoint and imagines `--horizon` steps open loop from real starts of its replay with
the recorded actions (`jedi_jax/videos.py:write_imagination_strip`). JEDI's latents are viewed through the
viewing-only decoder, fitted here to replay frames with the encoder frozen (nothing is written to the run's
checkpoints); the pixel baseline (`wm.kind=diamond`) shows its own frames. It writes

  * `<out>.png`, three rows per example: real frames / the encoder's latents of them, viewed (the decoder's
    own error; the frames themselves for the pixel baseline) / imagined states, viewed;
  * `<out>.gif`, the open-loop video grid: real | imagined | |real - imagined| (grey, black = equal) side by
    side, one row per example, one frame per imagined step (`jedi_jax/videos.py:error_grid`);
  * when the run logs to Weights & Biases (its `run.wandb_project`, or `--wandb_project`), both into the
    run's own W&B run (resumed through `<workdir>/wandb_run_id`) as `imagination/open_loop` (video) and
    `imagination/strip` (image).

  python -m experiments.imagination_strip --workdir=runs/cpu_Boxing_0 --out=docs/images/imagination_Boxing
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from jedi_jax import videos

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (its newest checkpoint is used).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 1, "Seeds packed in that workdir (--num_seeds of train.py).")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "Which packed seed to show.")
_STEPS = flags.DEFINE_integer("decoder_steps", 3000, "Viewing-decoder training steps (JEDI runs).", lower_bound=0)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Viewing-decoder training batch (frames).", lower_bound=1)
_HORIZON = flags.DEFINE_integer("horizon", 15, "Imagined steps.", lower_bound=1)
_EXAMPLES = flags.DEFINE_integer("examples", 2, "Rollouts shown.", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Output path without extension (.png and .gif are written).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_WANDB = flags.DEFINE_string("wandb_project", None,
                             "W&B project to send the strip and grid to (default: the run's run.wandb_project; "
                             "empty: none).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  try:
    videos.write_imagination_strip(_WORKDIR.value, _OUT.value, num_seeds=_NUM_SEEDS.value,
                                   seed_index=_SEED_INDEX.value, decoder_steps=_STEPS.value,
                                   batch_size=_BATCH.value, horizon=_HORIZON.value, examples=_EXAMPLES.value,
                                   seed=_SEED.value, wandb_project=_WANDB.value)
  except (ValueError, RuntimeError) as e:  # a bad workdir (checkpoint.WorkdirError), no full segment
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
