"""Tests for jedi_jax.metrics: every expected value below is computed by hand, not by the library."""

import numpy as np
import pytest

from jedi_jax import metrics

# A small hand-made input. Human/random (HUMAN.json / RANDOM.json):
#   Freeway (agent-optimal): random 0.0, human 29.6  -> HNS = s / 29.6
#   Boxing  (agent-optimal): random 0.1, human 12.1  -> HNS = (s - 0.1) / 12
#   Asterix (human-optimal): random 210, human 8503.3 -> HNS = (s - 210) / 8293.3
SMALL = {
    "Freeway": [0.0, 29.6],      # HNS [0, 1],   game mean 0.5
    "Boxing": [36.1, 24.1],      # HNS [3, 2],   game mean 2.5
    "Asterix": [210.0, 4356.65],  # HNS [0, 0.5], game mean 0.25
}


def test_reference_lists():
  assert len(metrics.GAMES) == 26 and metrics.GAMES[0] == "Alien" and metrics.GAMES[-1] == "UpNDown"
  assert len(metrics.AGENT_OPTIMAL) == 13 and len(metrics.HUMAN_OPTIMAL) == 13
  assert set(metrics.AGENT_OPTIMAL) | set(metrics.HUMAN_OPTIMAL) == set(metrics.GAMES)
  assert not set(metrics.AGENT_OPTIMAL) & set(metrics.HUMAN_OPTIMAL)
  assert isinstance(metrics.AGENT_OPTIMAL, tuple) and isinstance(metrics.HUMAN_OPTIMAL, tuple)
  assert "Freeway" in metrics.AGENT_OPTIMAL and "Seaquest" in metrics.HUMAN_OPTIMAL
  assert metrics.BASELINES == ("SimPLe", "TWM", "IRIS", "DreamerV3", "STORM", "DIAMOND", "MuZero",
                               "EfficientZero", "CURL", "SPR", "SR-SPR", "BBF", "REM", "Simulus")
  assert metrics.human_score("Pong") == 14.6 and metrics.random_score("Pong") == -20.7


def test_human_normalized_hand_values():
  assert metrics.human_normalized("Pong", 14.6) == pytest.approx(1.0)
  assert metrics.human_normalized("Pong", -20.7) == pytest.approx(0.0)
  assert metrics.human_normalized("Pong", 0.0) == pytest.approx(20.7 / 35.3)          # 0.58640
  assert metrics.human_normalized("Breakout", 59.3) == pytest.approx(2.0)              # (59.3-1.7)/28.8
  assert metrics.human_normalized("Boxing", 86.9) == pytest.approx(7.233333333)        # (86.9-0.1)/12
  assert metrics.human_normalized("Krull", 1064.25) == pytest.approx(-0.5)             # 1598-0.5*1067.5
  got = metrics.human_normalized("Freeway", [[0.0, 14.8], [29.6, 44.4]])
  np.testing.assert_allclose(got, [[0.0, 0.5], [1.0, 1.5]])
  assert isinstance(metrics.human_normalized("Freeway", 14.8), float)


def test_unknown_game_is_a_clear_error():
  with pytest.raises(metrics.ScoreError, match=r"unknown Atari100k game 'BreakOut'.*did you mean 'Breakout'"):
    metrics.human_normalized("BreakOut", 1.0)
  with pytest.raises(metrics.ScoreError, match="'Tetris'"):
    metrics.aggregate({"Tetris": [1.0]})


def test_trim_mean_hand_values():
  # n values -> int(0.25 n) dropped from each end.
  assert metrics.trim_mean([5, 1, 4, 2, 3]) == pytest.approx(3.0)            # drop 1 each end: 2, 3, 4
  assert metrics.trim_mean([10, 0, 1, 2]) == pytest.approx(1.5)              # 1, 2
  assert metrics.trim_mean([0, 1, 10]) == pytest.approx(11 / 3)              # nothing dropped
  assert metrics.trim_mean([8, 7, 6, 5, 4, 3, 2, 1]) == pytest.approx(4.5)   # 3, 4, 5, 6
  assert metrics.trim_mean([0, 0, 0, 1, 1, 100, 100]) == pytest.approx(20.4)  # 0, 0, 1, 1, 100
  np.testing.assert_allclose(metrics.trim_mean([[5, 1, 4, 2, 3], [0, 0, 9, 9, 9]], axis=1), [3.0, 6.0])
  with pytest.raises(ValueError):
    metrics.trim_mean([1, 2, 3], 0.9)


def test_trim_mean_matches_scipy():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  for n in range(1, 40):
    x = rng.normal(size=n) ** 3
    assert metrics.trim_mean(x, 0.25) == pytest.approx(stats.trim_mean(x, 0.25), abs=1e-12)


