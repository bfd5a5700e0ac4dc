r"""Do the world-model losses keep their statistics when one encoder pass serves both (wm.share_encoder_pass)?

  python -m experiments.shared_pass_statistics --workdir=runs/catch_0 --batches=400 [--json=PATH]

Takes a trained run's newest checkpoint (its params and replay, fixed), draws `--batches` world-model batches
with the dynamics segment drawn separately (DIAMOND's trainer, the default) and with the dynamics window taken
inside the reward/end segment (`wm.share_encoder_pass`), and evaluates the loss on each (no update). Batch i of
both modes uses the same keys: the reward/end segments, the noise levels and the noise are the same, only the
dynamics windows differ. Printed per metric: mean and standard deviation over batches in each mode, the
difference of the means in standard errors (unpaired and paired) and the ratio of the standard deviations with
its sampling error (~1 / sqrt(2 (N - 1)) for normal data). docs/benchmarks.md, "Sharing one encoder pass",
records what it gave.
"""

from __future__ import annotations

import json
import math
import os

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax import config as config_lib
from jedi_jax import run_files
from jedi_jax import train
from jedi_jax import world_model as wm

METRICS = ("loss_denoising", "loss_denoising_0", "loss_denoising_1", "loss_rew", "loss_end", "latent_std",
           "dynamics_target_real")

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir (its newest checkpoint is read, not changed).")
_BATCHES = flags.DEFINE_integer("batches", 400, "Batches per mode.", lower_bound=2)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Segments per batch (default: the run's).")
_JSON = flags.DEFINE_string("json", None, "Write the figures here.")
flags.mark_flag_as_required("workdir")


def batch_metrics(cfg, wm_params, replay, batch_size: int, keys: jax.Array) -> dict:
  """{metric: [N]} of the world-model loss on N batches (keys [N]) sampled as `cfg` samples them."""
  def one(key):
    k_batch, k_loss = jax.random.split(key)
    batch = train.sample_world_model_batch(replay, k_batch, batch_size, cfg)
    _, m = wm.world_model_loss(wm_params, batch, k_loss, cfg)
    n = cfg.wm.num_cond
    m["dynamics_target_real"] = jnp.mean(batch.dynamics.mask[:, n:])
    return {k: m[k] for k in METRICS if k in m}
  return jax.jit(lambda ks: jax.lax.map(one, ks))(keys)


def compare(separate: dict, shared: dict) -> dict:
  out = {}
  for k in separate:
    a, b = np.asarray(separate[k], np.float64), np.asarray(shared[k], np.float64)
    n = len(a)
    se = math.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
    d = b - a
    se_paired = d.std(ddof=1) / math.sqrt(n)
    out[k] = {"separate_mean": a.mean(), "shared_mean": b.mean(), "separate_std": a.std(ddof=1),
              "shared_std": b.std(ddof=1),
              "mean_difference_in_se": (b.mean() - a.mean()) / se if se > 0 else 0.0,
              "paired_difference_in_se": d.mean() / se_paired if se_paired > 0 else 0.0,
              "std_ratio": b.std(ddof=1) / a.std(ddof=1) if a.std() > 0 else 1.0,
              "std_ratio_sampling_error": 1.0 / math.sqrt(2 * (n - 1))}
  return out


def main(argv):
  del argv
  cfg, state, epoch = run_files.load_run(_WORKDIR.value, log=lambda _: None)
  b = _BATCH_SIZE.value or cfg.optim.batch_size
  keys = jax.random.split(jax.random.PRNGKey(2026), _BATCHES.value)
  results = {}
  for share in (False, True):
    c = config_lib.to_config_dict(cfg)
    c.wm.share_encoder_pass = share
    results["shared" if share else "separate"] = jax.device_get(
        batch_metrics(config_lib.freeze(c), state.wm_params, state.replay, b, keys))
  table = compare(results["separate"], results["shared"])
  print(f"{_WORKDIR.value} (preset {cfg.preset}, {cfg.game}, epoch {epoch}, wm.kind {cfg.wm.kind}): "
        f"{_BATCHES.value} batches of {b} per mode")
  print(f"{'metric':22s}{'separate mean':>14s}{'shared mean':>13s}{'diff/SE':>9s}{'paired/SE':>10s}"
        f"{'sep. std':>10s}{'shared std':>11s}{'std ratio':>10s}")
  for k, r in table.items():
    print(f"{k:22s}{r['separate_mean']:14.4f}{r['shared_mean']:13.4f}{r['mean_difference_in_se']:9.2f}"
          f"{r['paired_difference_in_se']:10.2f}{r['separate_std']:10.4f}{r['shared_std']:11.4f}"
          f"{r['std_ratio']:7.3f}+-{r['std_ratio_sampling_error']:.3f}")
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump({"workdir": _WORKDIR.value, "preset": cfg.preset, "game": cfg.game, "epoch": int(epoch),
                 "batches": _BATCHES.value, "batch_size": b, "metrics": table}, f, indent=1, sort_keys=True)


if __name__ == "__main__":
  app.run(main)
