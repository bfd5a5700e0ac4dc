"""What imagination offers each action: a run's world model and actor-critic on real states of its replay.

The actor-critic learns only from what one imagined step does differently under each action. This takes the
newest checkpoint of a run, draws `--states` real states among the newest `--last` steps of its replay, and,
per action a (same sampler noise for every action), samples the next state s'_a, reads the reward/end model on
(s, a, s'_a) and the critic on s'_a (`diagnostics.make_action_probe`). Per action it prints the policy's mean
probability, the imagined P(r = +1), P(end), the one-step action value q = E[r] + gamma (1 - P(end)) V(s'_a),
its advantage over the policy's mean (with its standard error over states), the share of states where the action has the highest q, and, from the
same replay window, the real share of the action and the real rates of positive rewards and of ends on the
steps that took it (on-policy data: what a reward/end model that reads the action can learn, cause or
coincidence):

  python -m experiments.action_probe --workdir=runs/atari_cpu/UpNDown_1 \
      --json=results/atari_cpu/runs/UpNDown_seed_1/action_probe.json

Nothing in the workdir is written.
"""

from __future__ import annotations

import json
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (its newest checkpoint is read).")
_STATES = flags.DEFINE_integer("states", 512, "Real states to probe.", lower_bound=1)
_LAST = flags.DEFINE_integer("last", 2000, "Draw the states from the newest this many env steps of each env.",
                             lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 64, "States per compiled call.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "State choice and sampler seed.")
_JSON = flags.DEFINE_string("json", None, "Also write the table here.")
flags.mark_flags_as_required(["workdir"])

COLUMNS = (("policy", "pi(a)", "{:.3f}"), ("reward_pos", "P(r=+1)", "{:.4f}"), ("reward_neg", "P(r=-1)", "{:.4f}"),
           ("end", "P(end)", "{:.4f}"), ("q", "q", "{:.4f}"), ("advantage", "q - E_pi q", "{:+.4f}"), ("advantage_se", "(s.e.)", "{:.4f}"),
           ("best", "best q (share)", "{:.2f}"), ("replay_share", "real share", "{:.3f}"),
           ("replay_reward_pos", "real P(r>0 | a)", "{:.4f}"), ("replay_end", "real P(end | a)", "{:.4f}"))


def replay_by_action(replay, num_actions: int, last: int) -> dict:
  """Over the newest `last` steps of each env in `replay` (training rows only): the share of each action, and
  the rates of positive rewards and of training ends (life losses) on the steps that took it."""
  import numpy as np
  act, rew, end, episode = (np.asarray(x) for x in (replay.act, replay.rew, replay.end, replay.episode_id))
  capacity, written = act.shape[1], int(replay.t)
  slots = np.arange(max(0, written - capacity, written - last), written) % capacity
  valid = (episode[:, slots] >= 0).ravel()
  a, r, e = (x[:, slots].ravel()[valid] for x in (act, rew, end))
  counts = np.bincount(a, minlength=num_actions)
  rate = lambda hit: [h / c if c else float("nan")
                      for h, c in zip(np.bincount(a, weights=hit.astype(np.float64), minlength=num_actions), counts)]
  return {"replay_share": (counts / max(len(a), 1)).tolist(), "replay_reward_pos": rate(r > 0),
          "replay_end": rate(e)}


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax's restore messages
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jedi_jax import diagnostics  # pylint: disable=g-import-not-at-top
  from jedi_jax import play  # pylint: disable=g-import-not-at-top
  from jedi_jax import run_files  # pylint: disable=g-import-not-at-top
  cfg, state, epoch = run_files.load_run_or_exit(_WORKDIR.value)
  names = play.action_names(cfg.game, cfg.env.backend)
  k = cfg.wm.num_cond
  rows = diagnostics.transition_rows(state.replay, k, _STATES.value, np.random.default_rng(_SEED.value),
                                     last=_LAST.value)
  if not rows:
    print(f"error: no {k}-step window of one episode among the newest {_LAST.value} steps of the replay",
          file=sys.stderr)
    sys.exit(1)
  out = diagnostics.probe_rows(diagnostics.make_action_probe(cfg), (state.wm_params, state.ac_params),
                               state.replay, rows, k, _BATCH.value,
                               lambda start: jax.random.key(_SEED.value * 1_000_003 + start))
  table = {**diagnostics.summarize_action_probe(out), **replay_by_action(state.replay, len(names), _LAST.value)}
  print(f"{cfg.game} seed {cfg.seed}, checkpoint of epoch {epoch}: {len(rows)} real states of the newest "
        f"{_LAST.value} steps, one imagined step per action ({cfg.sampler.num_steps} sampler steps)")
  print("| action | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
  print("|---|" + "---|" * len(COLUMNS))
  for i, name in enumerate(names):
    print(f"| {name} | " + " | ".join(fmt.format(table[key][i]) for key, _, fmt in COLUMNS) + " |")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"workdir": _WORKDIR.value, "game": cfg.game, "seed": cfg.seed, "epoch": epoch,
                 "states": len(rows), "last": _LAST.value, "actions": names, **table}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
