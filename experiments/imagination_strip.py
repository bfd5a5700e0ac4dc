"""A picture of a world model's imagination: real frames next to imagined ones, as a PNG strip and a GIF grid.

Loads a run's newest checkpoint and imagines `--horizon` steps open loop from real starts of its replay with
the recorded actions (`jedi_jax/decoder.py:open_loop_frames`). JEDI's latents are viewed through the
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

import os
import sys

from absl import app
from absl import flags

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


def write_strip(workdir: str, out: str, *, num_seeds: int = 1, seed_index: int = 0, decoder_steps: int = 3000,
                batch_size: int = 32, horizon: int = 15, examples: int = 2, seed: int = 0,
                wandb_project: str | None = None, log=print) -> tuple[str, str]:
  """Writes `out`.png and `out`.gif for the run in `workdir` (and sends them to W&B, see the module
  docstring); returns their paths."""
  import jax
  import numpy as np
  from PIL import Image

  from jedi_jax import config as config_lib
  from jedi_jax import decoder
  from jedi_jax import logs
  from jedi_jax import run_files
  from jedi_jax import videos

  cfg, state, epoch = run_files.load_run(workdir, num_seeds)
  if num_seeds > 1:
    state = jax.tree.map(lambda x: x[seed_index], state)
  log(f"{cfg.game} ({cfg.wm.kind}): checkpoint at epoch {epoch}, {int(state.env_steps)} env steps")
  frames = decoder.open_loop_frames(state.wm_params, state.replay, jax.random.PRNGKey(seed), cfg, horizon=horizon,
                                    examples=examples, decoder_steps=decoder_steps, batch_size=batch_size, log=log)
  real, recon, dream = (np.asarray(frames[k]) for k in ("real", "recon", "dream"))
  err_recon = np.abs(recon.astype(float) - real).mean()
  err_dream = np.abs(dream.astype(float) - real).mean(axis=(0, 2, 3, 4))
  log(f"mean abs pixel error: reconstruction {err_recon:.1f}; imagined step 1 {err_dream[0]:.1f}, "
      f"step {len(err_dream)} {err_dream[-1]:.1f} (of 255)")

  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  rows = [r for e in range(len(real)) for r in (real[e], recon[e], dream[e])]
  strip = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
  png, gif = out + ".png", out + ".gif"
  Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(png)
  videos.write_gif(gif, videos.error_grid(real, dream), fps=4, scale=3)
  log(f"wrote {png} (rows per example: real / encoded / imagined, viewed) and {gif} "
      "(real | imagined | |error|, one frame per step)")

  project = cfg.run.wandb_project if wandb_project is None else wandb_project
  if project:
    run = logs.start_wandb(project, workdir, config_lib.to_dict(cfg))
    try:
      logs.log_media({"imagination/open_loop": gif, "imagination/strip": png})
    finally:
      run.finish()
    log(f"sent both to W&B project {project} (the run's id: {os.path.join(workdir, logs.WANDB_ID_FILE)})")
  return png, gif


def main(argv):
  del argv
  try:
    write_strip(_WORKDIR.value, _OUT.value, num_seeds=_NUM_SEEDS.value, seed_index=_SEED_INDEX.value,
                decoder_steps=_STEPS.value, batch_size=_BATCH.value, horizon=_HORIZON.value,
                examples=_EXAMPLES.value, seed=_SEED.value, wandb_project=_WANDB.value)
  except (ValueError, RuntimeError) as e:  # a bad workdir (checkpoint.WorkdirError), no full segment
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
