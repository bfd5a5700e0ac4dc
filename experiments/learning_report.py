"""Learning result of a few runs against the random policy: a table with confidence intervals and curves.

For each run workdir (single-seed, or packed seeds from `train.py --num_seeds`): every seed's final test
score (mean over its test games) with a 95% bootstrap CI over games, the random policy's score measured with
the same protocol (`experiments/random_baseline.py`), and the difference with its 95% CI (independent
bootstrap of both sets of games). A run "beats random" when that difference's CI lies above 0. One PNG per
run plots the training-episode return over env steps (mean over the packed seeds, from `metrics.jsonl`)
with the final test scores and the random score.

  python -m experiments.learning_report --runs=runs/cpu_Boxing,runs/cpu_Breakout --random=results/random \
      --out=results/cpu
"""

from __future__ import annotations

import glob
import json
import os

from absl import app
from absl import flags
import numpy as np

from jedi_jax import metrics

_RUNS = flags.DEFINE_list("runs", None, "Run workdirs.")
_RANDOM = flags.DEFINE_string("random", "results/random", "Directory of random_baseline.py's <game>.json.")
_OUT = flags.DEFINE_string("out", None, "Output directory: learning.md, <game>_curve.png, copies of results.")
_NUM_BOOTSTRAP = flags.DEFINE_integer("num_bootstrap", 10_000, "Bootstrap repetitions.")
flags.mark_flags_as_required(["runs", "out"])


def read_run(workdir: str) -> tuple[dict, list[dict], list[dict]]:
  """(config, per-seed results, metrics rows) of a run workdir."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  paths = sorted(glob.glob(os.path.join(workdir, "seed_*", "results.json"))) or \
      [os.path.join(workdir, "results.json")]
  results = []
  for p in paths:
    if not os.path.exists(p):
      raise SystemExit(f"error: {workdir} has no results.json yet (is the run finished?)")
    with open(p) as f:
      results.append(json.load(f))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return config, results, rows


def main(argv):
  del argv
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(_OUT.value, exist_ok=True)
  lines = ["| game | seed | env steps | test games | score (95% CI) | random, same protocol (95% CI) | "
           "score - random (95% CI) | beats random |", "|---|---|---|---|---|---|---|---|"]
  for workdir in _RUNS.value:
    config, results, rows = read_run(workdir)
    game = config["game"]
    with open(os.path.join(_RANDOM.value, f"{game}.json")) as f:
      rand = json.load(f)
    rand_returns = [r for rs in rand["episode_returns_per_seed"].values() for r in rs]
    r_lo, r_hi = metrics.mean_ci(rand_returns, _NUM_BOOTSTRAP.value)
    for res in results:
      ret = res["episode_returns"]
      lo, hi = metrics.mean_ci(ret, _NUM_BOOTSTRAP.value, seed=1)
      d_lo, d_hi = metrics.mean_ci(ret, _NUM_BOOTSTRAP.value, seed=2, y=rand_returns)
      diff = np.mean(ret) - np.mean(rand_returns)
      verdict = "yes" if d_lo > 0 else ("no (worse)" if d_hi < 0 else "no (CI spans 0)")
      lines.append(f"| {game} | {res['seed']} | {res['env_steps']} | {len(ret)} | {np.mean(ret):.2f} "
                   f"({lo:.2f}, {hi:.2f}) | {np.mean(rand_returns):.2f} ({r_lo:.2f}, {r_hi:.2f}) | "
                   f"{diff:+.2f} ({d_lo:+.2f}, {d_hi:+.2f}) | {verdict} |")
      seed_dir = os.path.join(_OUT.value, "runs", f"{game}_seed_{res['seed']}")
      os.makedirs(seed_dir, exist_ok=True)
      with open(os.path.join(seed_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)

    curve = [(r["env_steps"], r["collect/game_return"]) for r in rows if "collect/game_return" in r]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if curve:
      steps, returns = zip(*curve)
      ax.plot(steps, returns, lw=1, alpha=0.5, label="training episodes (per logged call)")
      k = min(5, len(returns))
      smooth = np.convolve(returns, np.ones(k) / k, mode="valid")
      ax.plot(steps[k - 1:], smooth, lw=2, label=f"moving mean of {k}")
    for res in results:
      ax.axhline(res["score"], ls="--", color="C2", lw=1)
    ax.axhline(results[0]["score"], ls="--", color="C2", lw=1, label="final test score per seed")
    ax.axhline(np.mean(rand_returns), color="k", lw=1, label="random policy (test protocol)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{game}, preset {config['preset']}, seeds {', '.join(str(r['seed']) for r in results)}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    seeds = "_".join(str(r["seed"]) for r in results)
    fig.savefig(os.path.join(_OUT.value, f"{game}_seed_{seeds}_curve.png"), dpi=120)
    plt.close(fig)
  with open(os.path.join(_OUT.value, "learning.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
