"""Why imagination pays fewer rewards than the game: the reward model on true, sampled and score-frozen next
states, at the rewarded transitions of a run's replay.

`wm/rew_recall_*` scores the reward/end model on encoded *true* next frames; imagination feeds it *sampled*
ones (`ac/imagined_reward_rate_*` against `collect/reward_rate_*`, docs/metrics.md). This takes the newest
checkpoint of a run, finds up to `--max_transitions` real transitions of each reward sign in its replay (with
`wm.num_cond` steps of the same episode before them), and gives the reward model's recall and mean
probability of the true sign class when the next state is

  * `true`:    the encoded true next frame (what `wm/rew_recall_*` measures);
  * `sampled`: a one-step sample of the dynamics from the same real context and action (what imagination does);
  * `frozen`:  the true next frame with its top `--frozen_rows` pixel rows copied from the frame before (in most
               Atari games the score line): a reward model that reads the score change misses these.

`sampled` far below `true` says that the dynamics do not produce the rewarding event; `frozen` far below
`true` says that the reward model reads the score rather than the event itself.

  python -m experiments.reward_probe --workdir=runs/Boxing_0 --frozen_rows=8 --json=results/reward_probe.json
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (its newest checkpoint is used).")
_MAX = flags.DEFINE_integer("max_transitions", 256, "Transitions per reward sign.", lower_bound=1)
_ROWS = flags.DEFINE_integer("frozen_rows", 8, "Top pixel rows (of 64) copied from the frame before.",
                             lower_bound=0, upper_bound=64)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Transitions per compiled call.", lower_bound=1)
_STEPS = flags.DEFINE_integer("sampler_steps", None, "Denoising steps of the `sampled` variant (default: the "
                              "run's sampler.num_steps).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Transition choice and sampler seed.")
_JSON = flags.DEFINE_string("json", None, "Write the table here as JSON.")
flags.mark_flags_as_required(["workdir"])

SIGNS = {"neg": -1, "zero": 0, "pos": 1}


def main(argv):
  del argv
  import jax
  import numpy as np
  from jedi_jax import diagnostics
  from jedi_jax import run_files
  config, state, epoch = run_files.load_run_or_exit(_WORKDIR.value)
  if _STEPS.value is not None:
    from jedi_jax import config as config_lib
    edited = config_lib.to_config_dict(config)
    edited.sampler.num_steps = _STEPS.value
    config = config_lib.freeze(edited)
  rng = np.random.default_rng(_SEED.value)
  probe = diagnostics.make_reward_probe(config, _ROWS.value)
  k = config.wm.num_cond
  table = {}
  print(f"{_WORKDIR.value}: checkpoint of epoch {epoch}, {config.game}, {config.sampler.num_steps} sampler steps")
  print("| reward sign | transitions | next state | recall | mean P(true sign) |\n|---|---|---|---|---|")
  for name, sign in SIGNS.items():
    rows = diagnostics.transition_rows(state.replay, k, _MAX.value, rng, sign=sign)
    if not rows:
      print(f"| {name} | 0 | | | |")
      continue
    out = diagnostics.probe_rows(probe, state.wm_params, state.replay, rows, k, _BATCH.value,
                                 lambda start: jax.random.key(_SEED.value * 1_000_003 + start))
    table[name] = {"transitions": len(rows)}
    for v in ("true", "sampled", "frozen"):
      p = out[v]
      table[name][v] = {"recall": float(np.mean(p.argmax(-1) == sign + 1)),
                        "mean_prob": float(np.mean(p[:, sign + 1]))}
      print(f"| {name} | {len(rows)} | {v} | {table[name][v]['recall']:.3f} | {table[name][v]['mean_prob']:.3f} |")
  if _JSON.value:
    os.makedirs(os.path.dirname(_JSON.value) or ".", exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump({"workdir": _WORKDIR.value, "game": config.game, "epoch": int(epoch),
                 "frozen_rows": _ROWS.value,
                 "sampler_steps": config.sampler.num_steps, "signs": table}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
