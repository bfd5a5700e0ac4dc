"""Where the latent clamp sits, measured on a trained run: open-loop rollouts under each `wm.prediction_clamp`.

From real replay segments, the trained world model imagines `--horizon` latents open loop (the recorded actions,
its own predictions as context: `decoder.open_loop_rollout`, the sampling of imagination), once per clamp of
denoised estimates ("clip", "tanh", "none"; same params, segments and noise). For each horizon step it prints
the RMS error against the encoder's latents of the true frames, over their spread, and the mean magnitude of the
imagined latents over the true ones (below 1: the rollout shrinks towards 0).

  python -m experiments.clamp_ablation --workdir=runs/catch_0 --horizon=5
"""

from __future__ import annotations

import json

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir (JEDI).")
_HORIZON = flags.DEFINE_integer("horizon", 15, "Imagined steps.")
_NUM_SEGMENTS = flags.DEFINE_integer("num_segments", 128, "Real segments to start from.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the segment draw and the sampler noise.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the figures.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jedi_jax import config as config_lib
  from jedi_jax import decoder
  from jedi_jax import replay as replay_lib
  from jedi_jax import run_files
  from jedi_jax import world_model

  cfg, state, epoch = run_files.load_run(_WORKDIR.value)
  if cfg.wm.kind != "jedi":
    raise SystemExit("error: the prediction clamp concerns latents; this run is the pixel baseline")
  k, h = cfg.wm.num_cond, _HORIZON.value
  key_seg, key_noise = jax.random.split(jax.random.PRNGKey(_SEED.value))
  seg = replay_lib.sample_segments(state.replay, key_seg, _NUM_SEGMENTS.value, k + h - 1,
                                   weights=tuple(cfg.replay.sample_weights), pad_after_end=False)
  frame_mask = seg.frame_mask
  true = world_model.encode(state.wm_params, seg.obs[:, k:], cfg)            # [B, H, *S]
  valid = np.asarray(frame_mask[:, k:], np.float32)                            # [B, H]
  spread = float(jnp.std(world_model.encode(state.wm_params, seg.obs, cfg, frame_mask)))
  print(f"{cfg.game}, checkpoint at epoch {epoch} ({int(state.env_steps)} env steps); {_NUM_SEGMENTS.value} "
        f"segments, horizon {h}; spread of encoder latents {spread:.3f}")

  figures = {}
  for clamp in ("clip", "tanh", "none"):
    c = config_lib.to_config_dict(cfg)
    c.wm.prediction_clamp = clamp
    c = config_lib.freeze(c)
    rollout = jax.jit(decoder.open_loop_rollout, static_argnums=4)(
        state.wm_params, seg.obs, jnp.where(seg.mask, seg.act, 0), key_noise, c)
    err = np.sqrt(np.asarray(jnp.mean(jnp.square(rollout - true).reshape(rollout.shape[:2] + (-1,)), -1)))
    mag = np.asarray(jnp.mean(jnp.abs(rollout).reshape(rollout.shape[:2] + (-1,)), -1))
    mag_true = np.asarray(jnp.mean(jnp.abs(true).reshape(true.shape[:2] + (-1,)), -1))
    w = np.maximum(valid.sum(0), 1.0)
    figures[clamp] = {
        "rms_error_over_spread": ((err * valid).sum(0) / w / spread).round(4).tolist(),
        "magnitude_ratio": ((mag * valid).sum(0) / np.maximum((mag_true * valid).sum(0), 1e-9)).round(4).tolist(),
        "max_abs": float(jnp.max(jnp.abs(rollout))),
    }
  print("| clamp | RMS error / spread at steps 1, mid, last | |imagined| / |true| at steps 1, mid, last | max |z| |")
  print("|---|---|---|---|")
  for clamp, f in figures.items():
    pick = lambda xs: ", ".join(f"{xs[i]:.3f}" for i in (0, len(xs) // 2, len(xs) - 1))  # noqa: E731
    print(f"| {clamp} | {pick(f['rms_error_over_spread'])} | {pick(f['magnitude_ratio'])} | {f['max_abs']:.2f} |")
  if _OUT.value:
    with open(_OUT.value, "w") as fh:
      json.dump({"workdir": _WORKDIR.value, "epoch": epoch, "horizon": h, "spread": spread, **figures}, fh,
                indent=1)


if __name__ == "__main__":
  app.run(main)
