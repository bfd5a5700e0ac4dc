"""Learning result of a few runs against the random policy: a table with confidence intervals and curves.

For each run workdir (single-seed, or packed seeds from `train.py --num_seeds`): every seed's final test
score (mean over its test games) with a 95% bootstrap CI over games, the random policy's score measured with
the same protocol (`experiments/random_baseline.py`), and the difference with its 95% CI (independent
bootstrap of both sets of games). A run "beats random" when that difference's CI lies above 0. The last two
columns are the imagined policy's entropy in the last logged call against the uniform policy's (log2 of the
game's action count; equal means the actor has not moved off the uniform policy it starts from), and the
run's wall time over all the processes that trained it, compiles and the final test included
(`logs.run_wall_seconds`). One PNG per run plots, from its `metrics.jsonl` (means over packed seeds):
training-game returns with the final test scores and the random score, real against imagined reward rates,
the world-model losses, the policy entropy, the reward/end heads' recall and precision, and the world-model
probe (docs/metrics.md).

  python -m experiments.learning_report --runs=runs/cpu_Boxing,runs/cpu_Breakout --random=results/random \
      --out=results/cpu
"""

from __future__ import annotations

import glob
import json
import math
import os

from absl import app
from absl import flags
import numpy as np

from jedi_jax import envs
from jedi_jax import logs
from jedi_jax import metrics

_RUNS = flags.DEFINE_list("runs", None, "Run workdirs.")
_RANDOM = flags.DEFINE_string("random", "results/random", "Directory of random_baseline.py's <game>.json.")
_OUT = flags.DEFINE_string("out", None, "Output directory: learning.md, <game>_curve.png, copies of results.")
_NUM_BOOTSTRAP = flags.DEFINE_integer("num_bootstrap", 10_000, "Bootstrap repetitions.")
_UNFINISHED = flags.DEFINE_bool(
    "unfinished", False, "Also report runs stopped before their final test (no results.json): their row says "
    "where they stopped, and their curves end at the last logged call and the last interim test.")
flags.mark_flags_as_required(["runs", "out"])


