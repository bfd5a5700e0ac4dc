"""How much an action changes an Atari game, and how much a run's world model says it does.

`wm/action_sensitivity` says how far the dynamics' samples move when the action changes; it does not say how
far they should. This plays the real game (ale-py under the Atari100k protocol: frame skip 4 with max-pool,
64x64 INTER_AREA, no sticky actions) with the uniform random policy, and at `--points` states clones the
emulator and holds each action of the minimal set for `--horizon` agent steps from the same state. Per step h
of those branches it reports, as RMS differences between actions (over all pairs of actions and all points):

  * pixels:      between the real frames (0-255), beside the real frames' change over one step;
  * real latent: between the run's encodings of the real frames, over the latents' std (the scale of
                 `wm/action_sensitivity`);
  * model:       between the dynamics' own open-loop rollouts from the same real context with the action held
                 (`diagnostics.make_fixed_action_rollout`, the same noise for every action), same scale;
  * model error: RMS(rollout - encoded real frame) over the latents' std, averaged over actions;
  * gain:        RMS(rollout under a - real frames under a') over RMS(rollout under a - real frames under a),
                 minus 1, over all pairs a != a' (`wm/action_error_gain` over h steps): above 0 when the
                 rollouts differ by action as the game does, about 0 when they ignore it or differ otherwise.

A model whose `model` column stays far below `real latent` does not show the action as the game does; a
`real latent` far below the pixel effect says that the encoder hides it.

  python -m experiments.action_effect --workdir=runs/atari_cpu/UpNDown_0 --points=64 --horizon=10 \
      --json=results/atari_cpu/runs/UpNDown_seed_0/action_effect.json
  python -m experiments.action_effect --preset=atari_cpu --game=Boxing   # no run: untrained model

Nothing in the workdir is written.
"""

from __future__ import annotations

import json
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (its newest checkpoint's world model and "
                               "game). Without it, --preset and --game with an untrained world model.")
_PRESET = flags.DEFINE_string("preset", "atari_cpu", "Config preset when there is no --workdir.")
_GAME = flags.DEFINE_string("game", None, "Atari100k game when there is no --workdir (default: the preset's).")
_POINTS = flags.DEFINE_integer("points", 64, "States to branch from.", lower_bound=1)
_GAP = flags.DEFINE_integer("gap", 25, "Random agent steps between two branch points.", lower_bound=1)
_HORIZON = flags.DEFINE_integer("horizon", 10, "Agent steps each action is held for.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Emulator, random policy and sampler seed.")
_JSON = flags.DEFINE_string("json", None, "Also write the table here.")


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax's restore messages
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jedi_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from jedi_jax import diagnostics  # pylint: disable=g-import-not-at-top
  from jedi_jax import envs  # pylint: disable=g-import-not-at-top
  from jedi_jax import run_files  # pylint: disable=g-import-not-at-top
  from jedi_jax import world_model  # pylint: disable=g-import-not-at-top
  from jedi_jax.envs import ale_env  # pylint: disable=g-import-not-at-top
  if _WORKDIR.value:
    cfg, state, epoch = run_files.load_run_or_exit(_WORKDIR.value)
    params = state.wm_params
  else:
    try:
      edited = config_lib.get_config(_PRESET.value)
    except (KeyError, ValueError) as e:
      sys.exit(f"error: {e}")
    edited.game = _GAME.value or edited.game
    cfg, epoch = config_lib.freeze(edited), None
  try:
    envs.check_game(cfg.game, "ale")
  except ValueError as e:
    sys.exit(f"error: {e} (this tool plays the real Atari game)")
  k = cfg.wm.num_cond
  data = ale_env.branch_points(cfg.game, _POINTS.value, _GAP.value, _HORIZON.value, k, _SEED.value)
  num_actions, n, horizon = data["branches"].shape[:3]
  if not _WORKDIR.value:
    params = world_model.init_world_model(cfg, num_actions, jax.random.key(_SEED.value))
  encode = jax.jit(lambda p, x: world_model.encode(p, x, cfg).astype(np.float32))
  cond = np.asarray(encode(params, data["obs"]))
  real = np.asarray(encode(params, data["branches"].reshape((num_actions * n,) + data["branches"].shape[2:])))
  real = real.reshape((num_actions, n, horizon) + real.shape[2:])
  rollout = diagnostics.make_fixed_action_rollout(cfg, horizon)
  key = jax.random.key(_SEED.value + 1)
  model = np.stack([np.asarray(rollout(params, cond, data["act"], a, key)) for a in range(num_actions)])
  spread = float(np.std(cond))
  current = data["obs"][:, -1].astype(np.float64)
  model_to_real = diagnostics.branch_distances(model, real)
  table = {
      "pixels": diagnostics.action_spread(data["branches"], 1.0).tolist(),
      "pixel_step": float(np.sqrt(np.mean(np.square(data["branches"][:, :, 0] - current[None])))),
      "real_latent": diagnostics.action_spread(real, spread).tolist(),
      "model": diagnostics.action_spread(model, spread).tolist(),
      "model_error": (np.sqrt(np.mean(np.diagonal(model_to_real), axis=-1)) / spread).tolist(),
      "gain": diagnostics.cross_action_gain(model, real).tolist(),
  }
  source = f"checkpoint of epoch {epoch}" if _WORKDIR.value else "untrained world model"
  print(f"{cfg.game}, {source}: {n} branch points, {num_actions} actions held for {horizon} steps; one real step "
        f"changes the frame by {table['pixel_step']:.2f} (RMS, 0-255)")
  print("| step | pixels (RMS, 0-255) | real latent (/ std) | model (/ std) | model error (/ std) | gain |\n"
        "|---|---|---|---|---|---|")
  for h in range(horizon):
    print(f"| {h + 1} | {table['pixels'][h]:.2f} | {table['real_latent'][h]:.3f} | {table['model'][h]:.3f} "
          f"| {table['model_error'][h]:.3f} | {table['gain'][h]:+.3f} |")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"workdir": _WORKDIR.value, "game": cfg.game, "epoch": epoch, "points": n, "gap": _GAP.value,
                 "seed": _SEED.value, "latent_std": spread, **table}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