def test_aggregate_hand_computed():
  agg = metrics.aggregate(SMALL)
  # Game means (Asterix, Boxing, Freeway) = 0.25, 2.5, 0.5; pooled runs 0, 0.5, 3, 2, 0, 1.
  assert agg["mean"] == pytest.approx(3.25 / 3)
  assert agg["median"] == pytest.approx(0.5)
  assert agg["iqm"] == pytest.approx(0.875)               # sorted 0,0,.5,1,2,3 -> drop 1 each end
  assert agg["optimality_gap"] == pytest.approx(2.5 / 6)  # 1 + .5 + 0 + 0 + 1 + 0
  assert agg["har_hns"] == pytest.approx(819 / 1340)      # 3 / (1/.35 + 1/2.6 + 1/.6) = 3 / (1340/273)
  assert agg["num_superhuman"] == 1
  assert agg["num_games"] == 3 and agg["num_runs"] == 6
  # Agent-Optimal: Boxing, Freeway.
  assert agg["agent_optimal_mean"] == pytest.approx(1.5)
  assert agg["agent_optimal_median"] == pytest.approx(1.5)
  assert agg["agent_optimal_iqm"] == pytest.approx(1.5)   # sorted 0,1,2,3 -> 1, 2
  assert agg["agent_optimal_optimality_gap"] == pytest.approx(0.25)
  assert agg["agent_optimal_har_hns"] == pytest.approx(0.975)  # 2 / (1/2.6 + 1/.6) = 2 / (80/39)
  assert agg["agent_optimal_num_superhuman"] == 1
  assert agg["agent_optimal_num_games"] == 2
  # Human-Optimal: Asterix.
  assert agg["human_optimal_mean"] == pytest.approx(0.25)
  assert agg["human_optimal_median"] == pytest.approx(0.25)
  assert agg["human_optimal_iqm"] == pytest.approx(0.25)
  assert agg["human_optimal_optimality_gap"] == pytest.approx(0.75)
  assert agg["human_optimal_har_hns"] == pytest.approx(0.35)
  assert agg["human_optimal_num_superhuman"] == 0
  assert set(metrics.AGGREGATE_KEYS) <= set(agg)
  assert all(isinstance(v, (int, float)) for v in agg.values())


def test_aggregate_single_seed_baseline_and_scalars():
  # Per-game means only: scalars and one-element lists are one seed each.
  agg = metrics.aggregate({"Freeway": 14.8, "Boxing": [24.1], "Pong": [14.6], "Breakout": 1.7})
  # HNS: Freeway 0.5, Boxing 2, Pong 1, Breakout 0 -> sorted 0, .5, 1, 2.
  assert agg["mean"] == pytest.approx(0.875)
  assert agg["median"] == pytest.approx(0.75)
  assert agg["iqm"] == pytest.approx(0.75)
  assert agg["optimality_gap"] == pytest.approx(0.375)  # (.5 + 0 + 0 + 1) / 4
  assert agg["num_superhuman"] == 2                     # Boxing; Pong at exactly human counts
  assert np.isnan(agg["human_optimal_mean"]) and agg["human_optimal_num_games"] == 0


def test_superhuman_convention():
  assert metrics.aggregate({"Pong": [14.6]})["num_superhuman"] == 1           # HNS exactly 1
  assert metrics.aggregate({"Pong": [14.5, 14.6]})["num_superhuman"] == 0     # mean just below human
  assert metrics.aggregate({"Pong": [13.6, 15.6]})["num_superhuman"] == 1     # mean equal to human


def test_har_hns_undefined_below_minus_point_one():
  # Freeway -5.92 -> HNS -0.2, so 1 / (HNS + 0.1) is negative: Har-HNS is NaN.
  agg = metrics.aggregate({"Freeway": [-5.92], "Boxing": [24.1]})
  assert np.isnan(agg["har_hns"])
  assert agg["mean"] == pytest.approx(0.9)


@pytest.mark.parametrize("scores, message", [
    ({"Pong": []}, "Pong: empty list"),
    ({"Pong": [1.0, float("nan")]}, r"Pong: non-finite score nan \(seed index 1\)"),
    ({"Pong": [float("inf")]}, "Pong: non-finite"),
    ({"Pong": ["a lot"]}, "Pong: scores must be numbers"),
    ({"Pong": [[1.0, 2.0]]}, "Pong: expected a flat list"),
    ({}, "no games"),
    ({"pong": [1.0]}, "did you mean 'Pong'"),
])
def test_bad_scores(scores, message):
  with pytest.raises(metrics.ScoreError, match=message):
    metrics.aggregate(scores)


def test_require_all_names_missing_games():
  scores = {g: [0.0] for g in metrics.GAMES if g not in ("Pong", "Qbert")}
  with pytest.raises(metrics.ScoreError, match="missing 2 of the 26 Atari100k games: Pong, Qbert"):
    metrics.validate_scores(scores, require_all=True)
  assert list(metrics.validate_scores(scores)) == [g for g in metrics.GAMES if g not in ("Pong", "Qbert")]


