r"""Can the world model learn a game's rewards? World-model updates alone on a random-policy replay.

Collects `--steps` agent steps with the random policy (epsilon 1) into a replay, then runs world-model
updates only, and every `--every` updates scores the reward/end heads on fresh replay segments (recall and
precision per reward class, `jedi_jax.diagnostics`) and probes the dynamics (`train.probe_world_model`, averaged
over `--probe_batches` batches, with its standard error: one batch is too noisy to rank settings by).
No actor-critic: this isolates the world model, the first suspect when an agent does not learn.

  python -m experiments.world_model_fit --preset=catch --updates=600 --every=100
  python -m experiments.world_model_fit --preset=catch --config.wm.kind=diamond

Prints one line per evaluation and writes them to `--out` (JSON lines) when given.
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from jedi_jax import config as config_lib

_PRESET = flags.DEFINE_enum("preset", "catch", sorted(config_lib.PRESETS), "Named config preset.")
_GAME = flags.DEFINE_string("game", None, "Game; default: the preset's.")
_STEPS = flags.DEFINE_integer("steps", 2_000, "Random-policy agent steps collected first.", lower_bound=1)
_UPDATES = flags.DEFINE_integer("updates", 600, "World-model updates.", lower_bound=1)
_EVERY = flags.DEFINE_integer("every", 100, "Updates between evaluations.", lower_bound=1)
_EVAL_BATCHES = flags.DEFINE_integer("eval_batches", 8, "Reward/end segment batches per evaluation.",
                                     lower_bound=1)
_PROBE_BATCHES = flags.DEFINE_integer(
    "probe_batches", 8, "Batches of `run.probe_batch_size` segments the dynamics probes average over per evaluation "
    "(their standard error is written beside each as `<name>_se`).", lower_bound=1)
_REWARD_PROBE = flags.DEFINE_integer(
    "reward_probe", 0, "At each evaluation, the reward model's mean P(true sign) on up to this many rewarded "
    "transitions per sign of the replay, with the true next frame and with a one-step sample of the dynamics "
    "(`diagnostics.make_reward_probe`, as experiments/reward_probe.py; keys `reward_probe_{pos,neg}_{true,"
    "sampled}`): whether the sampled next states hold the events that pay. 0: off.", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the envs, the parameters and the sampling.")
_OUT = flags.DEFINE_string("out", None, "JSON-lines file for the evaluations.")
_CONFIG = config_flags.DEFINE_config_dict("config", config_lib.catch(), "Overrides: --config.optim.lr=1e-3.")


def _config():
  config = config_lib.get_config(_PRESET.value)
  config_lib.set_fields(config, config_flags.get_override_values(flags.FLAGS["config"]))
  config.game = _GAME.value or config.game
  config.seed = _SEED.value
  config.replay.capacity = max(config.replay.capacity, _STEPS.value + 64)
  config_lib.validate(config)
  return config_lib.freeze(config)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jedi_jax import diagnostics
  from jedi_jax import loop
  from jedi_jax import train
  from jedi_jax import world_model

  cfg = _config()
  env = loop.make_train_env(cfg)
  env_state, env_step = env.functional(cfg.env.step_path)
  key = jax.random.key(cfg.seed)
  state = train.init_train_state(cfg, env.num_actions, key, env_state, jnp.copy(env_state.obs))
  collect = jax.jit(lambda s: train.collect(s, _STEPS.value, 1.0, env_step, cfg)[0])
  t0 = time.time()
  state = jax.block_until_ready(collect(state))
  counts = np.asarray(state.replay.rew_counts)
  print(f"collected {_STEPS.value} random steps in {time.time() - t0:.0f} s; reward classes (-, 0, +) "
        f"{counts.tolist()}", flush=True)

  update = jax.jit(lambda s: train.update_world_model(s, _EVERY.value, cfg), donate_argnums=0)

  @jax.jit
  def evaluate(state, key):
    def one(key):
      batch = train.sample_world_model_batch(state.replay, key, cfg.optim.batch_size, cfg)
      seg = batch.rew_end
      states = world_model.encode(state.wm_params, seg.obs, cfg, seg.frame_mask)
      _, metrics = world_model.rew_end_loss(state.wm_params, states, seg, cfg)
      return metrics
    metrics = jax.vmap(one)(jax.random.split(key, _EVAL_BATCHES.value))
    metrics = {k: (v.sum(0) if "count" in k or "hits" in k or "predicted" in k else v.mean(0))
               for k, v in metrics.items()}
    probes = jax.vmap(lambda k: train.probe_world_model(state.replace(key=k), cfg))(
        jax.random.split(jax.random.fold_in(key, 1), _PROBE_BATCHES.value))
    for name, v in probes.items():
      metrics[name] = v.mean()
      metrics[name + "_se"] = v.std() / np.sqrt(max(v.shape[0] - 1, 1))
    return metrics

  # Rewarded transitions of the (fixed) replay for the reward probe.
  probe_sets = {}
  if _REWARD_PROBE.value:
    reward_probe = diagnostics.make_reward_probe(cfg, 0)
    rng = np.random.default_rng(cfg.seed)
    for name, sign in (("pos", 1), ("neg", -1)):
      found = diagnostics.transition_rows(state.replay, cfg.wm.num_cond, _REWARD_PROBE.value, rng, sign=sign)
      if found:
        probe_sets[name] = (sign, found)

  def probe_rewards(state, key) -> dict:
    out = {}
    for name, (sign, found) in probe_sets.items():
      got = diagnostics.probe_rows(reward_probe, state.wm_params, state.replay, found, cfg.wm.num_cond,
                                   cfg.optim.batch_size, lambda start: jax.random.fold_in(key, start))
      for v in ("true", "sampled"):
        out[f"reward_probe_{name}_{v}"] = float(np.mean(got[v][:, sign + 1]))
    return out

  rows = []
  done = 0
  eval_key, probe_key = jax.random.key(cfg.seed + 1), jax.random.key(cfg.seed + 2)
  while done < _UPDATES.value:
    t0 = time.time()
    state, train_metrics = update(state)
    jax.block_until_ready(state)
    dt = time.time() - t0
    done += _EVERY.value
    m = {k: float(v) for k, v in evaluate(state, jax.random.fold_in(eval_key, done)).items()}
    m = diagnostics.rates_from_counts({f"wm/{k}": v for k, v in m.items()})
    row = {"updates": done, "seconds_per_update": dt / _EVERY.value,
           "train_loss_denoising": float(train_metrics["loss_denoising"]),
           "train_loss_rew": float(train_metrics["loss_rew"]),
           **{k: v for k, v in m.items() if any(s in k for s in (
               "loss_rew", "loss_end", "recall", "precision", "action_sensitivity", "action_error_gain",
               "latent_std", "sample_error"))},
           **probe_rewards(state, jax.random.fold_in(probe_key, done))}
    rows.append(row)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if _OUT.value:
      with open(_OUT.value, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
  env.close()


if __name__ == "__main__":
  app.run(main)
