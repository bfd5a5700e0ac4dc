"""End-to-end tests of the training loop through the real entry point: exact results whatever the
checkpoint interval, kill -9 and resume, one compile per program, games never cut, packed seeds, data
parallel, bad input.

The runs play Catch (the pure-JAX backend), so every process after the first loads its programs from the
session's compilation cache (conftest.TEST_CACHE) instead of compiling them; the loop, checkpoints and resume
are the same code for every backend, and the envpool-specific part of resuming (a re-created pool re-stepped
through a recorded Breakout run) is tested in test_resume.py. The runs are shared between tests and kept as
few as the guarantees allow: a reference run checkpointing every epoch; a run checkpointing every second
epoch, killed after its second checkpoint and resumed (together: results identical for two intervals and
across a kill); cheap resumes of finished runs from an earlier checkpoint (what a kill right after that
checkpoint leaves).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jedi_jax import checkpoint as ckpt_lib
from jedi_jax import config as config_lib
from jedi_jax import evaluate
from jedi_jax import loop
from jedi_jax import run_files
from jedi_jax.logs import read_metrics

from conftest import (FEWEST_STEPS, SMALLEST_NETS, TEST_CACHE, TEST_XLA_FLAGS, frozen_tiny_config, shared_once,
                      tiny_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = ("perf/",)
# The runs of this file: `tiny_config` on Catch with one stage per network (conftest.SMALLEST_NETS: the
# loop's program is what these tests exercise, and it compiles faster), a 55-step initial collection, then
# 5 collecting epochs of 55 steps and 1 final epoch.
# A Catch game fills 10 replay rows (9 steps and the auto-reset step), so checkpoints (every 55 rows) fall
# inside games.
RUN = {"game": "Catch", "env.backend": "jax", **SMALLEST_NETS, "schedule.steps_per_epoch": 55,
       "schedule.total_env_steps": 330, "schedule.initial_min_steps": 55, "schedule.initial_max_steps": 55,
       **FEWEST_STEPS}
EPOCHS = 6


def run_config(**overrides):
  return tiny_config(**RUN, **overrides)


def _cli_env(env_extra=None):
  env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  env.update(env_extra or {})
  return env


def _run_cli(*args, timeout=1800, env_extra=None):
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT, env=_cli_env(env_extra),
                        capture_output=True, text=True, timeout=timeout)


def _tiny_flags(**overrides) -> list[str]:
  """`--config.*` flags turning the debug preset into `run_config(**overrides)`."""
  def flat(d, prefix=""):
    for k, v in d.items():
      if isinstance(v, dict):
        yield from flat(v, f"{prefix}{k}.")
      else:
        yield f"{prefix}{k}", v
  want, base = dict(flat(config_lib.to_dict(run_config(**overrides)))), dict(flat(config_lib.to_dict(
      config_lib.debug())))
  game = want.pop("game")
  return (["--preset=debug", f"--game={game}", f"--compilation_cache={TEST_CACHE}"]
          + [f"--config.{k}={v}" for k, v in sorted(want.items()) if base.get(k) != v])


def _run_and_kill_after(args, checkpoints: int, timeout=1800):
  """Starts the entry point and kills it with SIGKILL right after its `checkpoints`-th checkpoint."""
  proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=ROOT, env=_cli_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines, seen = [], 0
  try:
    for line in proc.stdout:
      lines.append(line)
      seen += line.startswith("checkpoint saved")
      if seen == checkpoints:
        proc.send_signal(signal.SIGKILL)
        break
  finally:
    proc.wait(timeout=timeout)
  assert seen == checkpoints, "".join(lines)[-3000:]
  return "".join(lines)


def _damage(checkpoint_dir: Path) -> None:
  damaged = 0
  for path in checkpoint_dir.rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      with open(path, "r+b") as f:
        f.write(b"\x00garbage" * 8)
      damaged += 1
  assert damaged


def _untimed(rows):
  return [{k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)} for r in rows]


def _same_tree(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _compiled_lines(stdout: str) -> list[str]:
  return [l for l in stdout.splitlines() if l.startswith("compiled ")]


def _results(workdir) -> str:
  return (Path(workdir) / "results.json").read_text()


def _resume_from_earlier_checkpoint(src, dst, epoch):
  """A copy of the finished run `src` as a kill right after the checkpoint at `epoch` would leave it."""
  shutil.copytree(src, dst)
  directory = Path(ckpt_lib.Checkpointer(str(dst)).directory)
  for e in ckpt_lib.Checkpointer(str(dst)).epochs():
    if e > epoch:
      shutil.rmtree(directory / str(e))
  for name in ("results.json", "scores_diamond_format.json"):
    (Path(dst) / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Seed 0 through the entry point, a checkpoint after every epoch: the reference run (built once per
  session, whichever xdist worker asks first; conftest.shared_once). Tests copy it, never change it."""
  with shared_once(tmp_path_factory, "reference_run") as (directory, done):
    workdir, stdout = directory / "w", directory / "stdout.txt"
    if not done:
      shutil.rmtree(workdir, ignore_errors=True)
      proc = _run_cli(*_tiny_flags(**{"run.checkpoint_every": 1}), f"--workdir={workdir}")
      assert proc.returncode == 0, proc.stderr[-3000:]
      stdout.write_text(proc.stdout)
      (directory / "DONE").touch()
  return workdir, stdout.read_text()


