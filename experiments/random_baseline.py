"""The uniform-random policy's score under the exact test protocol of a trained run.

Same test envs (full games, no life-loss ends, up to 30 no-ops, 27k-step cap), same env seeds per run seed,
same per-env episode quota as `jedi_jax.evaluate.evaluate`; only the policy differs. One JSON per game:

  python -m experiments.random_baseline --games=Boxing,RoadRunner --seeds=0,1 --out=results/random
  python -m experiments.random_baseline --games=Catch --seeds=0 --preset=catch --out=results/catch/random

`--actions=2,4` plays uniformly over those actions instead (repeat one to weight it): what a fixed action bias
scores under the same protocol, e.g. UpNDown's UP and UPFIRE against all six actions:

  python -m experiments.random_baseline --games=UpNDown --preset=atari_cpu --actions=2,4 --out=results/atari_cpu/biased
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags

_GAMES = flags.DEFINE_list("games", ["Boxing"], "Atari100k games (or pure-JAX games such as Catch with "
                           "a preset on env.backend 'jax', e.g. --preset=catch).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Run seeds: each picks the test env seeds of that run seed.")
_PRESET = flags.DEFINE_string("preset", "atari100k", "Preset whose env/test settings to use.")
_EPISODES = flags.DEFINE_integer("episodes", None, "Test games per seed (default: the preset's).")
_OUT = flags.DEFINE_string("out", "results/random", "Output directory (one <game>.json each; with --actions, "
                           "<game>_actions_<list>.json).")
_ACTIONS = flags.DEFINE_list("actions", None, "Play uniformly over these action indices (repeats weight an action) "
                             "instead of over all of the game's actions.")


def main(argv):
  del argv
  import numpy as np
  from jedi_jax import config as config_lib
  from jedi_jax import envs, evaluate
  try:
    actions = None if _ACTIONS.value is None else [int(a) for a in _ACTIONS.value]
  except ValueError:
    sys.exit(f"error: --actions must be action indices separated by commas, got {','.join(_ACTIONS.value)!r}")
  backend = config_lib.get_config(_PRESET.value).env.backend
  for game in _GAMES.value:
    envs.check_game(game, backend)
    try:
      if actions is not None:
        envs.check_actions(game, envs.num_actions(game, backend), actions)
    except ValueError as e:
      sys.exit(f"error: {e}")
  os.makedirs(_OUT.value, exist_ok=True)
  for game in _GAMES.value:
    per_seed = {}
    for seed in map(int, _SEEDS.value):
      config = config_lib.get_config(_PRESET.value)
      config.game, config.seed = game, seed
      episodes = _EPISODES.value or config.env.num_test_episodes
      t0 = time.time()
      returns = evaluate.evaluate_random(config_lib.freeze(config), episodes, actions=actions)
      per_seed[str(seed)] = returns
      label = "random policy" if actions is None else f"actions {actions}"
      print(f"{game} seed {seed}: {label} {np.mean(returns):.2f} +- {np.std(returns):.2f} "
            f"over {len(returns)} games ({time.time() - t0:.0f} s)")
    all_returns = [r for rs in per_seed.values() for r in rs]
    policy = "uniform random" if actions is None else f"uniform over actions {actions}"
    out = {"game": game, "policy": policy, "preset": _PRESET.value,
           "score": float(np.mean(all_returns)), "score_std": float(np.std(all_returns)),
           "num_test_episodes": len(all_returns), "episode_returns_per_seed": per_seed}
    name = game if actions is None else f"{game}_actions_{'_'.join(map(str, actions))}"
    with open(os.path.join(_OUT.value, f"{name}.json"), "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  app.run(main)
