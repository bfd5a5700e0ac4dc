"""The learning report's confidence intervals: exact on constants, and they separate or overlap as they should."""

import numpy as np

from experiments.learning_report import bootstrap_ci


def test_bootstrap_ci_of_a_constant_is_the_constant():
  rng = np.random.default_rng(0)
  assert bootstrap_ci([3.0] * 10, rng, 200) == (3.0, 3.0)
  assert bootstrap_ci([3.0] * 10, rng, 200, y=[1.0] * 7) == (2.0, 2.0)


def test_difference_ci_separates_distinct_samples_and_spans_zero_for_equal_ones():
  rng = np.random.default_rng(0)
  a = rng.normal(5.0, 1.0, 100)
  b = rng.normal(0.0, 1.0, 200)
  lo, hi = bootstrap_ci(a, rng, 2000, y=b)
  assert 4.0 < lo < np.mean(a) - np.mean(b) < hi < 6.0
  lo, hi = bootstrap_ci(b[:100], rng, 2000, y=b[100:])
  assert lo < 0 < hi
