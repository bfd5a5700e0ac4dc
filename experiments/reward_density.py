"""How often the uniform-random policy is rewarded in each game's training envs: a cheap way to choose the
games a small budget can learn from.

A world model can only learn to predict the rewards the replay holds, and the first replay is random play
(`schedule.initial_steps`): a game whose random play is almost never rewarded leaves the reward model nothing
to learn at first, and imagination then gives the policy no signal. For each game this steps the preset's
training envs (life loss ends an episode, as in training) with uniform random actions and counts the steps
with a positive and with a negative reward (`jedi_jax.diagnostics.random_reward_counts`):

  python -m experiments.reward_density --preset=atari_cpu --steps=2000 --json=results/atari_cpu/reward_density.json
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags

_GAMES = flags.DEFINE_list("games", None, "Games (default: the 26 Atari100k games).")
_PRESET = flags.DEFINE_string("preset", "atari_cpu", "Preset whose env settings to use.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Random agent steps per game (over the preset's train envs).",
                              lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Env and action seed.")
_JSON = flags.DEFINE_string("json", None, "Write {game: {steps, positive, negative, num_actions}} here.")


def main(argv):
  del argv
  from jedi_jax import config as config_lib
  from jedi_jax import diagnostics
  from jedi_jax import envs
  games = _GAMES.value or list(envs.GAMES)
  backend = config_lib.get_config(_PRESET.value).env.backend
  for game in games:
    envs.check_game(game, backend)
  table = {}
  print("| game | actions | rewarded steps (+ / -) per 1,000 random steps |\n|---|---|---|")
  for game in games:
    config = config_lib.get_config(_PRESET.value)
    config.game, config.seed = game, _SEED.value
    t0 = time.time()
    table[game] = counts = diagnostics.random_reward_counts(config_lib.freeze(config), _STEPS.value, _SEED.value)
    per_k = 1000 / counts["steps"]
    print(f"| {game} | {counts['num_actions']} | {(counts['positive'] + counts['negative']) * per_k:.1f} "
          f"({counts['positive'] * per_k:.1f} / {counts['negative'] * per_k:.1f}) |  ({time.time() - t0:.0f} s)")
  if _JSON.value:
    os.makedirs(os.path.dirname(_JSON.value) or ".", exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump({"preset": _PRESET.value, "policy": "uniform random", "seed": _SEED.value, "games": table}, f,
                indent=1)


if __name__ == "__main__":
  app.run(main)
