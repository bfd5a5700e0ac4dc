"""The learning report's confidence intervals (`metrics.mean_ci`): exact on constants, and they separate or
overlap as they should."""

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