def test_bootstrap_resamples_within_each_game():
  # Freeway HNS [0, 1]; Boxing HNS [10, 10] (120.1). A resample of Freeway's two seeds has mean 0, .5 or 1
  # (probabilities 1/4, 1/2, 1/4), so the mean over the two games is 5, 5.25 or 5.5 and nothing else.
  scores = {"Freeway": [0.0, 29.6], "Boxing": [120.1, 120.1]}
  reps = metrics.bootstrap_aggregates(scores, num_reps=4000, seed=1)
  np.testing.assert_allclose(np.unique(reps["mean"]), [5.0, 5.25, 5.5])
  assert np.mean(np.isclose(reps["mean"], 5.25)) == pytest.approx(0.5, abs=0.04)
  assert np.mean(np.isclose(reps["mean"], 5.0)) == pytest.approx(0.25, abs=0.04)
  ci = metrics.bootstrap_ci(scores, num_reps=4000, seed=1)
  assert ci["mean"] == pytest.approx((5.0, 5.5))
  assert ci["num_superhuman"] == pytest.approx((1.0, 2.0))  # Freeway superhuman iff both draws are seed 2
  assert np.isnan(ci["human_optimal_mean"][0])


def test_bootstrap_is_seeded_and_degenerate_for_one_seed():
  a = metrics.bootstrap_aggregates(SMALL, num_reps=300, seed=3)
  np.testing.assert_array_equal(a["iqm"], metrics.bootstrap_aggregates(SMALL, num_reps=300, seed=3)["iqm"])
  assert not np.array_equal(a["iqm"], metrics.bootstrap_aggregates(SMALL, num_reps=300, seed=4)["iqm"])
  assert metrics.bootstrap_ci(SMALL, num_reps=300, seed=3) == metrics.bootstrap_ci(SMALL, num_reps=300, seed=3)
  one = {"Freeway": [14.8], "Boxing": [24.1]}   # HNS 0.5, 2
  ci = metrics.bootstrap_ci(one, num_reps=50, seed=0)
  assert ci["mean"] == pytest.approx((1.25, 1.25))
  assert ci["iqm"] == pytest.approx((1.25, 1.25))


def test_percentile_interval():
  assert metrics.percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))
  assert metrics.percentile_interval(np.arange(101.0), confidence=0.9) == pytest.approx((5.0, 95.0))


def test_performance_profile_hand_values():
  taus = [0.0, 0.5, 1.0, 2.5]
  # Pooled runs 0, 0.5, 3, 2, 0, 1 -> strictly greater than tau.
  np.testing.assert_allclose(metrics.performance_profile(SMALL, taus), [4 / 6, 3 / 6, 2 / 6, 1 / 6])
  lo, hi = metrics.performance_profile_ci({"Freeway": [14.8], "Boxing": [24.1]}, taus, num_reps=20)
  np.testing.assert_allclose(lo, [1.0, 0.5, 0.5, 0.0])
  np.testing.assert_allclose(hi, lo)
  lo, hi = metrics.performance_profile_ci(SMALL, taus, num_reps=500, seed=0)
  assert np.all(lo <= metrics.performance_profile(SMALL, taus) + 1e-12)
  assert np.all(hi >= metrics.performance_profile(SMALL, taus) - 1e-12)


def split_from_baselines(threshold=0.75, baselines=("IRIS", "TWM", "DreamerV3", "STORM")):
  """The split rule of arXiv 2505.19698: a game is Agent-Optimal iff the mean over `baselines` of their
  per-game-mean HNS exceeds `threshold`. Returns `(agent_optimal, human_optimal)` in `GAMES` order."""
  tables = {b: metrics.baseline_scores(b, per_run=False) for b in baselines}
  agent, human = [], []
  for game in metrics.GAMES:
    mean_hns = np.mean([metrics.human_normalized(game, tables[b][game][0]) for b in baselines])
    (agent if mean_hns > threshold else human).append(game)
  return tuple(agent), tuple(human)


def test_split_recomputed_from_baselines():
  agent, human = split_from_baselines()
  assert agent == metrics.AGENT_OPTIMAL and human == metrics.HUMAN_OPTIMAL
  # Freeway is the closest call: (31.1 + 24.3 + 0.0 + 33.5) / 29.6 / 4 = 0.75084 > 0.75.
  agent, human = split_from_baselines(threshold=0.751)
  assert "Freeway" in human and "Freeway" not in agent and len(agent) == 12


