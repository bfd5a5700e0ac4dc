"""experiments/slurm_atari100k.sh without a cluster: a fake `sbatch` (and a fake `python` for the array task)
on PATH records every call, so the tests see exactly what would be submitted and what a task would run."""

import json
import os
import pathlib
import subprocess

import pytest

from jedi_jax.atari100k import GAMES

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "slurm_atari100k.sh"

# Appends its argv as one JSON line to $CALLS; as sbatch it answers a job id like `sbatch --parsable`.
RECORDER = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["CALLS"], "a") as f:
  f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
if os.path.basename(sys.argv[0]) == "sbatch":
  print("4242;cluster")
"""


@pytest.fixture(name="fake")
def fixture_fake(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("sbatch", "fakepython"):
    (bin_dir / name).write_text(RECORDER)
    (bin_dir / name).chmod(0o755)
  calls = tmp_path / "calls.jsonl"

  def run(*args, **env):
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls), **env}
    for key in ("GAMES", "SBATCH_ARGS", "DRY_RUN", "SLURM_ARRAY_TASK_ID"):
      if key not in env:
        full_env.pop(key, None)
    proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=full_env, capture_output=True,
                          text=True, timeout=60, check=False)
    recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    calls.unlink(missing_ok=True)
    return proc, recorded

  return run


def _finish(runs, game, seeds=(0, 1)):
  for seed in seeds:
    path = runs / game / f"seed_{seed}" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")


def _option(call, name):
  return next(a.split("=", 1)[1] for a in call if a.startswith(f"--{name}="))


def test_submit_skips_finished_games_and_chains_the_tables(fake, tmp_path):
  runs = tmp_path / "runs"
  _finish(runs, "Alien")
  _finish(runs, "Boxing")
  _finish(runs, "UpNDown")
  (runs / "Pong" / "checkpoints").mkdir(parents=True)  # started, not finished: resubmitted
  proc, calls = fake(str(runs), "--config.run.num_test_episodes=3", SBATCH_ARGS="--partition=gpu --time=2:00:00")
  assert proc.returncode == 0, proc.stderr
  assert "Alien: done" in proc.stdout and "23 game(s)" in proc.stdout and "Pong: done" not in proc.stdout
  array, tables = calls
  assert array[0] == "sbatch" and tables[0] == "sbatch"
  indices = [int(i) for i in _option(array, "array").split(",")]
  assert [GAMES[i] for i in indices] == [g for g in GAMES if g not in ("Alien", "Boxing", "UpNDown")]
  assert "--partition=gpu" in array and "--time=2:00:00" in array and "--parsable" in array
  assert _option(array, "output") == f"{runs}/slurm/%x_%A_%a.out" and (runs / "slurm").is_dir()
  script_at = array.index(str(SCRIPT))
  assert array[script_at + 1:] == ["task", str(runs), "--config.run.num_test_episodes=3"]
  # The tables wait for every task of the array (job id without the cluster suffix) and read the run folders.
  assert _option(tables, "dependency") == "afterok:4242" and "--partition=gpu" in tables
  assert _option(tables, "wrap") == f"python -m experiments.tables --results={runs} --out={runs}/tables"


def test_rerun_when_all_done_submits_only_the_tables(fake, tmp_path):
  runs = tmp_path / "runs"
  for game in GAMES:
    _finish(runs, game)
  proc, calls = fake(str(runs))
  assert proc.returncode == 0, proc.stderr
  assert "all games done" in proc.stdout and len(calls) == 1
  assert not any(a.startswith("--dependency") for a in calls[0])


def test_game_subset_and_dry_run(fake, tmp_path):
  runs = tmp_path / "runs"
  proc, calls = fake(str(runs), GAMES="Pong Breakout", DRY_RUN="1")
  assert proc.returncode == 0, proc.stderr
  assert calls == [] and "2 game(s), array indices 7,20" in proc.stdout  # Breakout is game 7, Pong 20
  assert "--allow_missing" in proc.stderr  # the printed tables command
  proc, calls = fake(str(runs), GAMES="Pong Breakuot")
  assert proc.returncode == 1 and calls == []
  assert proc.stderr.strip() == "error: unknown game 'Breakuot' in GAMES"


def test_array_task_trains_its_game_with_packed_seeds(fake, tmp_path):
  runs = tmp_path / "runs"
  env = {"REPO": str(ROOT), "PYTHON": "fakepython", "NUM_SEEDS": "5"}
  proc, calls = fake("task", str(runs), "--config.run.x=1", SLURM_ARRAY_TASK_ID="1", **env)
  assert proc.returncode == 0, proc.stderr
  assert calls == [["fakepython", "-m", "experiments.train", "--game=Amidar", "--seed=0", "--num_seeds=5",
                    f"--workdir={runs}/Amidar", "--config.run.x=1"]]
  _finish(runs, "Amidar")  # a requeued or resubmitted task of a finished game does nothing
  proc, calls = fake("task", str(runs), SLURM_ARRAY_TASK_ID="1", **env)
  assert proc.returncode == 0 and proc.stdout.strip() == "Amidar: done" and calls == []
  proc, calls = fake("task", str(runs), SLURM_ARRAY_TASK_ID="26", **env)
  assert proc.returncode == 1 and calls == [] and "array index 26 is not one of the 26 games" in proc.stderr
  proc, calls = fake("task", str(runs), **env)  # outside an array job
  assert proc.returncode != 0 and calls == [] and "SLURM_ARRAY_TASK_ID" in proc.stderr