def read_run(workdir: str, unfinished: bool = False) -> tuple[dict, list[dict], list[dict]]:
  """(config, per-seed results, metrics rows) of a run workdir. A run without results.json is an error,
  or with `unfinished` gives no results."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  paths = sorted(glob.glob(os.path.join(workdir, "seed_*", "results.json"))) or \
      [os.path.join(workdir, "results.json")]
  results = []
  for p in paths:
    if not os.path.exists(p):
      if unfinished:
        break
      raise SystemExit(f"error: {workdir} has no results.json yet (is the run finished? --unfinished reports "
                       "it as stopped)")
    with open(p) as f:
      results.append(json.load(f))
  return config, results, logs.read_metrics(workdir)


def _series(rows: list[dict], x: str, y: str) -> tuple[list, list]:
  pts = [(r[x], r[y]) for r in rows if x in r and y in r]
  return ([a for a, _ in pts], [b for _, b in pts]) if pts else ([], [])


def _seeds_label(kind: str, n: int) -> str:
  return f"{kind} ({n} seed{'s' if n != 1 else ''})"


def plot_test_curves(runs: list[tuple[dict, list[dict], list[dict]]], random_score: float, title: str,
                     path: str) -> None:
  """Test return against env steps, one line per seed of every run (colour: world-model kind)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  kinds = sorted({config["wm"]["kind"] for config, _, _ in runs})
  seeds = {kind: sum(len(logs.interim_test_curves(rows, results)) for config, results, rows in runs
                     if config["wm"]["kind"] == kind) for kind in kinds}
  for config, results, rows in runs:
    kind = config["wm"]["kind"]
    for steps, returns in logs.interim_test_curves(rows, results):
      ax.plot(steps, returns, "o-", ms=3, lw=1, alpha=0.8, color=f"C{kinds.index(kind)}",
              label=_seeds_label(kind, seeds.pop(kind)) if kind in seeds else None)
  ax.axhline(random_score, color="k", lw=1, label="random policy, same protocol")
  ax.set(xlabel="env steps", ylabel="test return (mean over the test games, epsilon 0)", title=title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_run(rows: list[dict], test_scores: list[float], random_score: float, uniform_entropy: float,
             title: str, path: str) -> None:
  """Six panels from metrics.jsonl (docs/metrics.md says how to read them): episode returns (training games,
  final test scores, random); real against imagined reward rates; world-model losses; the policy's entropy
  against the uniform policy's; reward/end recall and precision; action sensitivity and latent spreads."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(3, 2, figsize=(9.5, 8.4))
  ax = axes[0, 0]
  steps, returns = _series(rows, "env_steps", "collect/game_return")
  ax.plot(steps, returns, "o", ms=4, label="training games (mean per logged call)")
  for i, score in enumerate(test_scores):
    ax.axhline(score, ls="--", color="C2", lw=1, label="final test score" if i == 0 else None)
  tests = [r for r in rows if logs.is_interim_test(r)]
  if tests:
    ax.plot([r["env_steps"] for r in tests], [r["test/return_mean"] for r in tests], "s-", ms=4, lw=1,
            color="C2", label="interim tests (run.test_every)")
  ax.axhline(random_score, color="k", lw=1, label="random policy, same protocol")
  ax.set(xlabel="env steps", ylabel="episode return",
         xlim=(0, max([r["env_steps"] for r in rows if "env_steps" in r] or [1])))
  ax.legend(fontsize=7)
  ax = axes[0, 1]
  for sign, color in (("pos", "C0"), ("neg", "C3")):
    ax.plot(*_series(rows, "env_steps", f"collect/reward_rate_{sign}"), "-", color=color, lw=1,
            label=f"real, reward {'> 0' if sign == 'pos' else '< 0'}")
    ax.plot(*_series(rows, "env_steps", f"ac/imagined_reward_rate_{sign}"), "--", color=color, lw=1,
            label=f"imagined, reward {'+1' if sign == 'pos' else '-1'}")
  ax.set(xlabel="env steps", ylabel="fraction of steps")
  ax.legend(fontsize=7)
  ax = axes[1, 0]
  for key in ("wm/loss_denoising", "wm/loss_rew", "wm/loss_end"):
    ax.plot(*_series(rows, "wm_updates", key), lw=1, label=key)
  ax.set(xlabel="world-model updates", ylabel="loss", yscale="log")
  ax.legend(fontsize=7)
  ax = axes[1, 1]
  ax.plot(*_series(rows, "ac_updates", "ac/policy_entropy"), lw=1, label="policy entropy")
  ax.axhline(uniform_entropy, ls="--", color="k", lw=1, label="uniform policy")
  ax.set(xlabel="actor-critic updates", ylabel="bits")
  ax.legend(fontsize=7)
  ax = axes[2, 0]
  for key, style in (("wm/rew_recall_pos", "C0-"), ("wm/rew_precision_pos", "C0--"), ("wm/rew_recall_neg", "C3-"),
                     ("wm/rew_precision_neg", "C3--"), ("wm/end_recall", "C2-"), ("wm/end_precision", "C2--")):
    ax.plot(*_series(rows, "wm_updates", key), style, lw=1, label=key[3:])
  ax.set(xlabel="world-model updates", ylabel="reward / end heads", ylim=(-0.05, 1.05))
  ax.legend(fontsize=6, ncol=2)
  ax = axes[2, 1]
  for key in ("wm/action_sensitivity", "wm/action_sensitivity_reward", "wm/action_error_gain",
              "wm/latent_std", "wm/sampled_latent_std", "wm/sample_error"):
    ax.plot(*_series(rows, "wm_updates", key), lw=1, label=key[3:])
  ax.set(xlabel="world-model updates", ylabel="world-model probe")
  ax.legend(fontsize=6)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  lines = ["| game | seed | env steps | test games | score (95% CI) | random, same protocol (95% CI) | "
           "score - random (95% CI) | beats random | policy entropy at the end / uniform (bits) | wall |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  runs = []
  for workdir in _RUNS.value:
    config, results, rows = read_run(workdir, _UNFINISHED.value)
    runs.append((config, results, rows))
    game = config["game"]
    # The pixel baseline's runs of the same game and seeds go beside JEDI's: <game>_diamond_seed_<s>.
    name = game if config["wm"]["kind"] == "jedi" else f"{game}_{config['wm']['kind']}"
    with open(os.path.join(_RANDOM.value, f"{game}.json")) as f:
      rand = json.load(f)
    rand_returns = [r for rs in rand["episode_returns_per_seed"].values() for r in rs]
    r_lo, r_hi = metrics.mean_ci(rand_returns, _NUM_BOOTSTRAP.value)
    entropy = [r["ac/policy_entropy"] for r in rows if "ac/policy_entropy" in r]
    uniform = math.log2(envs.num_actions(game, config["env"]["backend"]))
    entropy_cell = f"{entropy[-1]:.3f} / {uniform:.3f}" if entropy else f"- / {uniform:.3f}"
    wall = logs.run_wall_seconds(rows)
    wall_cell = "-" if wall is None else f"{wall:,.0f} s ({wall / 3600:.2f} h)"
    if not results:
      last = max(rows, key=lambda r: r["epoch"]) if rows else {"epoch": 0, "env_steps": 0}
      lines.append(f"| {name} | {config['seed']} | {last.get('env_steps', 0)} | - | stopped at epoch "
                   f"{last['epoch']}, no final test | {np.mean(rand_returns):.2f} ({r_lo:.2f}, {r_hi:.2f}) | - | "
                   f"no final test | {entropy_cell} | {wall_cell} |")
    for res in results:
      ret = res["episode_returns"]
      lo, hi = metrics.mean_ci(ret, _NUM_BOOTSTRAP.value, seed=1)
      d_lo, d_hi = metrics.mean_ci(ret, _NUM_BOOTSTRAP.value, seed=2, y=rand_returns)
      diff = np.mean(ret) - np.mean(rand_returns)
      verdict = "yes" if d_lo > 0 else ("no (worse)" if d_hi < 0 else "no (CI spans 0)")
      lines.append(f"| {name} | {res['seed']} | {res['env_steps']} | {len(ret)} | {np.mean(ret):.2f} "
                   f"({lo:.2f}, {hi:.2f}) | {np.mean(rand_returns):.2f} ({r_lo:.2f}, {r_hi:.2f}) | "
                   f"{diff:+.2f} ({d_lo:+.2f}, {d_hi:+.2f}) | {verdict} | {entropy_cell} | {wall_cell} |")
      seed_dir = os.path.join(_OUT.value, "runs", f"{name}_seed_{res['seed']}")
      os.makedirs(seed_dir, exist_ok=True)
      with open(os.path.join(seed_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)

    seeds = "_".join(str(r["seed"]) for r in results) or str(config["seed"])
    title = f"{game}, preset {config['preset']}, {config['wm']['kind']}, seed(s) {seeds.replace('_', ', ')}"
    plot_run(rows, [r["score"] for r in results], float(np.mean(rand_returns)), uniform, title,
             os.path.join(_OUT.value, f"{name}_seed_{seeds}_curve.png"))
  for game in sorted({config["game"] for config, _, _ in runs}):
    of_game = [run for run in runs if run[0]["game"] == game]
    if any(logs.is_interim_test(r) for _, _, rows in of_game for r in rows):
      with open(os.path.join(_RANDOM.value, f"{game}.json")) as f:
        rand = json.load(f)
      random_score = float(np.mean([r for rs in rand["episode_returns_per_seed"].values() for r in rs]))
      path = os.path.join(_OUT.value, f"{game}_test_curves.png")
      plot_test_curves(of_game, random_score, f"{game}, preset {of_game[0][0]['preset']}", path)
      print(f"wrote {path}")
  with open(os.path.join(_OUT.value, "learning.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