def test_baselines():
  iris = metrics.baseline_scores("IRIS")
  assert len(iris) == 26 and all(len(v) == 5 for v in iris.values())
  means = metrics.baseline_scores("IRIS", per_run=False)
  for g in metrics.GAMES:
    assert np.mean(iris[g]) == pytest.approx(means[g][0], abs=0.05)
  assert metrics.baseline_scores("STORM")["Pong"] == [11.3]
  with pytest.raises(metrics.ScoreError, match="unknown baseline 'Dreamer'"):
    metrics.baseline_scores("Dreamer")


def test_published_aggregates():
  # DIAMOND paper (arXiv 2405.12399) Table 1, from the 5 published runs per game.
  diamond = metrics.aggregate(metrics.baseline_scores("DIAMOND"))
  assert round(diamond["mean"], 3) == 1.459
  assert round(diamond["median"], 3) == 0.373
  assert round(diamond["iqm"], 3) == 0.641
  assert round(diamond["optimality_gap"], 3) == 0.480
  assert diamond["num_superhuman"] == 11
  iris = metrics.aggregate(metrics.baseline_scores("IRIS"))
  assert (round(iris["mean"], 3), round(iris["median"], 3)) == (1.046, 0.289)
  assert (round(iris["iqm"], 3), round(iris["optimality_gap"], 3)) == (0.501, 0.512)
  assert iris["num_superhuman"] == 10
  ci = metrics.bootstrap_ci(metrics.baseline_scores("DIAMOND"), num_reps=500)
  for key in ("mean", "median", "iqm", "optimality_gap", "har_hns"):
    assert ci[key][0] <= diamond[key] <= ci[key][1]


def test_newer_baselines_per_run():
  """BBF, REM and Simulus (M3): counts and values as in their public results files (data/SOURCES.md)."""
  bbf, rem, simulus = (metrics.baseline_scores(b) for b in ("BBF", "REM", "Simulus"))
  assert set(bbf) == set(rem) == set(simulus) == set(metrics.GAMES)
  assert all(len(v) == 5 for v in rem.values()) and all(len(v) == 5 for v in simulus.values())
  # RR8_BBF.csv: 20 runs per game (two per game in each of 10 blocks) plus 32-40 of a second series.
  assert {g: len(v) for g, v in bbf.items() if len(v) != 60} == {
      "Alien": 56, "Assault": 56, "Asterix": 56, "BankHeist": 52, "Breakout": 56, "DemonAttack": 56,
      "Frostbite": 56, "Hero": 52, "Kangaroo": 56, "Krull": 56, "Pong": 56}
  # First and last rows of RR8_BBF.csv for Alien (seeds 11623, 11624 ... 31385) and Pong's worst run.
  assert bbf["Alien"][:2] == [1032.5, 1428.1] and bbf["Alien"][-1] == 1060.7 and min(bbf["Pong"]) == -13.57
  assert rem["Alien"] == [912, 835.3, 496.6, 462.5, 329.8]
  assert simulus["Alien"] == [905.3, 611.5, 652.3, 672.7, 594.1]
  # Simulus README's Atari100K table (five-seed means, two decimals).
  for game, mean in (("Breakout", 148.86), ("KungFuMaster", 31705.40), ("Seaquest", 1800.44), ("UpNDown", 10416.54)):
    assert round(float(np.mean(simulus[game])), 2) == mean
  for name, runs in (("REM", rem), ("Simulus", simulus)):  # the CSV columns are the per-game means
    means = metrics.baseline_scores(name, per_run=False)
    for g in metrics.GAMES:
      assert np.mean(runs[g]) == pytest.approx(means[g][0], abs=0.005)
  # BBF's released runs are not the paper's table: per-game means within 14% of it (Frostbite the farthest).
  table = metrics.baseline_scores("BBF", per_run=False)
  gaps = {g: abs(np.mean(v) / table[g][0] - 1) for g, v in bbf.items()}
  assert max(gaps, key=gaps.get) == "Frostbite" and 0.13 < gaps["Frostbite"] < 0.14


def test_newer_baselines_aggregates():
  """Aggregates of the released runs (SOURCES.md); BBF's IQM is near the paper's 1.045 (its own human scores)."""
  expected = {"BBF": (2.238, 0.880, 1.023, 0.342, 12), "REM": (1.222, 0.280, 0.673, 0.482, 12),
              "Simulus": (1.645, 0.982, 0.990, 0.412, 13)}
  for name, (mean, median, iqm, gap, superhuman) in expected.items():
    agg = metrics.aggregate(metrics.baseline_scores(name))
    assert (round(agg["mean"], 3), round(agg["median"], 3), round(agg["iqm"], 3)) == (mean, median, iqm), name
    assert (round(agg["optimality_gap"], 3), agg["num_superhuman"]) == (gap, superhuman), name
    assert agg["agent_optimal_num_games"] == 13 and np.isfinite(agg["human_optimal_iqm"])
