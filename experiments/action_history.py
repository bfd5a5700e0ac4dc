"""What a run's policy played, window by window, from the actions its newest checkpoint's replay holds.

`ac/policy_entropy` says how far the policy is from uniform, not toward which action: a policy at 2.4 bits of
UpNDown's 2.58 can score a third of random play or three times it (docs/results.md, "Atari on this CPU").
This prints, per window of env steps, the share of each action among the collected steps (the initial random
steps first), the entropy of that share and the real reward and end rates, and writes them as JSON:

  python -m experiments.action_history --workdir=runs/atari_cpu/UpNDown_1 --window=1000 \
      --json=results/atari_cpu/runs/UpNDown_seed_1/action_history.json

Nothing in the workdir is written. A replay keeps its newest `replay.capacity` rows per env, so a run longer
than that shows its last steps only.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (its newest checkpoint is read).")
_WINDOW = flags.DEFINE_integer("window", 1000, "Env steps per window.", lower_bound=1)
_JSON = flags.DEFINE_string("json", None, "Also write the table here.")
flags.mark_flags_as_required(["workdir"])


def format_table(names: list[str], table: list[dict]) -> str:
  """A Markdown table: one row per window, one column per action (percent of the window's steps)."""
  head = ["env steps", *names, "entropy (bits)", "reward +/step", "end/step"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for w in table:
    cells = [f"{w['first_step']}-{w['last_step']}", *(f"{100 * f:.0f}" for f in w["action_fraction"]),
             f"{w['action_entropy_bits']:.2f}", f"{w['reward_rate_pos']:.3f}", f"{w['end_rate']:.4f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax's restore messages
  from jedi_jax import diagnostics  # pylint: disable=g-import-not-at-top
  from jedi_jax import play  # pylint: disable=g-import-not-at-top
  from jedi_jax import run_files  # pylint: disable=g-import-not-at-top
  cfg, state, epoch = run_files.load_run_or_exit(_WORKDIR.value)
  names = play.action_names(cfg.game, cfg.env.backend)
  table = diagnostics.action_history(state.replay, len(names), _WINDOW.value)
  print(f"{cfg.game} seed {cfg.seed}, checkpoint of epoch {epoch}: collected actions (% of each window's steps)")
  print(format_table(names, table))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"workdir": _WORKDIR.value, "game": cfg.game, "seed": cfg.seed, "epoch": epoch,
                 "actions": names, "windows": table}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
