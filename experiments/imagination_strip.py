"""A picture of JEDI's imagination: real frames next to frames decoded from imagined latents.

Loads a run's newest checkpoint, fits the viewing-only decoder (`jedi_jax/decoder.py`) to frames of its
replay with the encoder frozen (training is untouched: nothing is written to the run), then imagines
`--horizon` steps open loop from real 4-frame starts with the recorded actions and writes

  * a PNG strip, three rows per example: real frames / decoded encoder latents (the decoder's own error) /
    decoded imagined latents;
  * an open-loop video grid, `<out>.gif`: real | imagined | |real - imagined| (grey, black = equal) side by
    side, one row per example, one frame per imagined step (`jedi_jax/videos.py:error_grid`).

  python -m experiments.imagination_strip --workdir=runs/cpu_Boxing_0 --out=docs/images/imagination_Boxing
"""

from __future__ import annotations

import functools
import os
import time

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (its newest checkpoint is used).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 1, "Seeds packed in that workdir (--num_seeds of train.py).")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "Which packed seed to show.")
_STEPS = flags.DEFINE_integer("decoder_steps", 3000, "Decoder training steps.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Decoder training batch (frames).")
_HORIZON = flags.DEFINE_integer("horizon", 15, "Imagined steps.")
_EXAMPLES = flags.DEFINE_integer("examples", 2, "Rollouts shown.")
_OUT = flags.DEFINE_string("out", None, "Output path without extension (.png and .gif are written).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  import jax
  import numpy as np
  from PIL import Image

  from jedi_jax import decoder as dec_lib
  from jedi_jax import run_files
  from jedi_jax import replay as replay_lib
  from jedi_jax import videos
  from jedi_jax import world_model

  cfg, state, epoch = run_files.load_run(_WORKDIR.value, _NUM_SEEDS.value)
  if _NUM_SEEDS.value > 1:
    state = jax.tree.map(lambda x: x[_SEED_INDEX.value], state)
  if cfg.wm.kind != "jedi":
    raise SystemExit("error: the pixel baseline needs no decoder; this script is for wm.kind=jedi runs")
  wm_params, replay = state.wm_params, state.replay
  print(f"{cfg.game}: checkpoint at epoch {epoch}, {int(state.env_steps)} env steps")
  key = jax.random.PRNGKey(_SEED.value)

  # 1. Fit the decoder on replay frames (encoder frozen).
  optimizer = dec_lib.decoder_optimizer()
  key, k_init = jax.random.split(key)
  dec_params = dec_lib.init_decoder(k_init, world_model.state_shape(cfg))
  opt_state = optimizer.init(dec_params)

  @functools.partial(jax.jit, static_argnums=4)
  def train_chunk(dec_params, opt_state, wm_params, key, num):
    def one(carry, k):
      p, o = carry
      seg = replay_lib.sample_segments(replay, k, _BATCH.value, 1, weights=(1.0,), pad_after_end=False)
      p, o, loss = dec_lib.decoder_update(p, o, wm_params, seg.obs[:, 0], cfg, optimizer)
      return (p, o), loss
    (dec_params, opt_state), losses = jax.lax.scan(one, (dec_params, opt_state), jax.random.split(key, num))
    return dec_params, opt_state, losses.mean()

  t0, chunk = time.time(), 250
  for i in range(0, _STEPS.value, chunk):
    key, k = jax.random.split(key)
    dec_params, opt_state, loss = train_chunk(dec_params, opt_state, wm_params, k, chunk)
    print(f"decoder step {i + chunk}: pixel MSE {float(loss):.4f} ({time.time() - t0:.0f} s)", flush=True)

  # 2. Real segments of num_cond + horizon frames with every step real (no padding).
  k_seg, k_roll = jax.random.split(key)
  k_len = cfg.wm.num_cond + _HORIZON.value
  seg = replay_lib.sample_segments(replay, k_seg, 64, k_len - 1, weights=tuple(cfg.replay.sample_weights),
                                   pad_after_end=False)
  full = np.nonzero(np.asarray(seg.mask).all(axis=1))[0][:_EXAMPLES.value]
  if len(full) == 0:
    raise SystemExit("error: no unpadded segment found in the replay")
  obs, act = seg.obs[full], seg.act[full]

  # 3. Imagine open loop with the recorded actions; decode imagined and encoded latents.
  imagined = jax.jit(lambda o, a, k: dec_lib.open_loop_rollout(wm_params, o, a, k, cfg))(obs, act, k_roll)
  real = np.asarray(obs[:, cfg.wm.num_cond:])
  recon = np.asarray(dec_lib.decode(dec_params, world_model.encode(wm_params, obs[:, cfg.wm.num_cond:], cfg)))
  dream = np.asarray(dec_lib.decode(dec_params, imagined))
  err_recon = np.abs(recon.astype(float) - real).mean()
  err_dream = np.abs(dream.astype(float) - real).mean(axis=(0, 2, 3, 4))
  print(f"mean abs pixel error: reconstruction {err_recon:.1f}; imagined step 1 {err_dream[0]:.1f}, "
        f"step {len(err_dream)} {err_dream[-1]:.1f} (of 255)")

  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  rows = [r for e in range(len(full)) for r in (real[e], recon[e], dream[e])]
  strip = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
  Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(
      _OUT.value + ".png")
  videos.write_gif(_OUT.value + ".gif", videos.error_grid(real, dream), fps=4, scale=3)
  print(f"wrote {_OUT.value}.png (rows per example: real / decoded encoder latents / decoded imagination) "
        f"and {_OUT.value}.gif (real | imagined | |error|, one frame per step)")


if __name__ == "__main__":
  app.run(main)