def test_results_do_not_depend_on_the_checkpoint_interval_or_a_kill(reference, tmp_path):
  """Checkpoints every second epoch, kill -9 right after the second one, then the same command with a
  checkpoint every third epoch: the same results.json (final-state checksum and config hash included) and
  metrics as the uninterrupted run that checkpointed every epoch. Each process compiles each program once;
  the resumed one restores the envs' state from the checkpoint (pure-JAX env: nothing to re-step)."""
  ref_dir, ref_out = reference
  assert ckpt_lib.Checkpointer(str(ref_dir)).epochs() == [EPOCHS - 2, EPOCHS - 1, EPOCHS]  # 3 kept
  assert ref_out.count("checkpoint saved") == EPOCHS
  assert len(json.loads(_results(ref_dir))["final_state_checksum"]) == 64
  assert [l.split()[1] for l in _compiled_lines(ref_out)] == ["collect", "epochs"], ref_out

  workdir = tmp_path / "killed"
  args = _tiny_flags(**{"run.checkpoint_every": 2}) + [f"--workdir={workdir}"]
  killed_out = _run_and_kill_after(args, checkpoints=2)
  assert [l.split()[1] for l in _compiled_lines(killed_out)] == ["collect", "epochs"], killed_out
  assert not (workdir / "results.json").exists()
  assert ckpt_lib.Checkpointer(str(workdir)).epochs()[-1] == 4
  # The same command, but a third checkpoint interval and an interim test after epoch 5: both may change
  # across a resume, and neither changes the results.
  proc = _run_cli(*_tiny_flags(**{"run.checkpoint_every": 3, "run.test_every": 5}), f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resuming from the checkpoint at epoch 4" in proc.stdout
  assert "nothing to re-step" in proc.stdout
  assert [l.split()[1] for l in _compiled_lines(proc.stdout)] == ["epochs"], proc.stdout
  assert proc.stdout.count("checkpoint saved") == 1   # epoch 6
  assert _results(workdir) == _results(ref_dir)
  # One row per compiled call (a call ends at a checkpoint, the end of collection, or after the first
  # epoch); the resumed process replaced the killed one's rows after epoch 4. Calls that ran the same
  # epochs in both runs logged the same row.
  rows, ref_rows = _untimed(read_metrics(str(workdir))), _untimed(read_metrics(str(ref_dir)))
  assert [r["epoch"] for r in rows if "wm/loss" in r] == [1, 2, 4, 5, 6]
  interim = [r for r in rows if "test/episodes" in r]
  rows = [r for r in rows if "test/episodes" not in r]
  same_calls = [r for r in rows if r["epoch"] in (1, 2, 5, 6)]
  assert same_calls == [r for r in ref_rows if r["epoch"] in (1, 2, 5, 6)]
  # The interim test is the final test's protocol played by the state after epoch 5: the reference run's
  # checkpoint at epoch 5, evaluated here, gives the same games' returns.
  assert [(r["epoch"], r["test/episodes"]) for r in interim] == [(5, 2)] and "interim test at epoch 5" in proc.stdout
  at_5 = tmp_path / "ref_at_5"
  shutil.copytree(ref_dir, at_5, ignore=lambda d, names: ["6"] if d.endswith("checkpoints") else [])
  cfg, state, epoch = run_files.load_run(str(at_5))
  returns = evaluate.evaluate(state, cfg, cfg.env.num_test_episodes)
  assert epoch == 5 and interim[0]["test/return_mean"] == pytest.approx(np.mean(returns))
  assert interim[0]["test/return_std"] == pytest.approx(np.std(returns))


def test_games_run_across_checkpoints_to_their_real_end(reference):
  """No training game is cut by a checkpoint: a game spanning checkpoints ends by a game over in the
  replay, and the only truncations are the step cap's."""
  ref_dir, _ = reference
  cfg, state, _ = run_files.load_run(str(ref_dir))
  t = int(state.replay.t)
  valid = np.asarray(state.replay.episode_id[0, :t]) >= 0
  end, trunc = np.asarray(state.replay.end[0, :t]), np.asarray(state.replay.trunc[0, :t])
  resets = [0] + [i + 1 for i in np.nonzero(~valid)[0]]  # first row of each game (after its dummy row)
  games = [(a, b - 2) for a, b in zip(resets, resets[1:])]  # [first row, last row] of finished games
  assert games
  for first, last in games:
    assert end[last] or (trunc[last] and last - first + 1 == cfg.env.max_episode_steps)
  assert np.all(~trunc | np.isin(np.arange(t), [last for _, last in games]))
  s = cfg.schedule
  boundaries = range(s.initial_min_steps + s.steps_per_epoch, t, s.steps_per_epoch)  # checkpoints, in rows
  assert any(first < b <= last for first, last in games for b in boundaries), (games, boundaries)


def test_results_and_load_run(reference):
  ref_dir, _ = reference
  config = run_config()
  results = json.loads(_results(ref_dir))
  assert results["env_steps"] == config.schedule.total_env_steps
  assert results["epochs"] == EPOCHS and len(results["episode_returns"]) == config.env.num_test_episodes
  assert json.loads((ref_dir / "scores_diamond_format.json").read_text()) == {"Catch": [results["score"]]}
  rows = read_metrics(str(ref_dir))
  assert rows[-1]["test/return_mean"] == pytest.approx(results["score"]) and rows[-1]["perf/train_seconds"] > 0
  assert rows[-1]["perf/test_seconds"] >= 0
  assert all(np.isfinite(v) for r in rows for k, v in r.items() if k.endswith("loss"))
  timed = [r for r in rows if "perf/compiled_fraction" in r]
  assert timed and all(0 < r["perf/compiled_fraction"] <= 1 for r in timed)
  # The learning diagnostics (docs/metrics.md) are in every training row, finite, counts turned into rates.
  trained = [r for r in rows if "wm/loss" in r]
  for key in ("wm/action_sensitivity", "wm/action_sensitivity_reward", "wm/action_error_gain",
              "wm/sampled_latent_std", "wm/latent_std", "wm/sample_error", "wm/rew_count_zero", "wm/end_count",
              "ac/imagined_reward_rate_pos", "ac/imagined_reward_rate_neg", "ac/imagined_reward_rate_first_pos",
              "ac/imagined_reward_rate_first_neg"):
    assert trained and all(key in r and np.isfinite(r[key]) for r in trained), key
  assert all("collect/reward_rate_pos" in r and "collect/reward_rate_neg" in r
             for r in rows if "collect/games_finished" in r)
  assert any("wm/rew_recall_zero" in r for r in trained)
  assert not any("_hits" in k or "_predicted" in k for r in rows for k in r)
  cfg, loaded, epoch = run_files.load_run(str(ref_dir))
  assert epoch == EPOCHS and cfg.game == config.game
  assert run_files.final_state_checksum(loaded) == results["final_state_checksum"]



def test_action_history_reads_a_finished_run(reference, tmp_path):
  """experiments/action_history.py on a workdir: the windows' shares add up to the replay's training steps
  and its actions; a directory without a run is one error line."""
  ref_dir, _ = reference
  out = tmp_path / "actions.json"
  cmd = [sys.executable, "-m", "experiments.action_history", f"--workdir={ref_dir}", "--window=7", f"--json={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=_cli_env(None), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = json.loads(out.read_text())
  assert table["actions"] == ["LEFT", "NOOP", "RIGHT"] and table["epoch"] == EPOCHS
  _, state, _ = run_files.load_run(str(ref_dir))
  valid = np.asarray(state.replay.episode_id) >= 0
  acts = np.asarray(state.replay.act)[valid]
  windows = table["windows"]
  assert sum(w["steps"] for w in windows) == valid.sum() == int(state.replay.num_rows_held)
  counts = sum(np.asarray(w["action_fraction"]) * w["steps"] for w in windows)
  np.testing.assert_allclose(counts, np.bincount(acts, minlength=3), atol=1e-6)
  assert f"| {windows[0]['first_step']}-{windows[0]['last_step']} |" in proc.stdout
  bad = subprocess.run(cmd[:3] + [f"--workdir={tmp_path}"], cwd=ROOT, env=_cli_env(None), capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error:"), bad.stderr[-2000:]

def test_action_probe_reads_a_finished_run(reference, tmp_path):
  """experiments/action_probe.py on a workdir: per action of the run's game, a policy that sums to 1, the
  real shares of the replay window, finite values; a directory without a run is one error line."""
  ref_dir, _ = reference
  out = tmp_path / "probe.json"
  cmd = [sys.executable, "-m", "experiments.action_probe", f"--workdir={ref_dir}", "--states=8", "--batch_size=4",
         f"--json={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=_cli_env(None), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = json.loads(out.read_text())
  assert table["actions"] == ["LEFT", "NOOP", "RIGHT"] and table["epoch"] == EPOCHS and table["states"] == 8
  assert abs(sum(table["policy"]) - 1) < 1e-5 and abs(sum(table["replay_share"]) - 1) < 1e-9
  assert abs(sum(table["best"]) - 1) < 1e-9
  assert all(np.isfinite(table[key]).all() for key in ("q", "advantage", "reward_pos", "end"))
  assert all(0 <= p <= 1 for p in table["replay_end"] if np.isfinite(p))
  assert "| LEFT |" in proc.stdout and "| RIGHT |" in proc.stdout
  bad = subprocess.run(cmd[:3] + [f"--workdir={tmp_path}"], cwd=ROOT, env=_cli_env(None), capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error:"), bad.stderr[-2000:]


@pytest.mark.after_suite
def test_packed_seeds_resume_exactly_and_match_single_runs(reference, tmp_path):
  """--num_seeds=2: seed 0 has exactly the single run's replay (same envs, same actions) and its params to
  float rounding (vmapped convolutions); seed 1 differs. The packed run has no world-model probe, the single
  run has: the probe changes nothing (and the packed program compiles faster without it). The finished run
  with its newest checkpoint damaged resumes from the previous one (setting the damaged one aside) and gives
  identical results."""
  ref_dir, _ = reference
  workdir = tmp_path / "packed"
  config = run_config(**{"run.probe_batch_size": 0})
  states, results = loop.run_seeds(config, str(workdir), 2, log=lambda *_: None)
  _, ref_state, _ = run_files.load_run(str(ref_dir))
  seed0, seed1 = (jax.tree.map(lambda x, k=k: x[k], states) for k in (0, 1))
  assert np.array_equal(np.asarray(seed0.replay.obs), np.asarray(ref_state.replay.obs))
  assert np.array_equal(np.asarray(seed0.replay.act), np.asarray(ref_state.replay.act))
  for a, b in zip(jax.tree.leaves(seed0.wm_params), jax.tree.leaves(ref_state.wm_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  assert not np.array_equal(np.asarray(seed1.replay.obs), np.asarray(ref_state.replay.obs))
  assert not _same_tree(seed1.wm_params, ref_state.wm_params)
  assert [r["seed"] for r in results] == [0, 1]
  assert json.loads((workdir / "seed_1" / "results.json").read_text()) == results[1]

  resumed = tmp_path / "packed_resumed"
  shutil.copytree(workdir, resumed)
  epochs = ckpt_lib.Checkpointer(str(resumed)).epochs()
  assert epochs == [2, 4, 6]
  _damage(Path(ckpt_lib.Checkpointer(str(resumed)).directory) / "6")
  lines = []
  _, results2 = loop.run_seeds(config, str(resumed), 2, log=lines.append)
  assert any("epoch 6 is unreadable" in l for l in lines)
  assert any("resuming from the checkpoint at epoch 4" in l for l in lines)
  assert any("nothing to re-step" in l for l in lines)
  assert os.listdir(resumed / "corrupt_checkpoints")
  assert results2 == results


def test_train_env_pool_of_packed_seeds_is_each_seeds_envs():
  """Seed s + k's envs in a pool of K x E envs seeded for seed s are exactly a single run's envs."""
  cfg = frozen_tiny_config(**{"env.num_envs": 2, "schedule.steps_per_epoch": 50})
  pool = loop.make_train_env(cfg, num_seeds=2)
  alone = loop.make_train_env(run_files.seed_config(cfg, 1))
  obs_pool, _ = pool.reset()
  obs_alone, _ = alone.reset()
  rng = np.random.default_rng(0)
  for _ in range(30):
    assert np.array_equal(obs_pool[2:], obs_alone)
    actions = rng.integers(0, pool.num_actions, 4)
    obs_pool = pool.step(actions)[0]
    obs_alone = alone.step(actions[2:])[0]
  pool.close()
  alone.close()


@pytest.mark.after_suite
def test_data_parallel_on_4_fake_devices_and_its_resume(reference, tmp_path):
  """The run data parallel over the 4 fake CPU devices of the test process; its copy whose last checkpoint
  is removed resumes and reproduces its results exactly. Same collected data as the one-device run until
  the first update (the envs and the collection are the same program on device 0)."""
  ref_dir, _ = reference
  workdir = tmp_path / "dp"
  # No world-model probe here either (the single run has it): the sharded update program is the suite's
  # largest compile.
  config = run_config(**{"parallel.num_devices": 4, "optim.batch_size": 4, "run.checkpoint_every": 1,
                         "run.probe_batch_size": 0})
  lines = []
  _, results = loop.run(config, str(workdir), log=lines.append)
  out = "\n".join(lines)
  assert "devices used=4 of 4" in out and "per device=1" in out and "GFLOP" in out, out
  # Each program once: the final update-only epoch runs the same update program as the collecting ones.
  assert sorted(l.split()[1] for l in _compiled_lines(out)) == ["collect", "collect_rows", "update"], out
  assert results["game"] == "Catch" and results["seed"] == 0 and np.isfinite(results["score"])
  rows = read_metrics(str(workdir))
  assert any(k.startswith("wm/") for k in rows[0]) and any(k.startswith("ac/") for k in rows[0])
  assert any("perf/collect_call_seconds" in r for r in rows)
  assert os.listdir(workdir / "tb")
  _, dp_state, _ = run_files.load_run(str(workdir))
  _, ref_state, _ = run_files.load_run(str(ref_dir))
  first = config.schedule.initial_min_steps
  assert np.array_equal(np.asarray(dp_state.replay.obs[:, :first]), np.asarray(ref_state.replay.obs[:, :first]))

  resumed = tmp_path / "dp_resumed"
  _resume_from_earlier_checkpoint(workdir, resumed, EPOCHS - 1)
  lines = []
  loop.run(config, str(resumed), log=lines.append)
  assert any("nothing to re-step" in l for l in lines), lines
  assert [l.split()[1] for l in _compiled_lines("\n".join(lines))] == ["update"], lines
  assert _results(resumed) == _results(workdir)
  assert _untimed(read_metrics(str(resumed))) == _untimed(rows)


@pytest.mark.after_suite
def test_data_parallel_with_each_device_stepping_its_own_envs(tmp_path):
  """A pure-JAX env with 4 train envs on the 4 fake devices: collection runs inside shard_map, one env per
  device (parallel.sharded_collect_rows), the env state moving from device 0 (fresh or restored) to the
  mesh; the run resumed from its checkpoint at epoch 3 reproduces it exactly."""
  steps = {"schedule.steps_per_epoch": 56, "schedule.total_env_steps": 336, "schedule.initial_min_steps": 56,
           "schedule.initial_max_steps": 56}
  config = tiny_config(**{**RUN, **steps, "env.num_envs": 4, "replay.capacity": 200, "parallel.num_devices": 4,
                          "optim.batch_size": 4, "run.checkpoint_every": 3, "run.probe_batch_size": 0})
  workdir, lines = tmp_path / "dp4", []
  _, results = loop.run(config, str(workdir), log=lines.append)
  assert "data-parallel collection: each of the 4 devices steps its own 1 envs (shard_map)" in lines, lines
  assert results["env_steps"] == 336 and np.isfinite(results["score"])
  _, state, _ = run_files.load_run(str(workdir))
  assert (np.asarray(state.replay.episode_id)[:, :84] >= 0).any(axis=1).all()  # every env's rows were written
  resumed = tmp_path / "dp4_resumed"
  _resume_from_earlier_checkpoint(workdir, resumed, 3)
  lines = []
  loop.run(config, str(resumed), log=lines.append)
  assert any("nothing to re-step" in l for l in lines), lines
  assert _results(resumed) == _results(workdir)


def _snapshot(path):
  return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in Path(path).rglob("*"))


@pytest.mark.parametrize("args, message", [
    (["--preset=debug", "--game=NotAGame"], "unknown game"),
    (["--preset=debug", "--config.optim.batch_size=0"], "optim.batch_size"),
    (["--preset=debug", "--config.wm.kind=vae"], "wm.kind"),
    (["--preset=atari100k"], "--seed is required"),
    (["--preset=debug", "--config.no_such_field=1"], "no_such_field"),
    (["--preset=debug", "--num_seeds=2", "--config.parallel.num_devices=0"], "--num_seeds > 1"),
])
def test_bad_flags_fail_with_one_clear_line(tmp_path, args, message):
  workdir = tmp_path / "w"
  proc = _run_cli(*args, f"--workdir={workdir}", timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()


def test_only_fields_that_cannot_change_results_may_differ_on_resume(tmp_path):
  workdir = str(tmp_path / "w")
  assert not ckpt_lib.check_or_write_config(workdir, run_config(**{"run.checkpoint_every": 1}))
  assert ckpt_lib.check_or_write_config(
      workdir, run_config(**{"run.checkpoint_every": 3, "run.checkpoints_to_keep": 5}))
  with pytest.raises(ckpt_lib.WorkdirError, match=r"optim.lr: saved 0.0001 != requested 0.5"):
    ckpt_lib.check_or_write_config(workdir, run_config(**{"run.checkpoint_every": 3, "optim.lr": 0.5}))
  assert json.loads((tmp_path / "w" / ckpt_lib.CONFIG_FILE).read_text())["run"]["checkpoint_every"] == 1


def test_mismatched_config_refuses_and_leaves_workdir_untouched(reference):
  workdir, _ = reference
  before = _snapshot(workdir)
  proc = _run_cli("--preset=debug", f"--workdir={workdir}", "--config.optim.lr=0.5", timeout=120)
  assert proc.returncode == 1
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and "different config" in lines[0], proc.stderr
  assert _snapshot(workdir) == before


def test_replay_that_does_not_match_the_envs_refuses_to_resume(reference, tmp_path):
  """A damaged frame in the checkpointed replay (as another envpool/ale-py version would give): the
  resume stops with one line naming the step, and changes nothing in the workdir. The damaged checkpoint is
  saved without the env state (as Atari runs, and pure-JAX runs before env states were checkpointed, are):
  it is resumed by re-stepping the envs through the replay, which finds the damage."""
  ref_dir, _ = reference
  workdir = tmp_path / "damaged"
  _resume_from_earlier_checkpoint(ref_dir, workdir, EPOCHS - 1)
  checkpointer = ckpt_lib.Checkpointer(str(workdir))
  template = run_files.template_states(config_lib.freeze(run_config(**{"run.checkpoint_every": 1})))
  epoch, state, extra = checkpointer.restore_latest(template, {"num_epochs_collect": np.int64(-1)})
  replay = state.replay.replace(obs=state.replay.obs.at[0, 123, 5, 5, 0].add(1))
  shutil.rmtree(Path(checkpointer.directory) / str(epoch))
  checkpointer = ckpt_lib.Checkpointer(str(workdir))
  checkpointer.save(epoch, state.replace(replay=replay), extra)
  before = _snapshot(workdir)
  proc = _run_cli(*_tiny_flags(**{"run.checkpoint_every": 1}), f"--workdir={workdir}", timeout=300)
  assert proc.returncode == 1
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and "diverge from the replay at recorded step 123" in lines[0], proc.stderr
  assert _snapshot(workdir) == before
