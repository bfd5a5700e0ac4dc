"""The learning report: its confidence intervals (`metrics.mean_ci`: exact on constants, separating or
overlapping as they should), its test curves and wall times (`jedi_jax.logs`), and runs stopped before
their final test."""

import numpy as np

from jedi_jax import metrics


def test_mean_ci_of_a_constant_is_the_constant():
  assert metrics.mean_ci([3.0] * 10, num_reps=200) == (3.0, 3.0)
  assert metrics.mean_ci([3.0] * 10, num_reps=200, y=[1.0] * 7) == (2.0, 2.0)


def test_difference_ci_separates_distinct_samples_and_spans_zero_for_equal_ones():
  rng = np.random.default_rng(0)
  a = rng.normal(5.0, 1.0, 100)
  b = rng.normal(0.0, 1.0, 200)
  lo, hi = metrics.mean_ci(a, num_reps=2000, y=b)
  assert 4.0 < lo < np.mean(a) - np.mean(b) < hi < 6.0
  lo, hi = metrics.mean_ci(b[:100], num_reps=2000, y=b[100:])
  assert lo < 0 < hi


def test_mean_ci_matches_the_normal_approximation_for_a_large_sample():
  x = np.random.default_rng(1).normal(2.0, 3.0, 400)
  lo, hi = metrics.mean_ci(x, num_reps=4000, seed=0)
  half = 1.96 * x.std() / np.sqrt(len(x))
  np.testing.assert_allclose([lo, hi], [x.mean() - half, x.mean() + half], atol=0.06)


def test_interim_test_curves_end_with_the_final_test():
  from jedi_jax import logs  # experiments.learning_report's flags would clash with other launchers' in a worker
  rows = [{"epoch": 1, "env_steps": 100, "collect/game_return": -1.0},
          {"epoch": 2, "env_steps": 200, "test/episodes": 10, "test/return_mean": -0.2},
          {"epoch": 4, "env_steps": 400, "test/episodes": 10, "test/return_mean": 0.4},
          {"epoch": 5, "test/return_mean": 0.9}]  # the final test's row
  assert logs.interim_test_curves(rows, [{"env_steps": 500, "score": 0.9}]) == [([200, 400, 500], [-0.2, 0.4, 0.9])]
  packed = [dict(r, **{"test/return_mean_per_seed": [r["test/return_mean"] - 0.1, r["test/return_mean"] + 0.1]})
            for r in rows[1:3]]
  curves = logs.interim_test_curves(packed, [{"env_steps": 500, "score": 0.7}, {"env_steps": 500, "score": 1.0}])
  assert [c[0] for c in curves] == [[200, 400, 500]] * 2
  np.testing.assert_allclose(curves[0][1], [-0.3, 0.3, 0.7])
  np.testing.assert_allclose(curves[1][1], [-0.1, 0.5, 1.0])
  # A run stopped before its final test: its interim tests alone, one curve per packed seed.
  assert logs.interim_test_curves(rows[:3], []) == [([200, 400], [-0.2, 0.4])]
  np.testing.assert_allclose([c[1] for c in logs.interim_test_curves(packed, [])], [[-0.3, 0.3], [-0.1, 0.5]])
  assert logs.interim_test_curves(rows[:1], []) == []


def test_a_stopped_run_is_an_error_or_with_unfinished_a_row_that_says_where_it_stopped(tmp_path):
  import json
  import os
  import subprocess
  import sys
  workdir, rand, out = tmp_path / "run", tmp_path / "random", tmp_path / "out"
  workdir.mkdir(), rand.mkdir()
  config = {"game": "Breakout", "seed": 3, "preset": "atari_cpu", "wm": {"kind": "jedi"}, "env": {"backend": "envpool"}}
  (workdir / "config.json").write_text(json.dumps(config))
  rows = [{"epoch": 1, "env_steps": 1100, "collect/game_return": 1.0, "ac/policy_entropy": 1.9,
           "perf/wall_seconds": 900.0, "perf/compile_seconds": 40.0},
          {"epoch": 2, "env_steps": 1200, "test/episodes": 100, "test/return_mean": 1.5},
          {"epoch": 5, "env_steps": 1500, "collect/game_return": 2.0, "ac/policy_entropy": 1.8,
           "perf/wall_seconds": 1000.0, "perf/compile_seconds": 40.0}]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (rand / "Breakout.json").write_text(json.dumps({"episode_returns_per_seed": {"0": [1.0, 2.0, 0.0, 1.0]}}))
  root = os.path.join(os.path.dirname(__file__), os.pardir)
  cmd = [sys.executable, "-m", "experiments.learning_report", f"--runs={workdir}", f"--random={rand}",
         f"--out={out}", "--num_bootstrap=100"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
  assert proc.returncode != 0 and "has no results.json yet" in proc.stderr + proc.stdout
  proc = subprocess.run(cmd + ["--unfinished"], cwd=root, capture_output=True, text=True, env=env)
  assert proc.returncode == 0, proc.stderr
  table = (out / "learning.md").read_text().splitlines()
  assert table[2] == ("| Breakout | 3 | 1500 | - | stopped at epoch 5, no final test | 1.00 (0.25, 1.75) | - | "
                      "no final test | 1.800 / 2.000 | 1,040 s (0.29 h) |"), table
  assert (out / "Breakout_seed_3_curve.png").exists() and (out / "Breakout_test_curves.png").exists()
  assert not (out / "runs").exists()


def test_run_wall_seconds_adds_the_segments_of_a_resumed_run():
  from jedi_jax import logs
  first = [{"epoch": 1, "perf/wall_seconds": 900.0, "perf/compile_seconds": 50.0},
           {"epoch": 10, "perf/wall_seconds": 1300.0, "perf/compile_seconds": 50.0},
           {"epoch": 10, "test/episodes": 100, "test/return_mean": 2.0, "perf/test_seconds": 30.0}]
  # Resumed at epoch 10: its clock restarts; the final test's row closes it.
  second = [{"epoch": 15, "perf/wall_seconds": 200.0, "perf/compile_seconds": 45.0},
            {"epoch": 20, "perf/wall_seconds": 400.0, "perf/compile_seconds": 45.0}]
  final = {"epoch": 20, "test/return_mean": 2.5, "perf/train_seconds": 460.0, "perf/test_seconds": 35.0}
  assert logs.run_wall_seconds(first) == 1350.0
  assert logs.run_wall_seconds(first + second) == 1350.0 + 445.0
  assert logs.run_wall_seconds(first + second + [final]) == 1350.0 + 460.0 + 35.0
  assert logs.run_wall_seconds(first[2:]) is None
  # A process killed after little work, whose clock the next one passes: told apart by its start time.
  short = [dict(first[0], **{"perf/wall_seconds": 100.0, "perf/process_start": 1.0})]
  longer = [dict(r, **{"perf/process_start": 2.0}) for r in second]
  assert logs.run_wall_seconds(short + longer) == 150.0 + 445.0
