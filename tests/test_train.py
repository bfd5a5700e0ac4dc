"""End-to-end tests of the training loop: entry point, exact resume, determinism, bad input."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jedi_jax import checkpoint as ckpt_lib
from jedi_jax import loop
from jedi_jax.logs import read_metrics

from conftest import TEST_XLA_FLAGS, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = ("perf/",)


def _run_cli(*args, timeout=600, env_extra=None):
  env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, PYTHONPATH=ROOT)
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _untimed(rows):
  return [{k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)} for r in rows]


def _same_tree(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """Seed 0, run straight through (the reference the other tests compare with)."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  state, results = loop.run(tiny_config(), workdir, log=lambda *_: None)
  return workdir, state, results


@pytest.mark.slow
def test_debug_preset_through_entry_point_on_4_fake_devices(tmp_path):
  """The README's main command (shortened budget), data parallel over 4 fake CPU devices."""
  workdir = tmp_path / "debug"
  overrides = [f"--config.{k}={v}" for k, v in {
      "parallel.num_devices": 4, "optim.batch_size": 4, "schedule.total_env_steps": 300,
      "schedule.initial_min_steps": 100, "schedule.initial_max_steps": 200, "schedule.num_final_epochs": 1,
      "env.num_test_episodes": 2, "env.num_test_envs": 2, "env.max_episode_steps": 200}.items()]
  proc = _run_cli("--preset=debug", f"--workdir={workdir}", *overrides,
                  env_extra={"XLA_FLAGS": f"--xla_force_host_platform_device_count=4 {TEST_XLA_FLAGS}"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "devices used=4 of 4" in proc.stdout and "per device=1" in proc.stdout
  assert "final score" in proc.stdout
  assert "GFLOP" in proc.stdout  # compiled-program costs printed once per program
  results = json.loads((workdir / "results.json").read_text())
  assert results["game"] == "Breakout" and results["seed"] == 0 and results["num_test_episodes"] == 2
  assert np.isfinite(results["score"])
  assert json.loads((workdir / "scores_diamond_format.json").read_text()) == {"Breakout": [results["score"]]}
  assert json.loads((workdir / "config.json").read_text())["preset"] == "debug"
  rows = read_metrics(str(workdir))
  losses = [r[k] for r in rows for k in r if k.endswith("loss")]
  assert losses and np.all(np.isfinite(losses))
  assert any(k.startswith("wm/") for k in rows[0]) and any(k.startswith("ac/") for k in rows[0])
  assert any("perf/collect_call_seconds" in r for r in rows)
  assert os.listdir(workdir / "tb")


def test_run_writes_results_and_counts(straight_run):
  workdir, state, results = straight_run
  config = tiny_config()
  assert results["env_steps"] == config.schedule.total_env_steps
  assert int(state.epoch) == results["epochs"] > config.schedule.num_final_epochs
  assert len(results["episode_returns"]) == config.env.num_test_episodes
  rows = read_metrics(workdir)
  assert rows[-1]["test/return_mean"] == pytest.approx(results["score"])
  assert all(np.isfinite(v) for r in rows for k, v in r.items() if k.endswith("loss"))
  timed = [r for r in rows if "perf/compiled_fraction" in r]
  assert timed and all(0 < r["perf/compiled_fraction"] <= 1 for r in timed)


def test_load_run_restores_the_final_state(straight_run):
  workdir, state, _ = straight_run
  cfg, loaded, epoch = loop.load_run(workdir)
  assert epoch == int(state.epoch) and cfg.game == tiny_config().game
  assert _same_tree(loaded.wm_params, state.wm_params) and _same_tree(loaded.replay, state.replay)


def test_resume_is_exact_and_same_seed_is_deterministic(straight_run, tmp_path):
  ref_dir, ref_state, ref_results = straight_run
  workdir = str(tmp_path / "resumed")
  config = tiny_config()
  assert loop.run(config, workdir, stop_after_epoch=2, log=lambda *_: None) is None
  assert ckpt_lib.Checkpointer(workdir).epochs() == [2]
  state, results = loop.run(config, workdir, log=lambda *_: None)
  assert _same_tree(state.wm_params, ref_state.wm_params)
  assert _same_tree(state.ac_params, ref_state.ac_params)
  assert _same_tree(state.replay, ref_state.replay)
  assert np.array_equal(state.key, ref_state.key)
  assert results["episode_returns"] == ref_results["episode_returns"]
  assert _untimed(read_metrics(workdir)) == _untimed(read_metrics(ref_dir))


@pytest.fixture(scope="module")
def seed1_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("seed1"))
  state, results = loop.run(tiny_config(seed=1), workdir, log=lambda *_: None)
  return workdir, state, results


def test_different_seed_differs(straight_run, seed1_run):
  _, ref_state, _ = straight_run
  _, state, _ = seed1_run
  assert not _same_tree(state.wm_params, ref_state.wm_params)
  assert not np.array_equal(np.asarray(state.replay.obs), np.asarray(ref_state.replay.obs))


@pytest.mark.slow
def test_two_packed_seeds_match_separate_runs(straight_run, seed1_run, tmp_path):
  """--num_seeds=2: one vmapped program over seeds 0 and 1 gives each seed's single-run results."""
  workdir = tmp_path / "packed"
  states, results = loop.run_seeds(tiny_config(), str(workdir), 2, log=lambda *_: None)
  for k, (_, ref_state, ref_results) in enumerate([straight_run, seed1_run]):
    state_k = jax.tree.map(lambda x: x[k], states)
    assert np.array_equal(np.asarray(state_k.replay.obs), np.asarray(ref_state.replay.obs))
    assert np.array_equal(np.asarray(state_k.replay.act), np.asarray(ref_state.replay.act))
    for a, b in zip(jax.tree.leaves(state_k.wm_params), jax.tree.leaves(ref_state.wm_params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert results[k]["seed"] == ref_results["seed"] == k
    assert results[k]["episode_returns"] == ref_results["episode_returns"]
    on_disk = json.loads((workdir / f"seed_{k}" / "results.json").read_text())
    assert on_disk["score"] == pytest.approx(ref_results["score"])


def _snapshot(path):
  return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob("*"))


@pytest.mark.parametrize("args, message", [
    (["--preset=debug", "--game=NotAGame"], "unknown game"),
    (["--preset=debug", "--config.optim.batch_size=0"], "optim.batch_size"),
    (["--preset=debug", "--config.wm.kind=vae"], "wm.kind"),
    (["--preset=atari100k"], "--seed is required"),
    (["--preset=debug", "--config.no_such_field=1"], "no_such_field"),
])
def test_bad_flags_fail_with_one_clear_line(tmp_path, args, message):
  workdir = tmp_path / "w"
  proc = _run_cli(*args, f"--workdir={workdir}", timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()


def test_mismatched_config_refuses_and_leaves_workdir_untouched(straight_run):
  workdir, _, _ = straight_run
  from pathlib import Path
  before = _snapshot(Path(workdir))
  proc = _run_cli("--preset=debug", f"--workdir={workdir}", "--config.optim.lr=0.5", timeout=120)
  assert proc.returncode == 1
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and "different config" in lines[0], proc.stderr
  assert _snapshot(Path(workdir)) == before


def test_corrupt_latest_checkpoint_falls_back(straight_run, tmp_path, capsys):
  """Damage the newest checkpoint of a finished run: the rerun resumes from the previous one, sets the
  damaged one aside, and (runs being exact) reproduces the straight run's results."""
  ref_dir, ref_state, ref_results = straight_run
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(ref_dir, workdir)
  os.remove(os.path.join(workdir, "results.json"))
  checkpointer = ckpt_lib.Checkpointer(workdir)
  epochs = checkpointer.epochs()
  assert len(epochs) >= 2
  newest = os.path.join(checkpointer.directory, str(epochs[-1]))
  damaged = 0
  for root, _, files in os.walk(newest):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 0:
        with open(path, "r+b") as f:
          f.write(b"\x00garbage" * 8)
        damaged += 1
  assert damaged
  lines = []
  state, results = loop.run(tiny_config(), workdir, log=lines.append)
  out = capsys.readouterr().out
  assert f"epoch {epochs[-1]} is unreadable" in out
  assert any(f"resumed from the checkpoint at epoch {epochs[-2]}" in l for l in lines)
  assert os.listdir(os.path.join(workdir, "corrupt_checkpoints"))
  assert results["episode_returns"] == ref_results["episode_returns"]
  assert _same_tree(state.wm_params, ref_state.wm_params)


def test_eta_uses_the_update_rate_not_the_long_first_epoch():
  """After the first epoch (thousands of updates) the ETA is the remaining regular epochs' updates at the
  measured rate, whatever that first epoch's length; without updates it falls back to seconds per epoch."""
  first = {"perf/updates_per_s": 0.9}           # e.g. 450 updates in 500 s
  regular = {"perf/updates_per_s": 0.9}         # 20 updates in 22 s
  eta_first = loop.eta_seconds(first, 1, 55, 20, seconds_per_epoch=500.0)
  eta_regular = loop.eta_seconds(regular, 1, 55, 20, seconds_per_epoch=22.2)
  assert eta_first == eta_regular == pytest.approx(54 * 20 / 0.9)
  assert loop.eta_seconds({}, 3, 5, 0, seconds_per_epoch=7.0) == 14.0
  assert loop.eta_seconds(first, 55, 55, 20, seconds_per_epoch=500.0) == 0.0
