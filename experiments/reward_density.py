"""How often the uniform-random policy is rewarded in each game's training envs: a cheap way to choose the
games a small budget can learn from.

A world model can only learn to predict the rewards the replay holds, and the first replay is random play
(`schedule.initial_steps`): a game whose random play is almost never rewarded leaves the reward model nothing
to learn at first, and imagination then gives the policy no signal. For each game this steps the preset's
training envs (life loss ends an episode, as in training) with uniform random actions and counts the steps
with a positive and with a negative reward (`jedi_jax.diagnostics.reward_counts`).

Rewards alone are not enough: the policy learns from imagined rewards only where they depend on its actions.
`--max_lag=L` also measures, from the same steps, how many bits the action taken 0..L steps before tells about
the sign of the reward (`jedi_jax.diagnostics.action_reward_information`), with the value expected by chance:

  python -m experiments.reward_density --preset=atari_cpu --steps=2000 --json=results/atari_cpu/reward_density.json
  python -m experiments.reward_density --preset=atari_cpu --steps=8000 --max_lag=3 \
      --json=results/atari_cpu/action_reward.json

`--cycle=1,1,1,4,4,4` repeats a fixed action sequence instead of the random policy: what a pattern pays.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags

_GAMES = flags.DEFINE_list("games", None, "Games (default: the 26 Atari100k games).")
_PRESET = flags.DEFINE_string("preset", "atari_cpu", "Preset whose env settings to use.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Random agent steps per game (over the preset's train envs).",
                              lower_bound=1)
_MAX_LAG = flags.DEFINE_integer("max_lag", -1, "Also measure the information between the action taken 0..max_lag "
                                "steps before and the reward's sign (-1: not measured).", lower_bound=-1)
_CYCLE = flags.DEFINE_list("cycle", None, "Instead of random actions, repeat this sequence of action indices "
                           "(e.g. 1,1,1,4,4,4) in every env.")
_SEED = flags.DEFINE_integer("seed", 0, "Env and action seed.")
_JSON = flags.DEFINE_string("json", None,
                            "Write {game: {steps, positive, negative, num_actions[, action_reward]}} here.")


def main(argv):
  del argv
  from jedi_jax import config as config_lib
  from jedi_jax import diagnostics
  from jedi_jax import envs
  games = _GAMES.value or list(envs.GAMES)
  try:
    cycle = tuple(int(a) for a in _CYCLE.value) if _CYCLE.value else None
  except ValueError:
    sys.exit(f"error: --cycle must be action indices separated by commas, got {','.join(_CYCLE.value)!r}")
  if cycle is not None and _MAX_LAG.value >= 0:
    sys.exit("error: --max_lag measures the random policy's actions; it cannot be combined with --cycle")
  backend = config_lib.get_config(_PRESET.value).env.backend
  for game in games:
    envs.check_game(game, backend)
  table = {}
  lags = range(_MAX_LAG.value + 1)
  info_head = "".join(f" I(a[t-{lag}]; r[t]) mbit |" for lag in lags)
  chance_head = " chance mbit |" if lags else ""
  print(f"| game | actions | rewarded steps (+ / -) per 1,000 steps |{info_head}{chance_head}\n"
        f"|---|---|---|{'---|' * (len(lags) + bool(lags))}")
  for game in games:
    config = config_lib.get_config(_PRESET.value)
    config.game, config.seed = game, _SEED.value
    t0 = time.time()
    try:
      table[game] = counts = diagnostics.reward_counts(config_lib.freeze(config), _STEPS.value, _SEED.value,
                                                       max_lag=_MAX_LAG.value, cycle=cycle)
    except ValueError as e:
      sys.exit(f"error: {e}")
    per_k = 1000 / counts["steps"]
    info = counts.get("action_reward", [])
    info_cols = "".join(f" {1000 * row['bits']:.1f} |" for row in info)
    chance = f" {1000 * info[0]['bias_bits']:.1f} |" if info else ""
    print(f"| {game} | {counts['num_actions']} | {(counts['positive'] + counts['negative']) * per_k:.1f} "
          f"({counts['positive'] * per_k:.1f} / {counts['negative'] * per_k:.1f}) |{info_cols}{chance}  "
          f"({time.time() - t0:.0f} s)", flush=True)
  if _JSON.value:
    os.makedirs(os.path.dirname(_JSON.value) or ".", exist_ok=True)
    with open(_JSON.value, "w") as f:
      policy = f"cycle {list(cycle)}" if cycle else "uniform random"
      json.dump({"preset": _PRESET.value, "policy": policy, "seed": _SEED.value, "games": table}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
