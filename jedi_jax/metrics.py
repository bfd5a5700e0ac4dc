"""Atari100k scores: human-normalised scores, aggregates, bootstrap CIs and the game split.

Definitions (JEDI arXiv 2505.19698 and 2605.13013; rliable's conventions, Agarwal et al. 2021):
  * HNS_g = (score - random_g) / (human_g - random_g), with the human/random scores of the IRIS/DIAMOND
    repositories (`data/human_random_scores.json`).
  * mean, median: over games of each game's mean-over-seeds HNS.
  * iqm: 25% trimmed mean of the pooled per-run HNS (games x seeds), scipy's `trim_mean(x, 0.25)` convention.
  * optimality_gap: mean over the pooled runs of max(0, 1 - HNS) (rliable's threshold gamma = 1).
  * har_hns: (mean over games of 1 / (HNS_g + 0.1))^-1 with per-game mean HNS (arXiv 2605.13013). It is only
    defined while every HNS_g > -0.1; otherwise it is NaN.
  * num_superhuman: games whose mean HNS is >= 1 (a score equal to the human score counts, as in DIAMOND's
    Table 1 where IRIS's Pong score 14.6 = human counts; a 1e-9 tolerance absorbs float rounding).
  * Agent-Optimal / Human-Optimal (arXiv 2505.19698): a game is Agent-Optimal when the mean HNS of IRIS, TWM,
    DreamerV3 and STORM (per-game means) exceeds 0.75 (the sets ship in `data/atari100k_split.json`;
    tests/test_metrics.py recomputes them by this rule). Every aggregate is also reported on both sets, with
    keys prefixed `agent_optimal_` and `human_optimal_`.
  * CIs: stratified bootstrap (seeds resampled with replacement within each game), percentile intervals.

Inputs are `scores: {game: per-seed raw scores}`; a single number or a one-element list is one "seed" (e.g. a
baseline published as per-game means). Games may have different numbers of seeds; pooled statistics (iqm,
optimality_gap, performance profiles) then weight each run equally.

Subsets of the 26 games: every aggregate is computed over the games given, and the set aggregates over the
games given that belong to the set (NaN, with `*_num_games` = 0, when none do). Callers that need all 26 games
(`experiments/tables.py`) check with `validate_scores(..., require_all=True)`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Mapping, Sequence

import numpy as np

from jedi_jax.atari100k import GAMES, did_you_mean, read_data


def _load_split() -> tuple[tuple[str, ...], tuple[str, ...]]:
  split = json.loads(read_data("atari100k_split.json"))
  return tuple(split["agent_optimal"]), tuple(split["human_optimal"])


AGENT_OPTIMAL, HUMAN_OPTIMAL = _load_split()
# Published per-game means (DIAMOND paper Table 1, the model-free/search agents, BBF, REM and Simulus), column
# order of the CSV.
BASELINES: tuple[str, ...] = tuple(next(csv.reader(io.StringIO(read_data("atari100k_baselines.csv"))))[1:])
# Baselines whose per-run scores are shipped as `data/<name>.json` (where each comes from: data/SOURCES.md):
# IRIS and DIAMOND (5 runs per game), BBF (52-60 runs per game, arXiv 2305.19452), REM (5, arXiv 2402.05643)
# and Simulus (5, arXiv 2502.11537; the agent was first called M3).
PER_RUN_BASELINES: tuple[str, ...] = ("IRIS", "DIAMOND", "BBF", "REM", "Simulus")

HAR_HNS_OFFSET = 0.1          # Har-HNS: 1 / (HNS + 0.1)
SUPERHUMAN_TOLERANCE = 1e-9   # mean HNS >= 1 - tol counts as superhuman

METRICS: tuple[str, ...] = ("mean", "median", "iqm", "optimality_gap", "har_hns", "num_superhuman")
SET_PREFIXES: tuple[str, ...] = ("", "agent_optimal_", "human_optimal_")
# Every key that `aggregate` returns and `bootstrap_ci` gives an interval for.
AGGREGATE_KEYS: tuple[str, ...] = tuple(p + m for p in SET_PREFIXES for m in METRICS)


class ScoreError(ValueError):
  """Bad score input: unknown or missing game, empty seed list, non-finite score."""


# --- Reference data --------------------------------------------------------------------------------------


@functools.cache
def _human_random() -> Mapping[str, tuple[float, float]]:
  table = json.loads(read_data("human_random_scores.json"))
  return {g: (float(v["random"]), float(v["human"])) for g, v in table.items()}


@functools.cache
def _baseline_table() -> Mapping[str, Mapping[str, float]]:
  rows = csv.DictReader(io.StringIO(read_data("atari100k_baselines.csv")))
  table = {name: {} for name in BASELINES}
  for row in rows:
    for name in BASELINES:
      table[name][row["game"]] = float(row[name])
  return table


def _check_game(game: str) -> None:
  if isinstance(game, str) and game in _human_random():
    return
  if not isinstance(game, str):
    raise ScoreError(f"game names must be strings, got {game!r}")
  raise ScoreError(f"unknown Atari100k game {game!r}{did_you_mean(game, GAMES)} "
                   f"(known games: {', '.join(GAMES)})")


def random_score(game: str) -> float:
  """Score of the uniformly random policy on `game` (IRIS/DIAMOND RANDOM.json)."""
  _check_game(game)
  return _human_random()[game][0]


def human_score(game: str) -> float:
  """Human score on `game` (IRIS/DIAMOND HUMAN.json)."""
  _check_game(game)
  return _human_random()[game][1]


def baseline_scores(name: str, per_run: bool = True) -> dict[str, list[float]]:
  """Published scores of a baseline, as `{game: [score, ...]}` for all 26 games.

  Args:
    name: one of `BASELINES` (e.g. "IRIS", "DIAMOND", "STORM", "BBF").
    per_run: for `PER_RUN_BASELINES` return the per-run scores of their public results files; otherwise (and
      for every other baseline) return the published per-game mean as a single "seed".
  """
  if name not in BASELINES:
    raise ScoreError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")
  if per_run and name in PER_RUN_BASELINES:
    runs = json.loads(read_data(f"{name}.json"))
    return {g: [float(s) for s in runs[g]] for g in GAMES}
  return {g: [_baseline_table()[name][g]] for g in GAMES}


# --- Normalisation and validation ------------------------------------------------------------------------


def human_normalized(game: str, score):
  """Human-normalised score (score - random) / (human - random); vectorised over `score`.

  Args:
    game: an Atari100k game name, e.g. "Breakout" (an unknown name raises `ScoreError`).
    score: a raw score or an array of raw scores.

  Returns:
    A float for a scalar `score`, else a float64 array of `score`'s shape.
  """
  _check_game(game)
  rand, human = _human_random()[game]
  hns = (np.asarray(score, dtype=np.float64) - rand) / (human - rand)
  return float(hns) if hns.ndim == 0 else hns


def validate_scores(scores: Mapping[str, object], require_all: bool = False) -> dict[str, np.ndarray]:
  """Checks `{game: per-seed scores}` and returns it as `{game: float64 [S_g]}`, in `GAMES` order.

  Raises `ScoreError` naming the offending game for: an unknown game, an empty seed list, a non-numeric,
  NaN or infinite score, no games at all, and (with `require_all`) any of the 26 games missing.
  """
  if not isinstance(scores, Mapping):
    raise ScoreError(f"scores must map game -> list of per-seed scores, got {type(scores).__name__}")
  for game in scores:
    _check_game(game)
  if not scores:
    raise ScoreError("no games in the scores")
  if require_all:
    missing = [g for g in GAMES if g not in scores]
    if missing:
      raise ScoreError(f"missing {len(missing)} of the 26 Atari100k games: {', '.join(missing)}")
  out = {}
  for game in GAMES:
    if game not in scores:
      continue
    try:
      runs = np.atleast_1d(np.asarray(scores[game], dtype=np.float64))
    except (TypeError, ValueError):
      raise ScoreError(f"{game}: scores must be numbers, got {scores[game]!r}") from None
    if runs.ndim != 1:
      raise ScoreError(f"{game}: expected a flat list of per-seed scores, got shape {runs.shape}")
    if runs.size == 0:
      raise ScoreError(f"{game}: empty list of per-seed scores")
    bad = np.flatnonzero(~np.isfinite(runs))
    if bad.size:
      raise ScoreError(f"{game}: non-finite score {runs[bad[0]]} (seed index {bad[0]})")
    out[game] = runs
  return out


def normalize(scores: Mapping[str, object]) -> dict[str, np.ndarray]:
  """Validated `{game: per-seed HNS float64 [S_g]}` in `GAMES` order."""
  return {g: human_normalized(g, runs) for g, runs in validate_scores(scores).items()}


# --- Statistics ------------------------------------------------------------------------------------------


def trim_mean(x, proportion: float = 0.25, axis: int = -1) -> np.ndarray:
  """Trimmed mean with scipy.stats.trim_mean's convention (no scipy needed).

  Sorts along `axis`, drops `int(proportion * n)` values from each end and averages the rest. So the IQM of
  n runs drops floor(n / 4) from each end: with n = 5, one from each end; with n = 3, none.
  """
  x = np.asarray(x, dtype=np.float64)
  n = x.shape[axis]
  cut = int(proportion * n)
  if cut > n - cut:
    raise ValueError(f"trim proportion {proportion} too big for {n} values")
  kept = np.take(np.sort(x, axis=axis), np.arange(cut, n - cut), axis=axis)
  return kept.mean(axis=axis)


def _set_membership(games: Sequence[str]) -> dict[str, np.ndarray]:
  """Indices into `games` of the games of each set, keyed by key prefix."""
  return {
      "": np.arange(len(games)),
      "agent_optimal_": np.array([i for i, g in enumerate(games) if g in AGENT_OPTIMAL], dtype=int),
      "human_optimal_": np.array([i for i, g in enumerate(games) if g in HUMAN_OPTIMAL], dtype=int),
  }


def _aggregates_of_runs(runs: Sequence[np.ndarray], games: Sequence[str]) -> dict[str, np.ndarray]:
  """All aggregates of R replicates at once.

  Args:
    runs: per game, HNS of shape [R, S_g] (R replicates, e.g. bootstrap resamples, of S_g seeds).
    games: the game of each entry of `runs`.

  Returns:
    `{key: [R]}` for every key of `AGGREGATE_KEYS`.
  """
  num_reps = runs[0].shape[0]
  game_means = np.stack([r.mean(axis=1) for r in runs], axis=1)  # [R, G]
  out = {}
  for prefix, idx in _set_membership(games).items():
    if idx.size == 0:
      for metric in METRICS:
        out[prefix + metric] = np.full(num_reps, np.nan)
      continue
    gm = game_means[:, idx]                                        # [R, G_s]
    pooled = np.concatenate([runs[i] for i in idx], axis=1)        # [R, N_s]
    shifted = gm + HAR_HNS_OFFSET
    with np.errstate(divide="ignore"):
      har = 1.0 / np.mean(1.0 / shifted, axis=1)
    out[prefix + "mean"] = gm.mean(axis=1)
    out[prefix + "median"] = np.median(gm, axis=1)
    out[prefix + "iqm"] = trim_mean(pooled, 0.25, axis=1)
    out[prefix + "optimality_gap"] = np.maximum(0.0, 1.0 - pooled).mean(axis=1)
    out[prefix + "har_hns"] = np.where(np.all(shifted > 0, axis=1), har, np.nan)
    out[prefix + "num_superhuman"] = np.sum(gm >= 1.0 - SUPERHUMAN_TOLERANCE, axis=1).astype(np.float64)
  return out


def aggregate(scores: Mapping[str, object]) -> dict[str, float]:
  """Aggregate human-normalised scores of one agent.

  Args:
    scores: `{game: per-seed raw scores}` (any subset of the 26 games; see the module docstring).

  Returns:
    A plain dict of floats: every key of `AGGREGATE_KEYS` (`mean`, `median`, `iqm`, `optimality_gap`,
    `har_hns`, `num_superhuman`, and the same six prefixed `agent_optimal_` / `human_optimal_`), plus
    `num_games`, `num_runs` and `{prefix}num_games` for both sets.
  """
  hns = normalize(scores)
  games = list(hns)
  agg = _aggregates_of_runs([r[None, :] for r in hns.values()], games)
  out = {k: float(v[0]) for k, v in agg.items()}
  out["num_superhuman"] = int(out["num_superhuman"])
  for prefix, idx in _set_membership(games).items():
    out[prefix + "num_games"] = int(idx.size)
    if idx.size:
      out[prefix + "num_superhuman"] = int(out[prefix + "num_superhuman"])
  out["num_runs"] = int(sum(r.size for r in hns.values()))
  return out


def _stratified_resamples(hns: Mapping[str, np.ndarray], num_reps: int, rng: np.random.Generator):
  """Per game, [num_reps, S_g] HNS resampled with replacement from that game's own seeds."""
  return [runs[rng.integers(0, runs.size, size=(num_reps, runs.size))] for runs in hns.values()]


def bootstrap_aggregates(scores: Mapping[str, object], num_reps: int = 2000, seed: int = 0,
                         chunk: int = 5000) -> dict[str, np.ndarray]:
  """Stratified-bootstrap replicates of every aggregate: `{key: [num_reps]}`.

  Each replicate resamples, independently within each game, that game's seeds with replacement, then
  recomputes all aggregates (all games and both sets from the same resample). Deterministic given `seed`.
  A game with a single seed contributes the same value to every replicate.
  """
  if num_reps < 1:
    raise ValueError(f"num_reps must be >= 1, got {num_reps}")
  hns = normalize(scores)
  rng = np.random.default_rng(seed)
  parts = []
  for start in range(0, num_reps, chunk):
    reps = min(chunk, num_reps - start)
    parts.append(_aggregates_of_runs(_stratified_resamples(hns, reps, rng), list(hns)))
  return {k: np.concatenate([p[k] for p in parts]) for k in AGGREGATE_KEYS}


def percentile_interval(replicates, confidence: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval (rliable/arch 'percentile' method): the (1-c)/2 and (1+c)/2 quantiles."""
  tail = 100.0 * (1.0 - confidence) / 2.0
  lo, hi = np.percentile(np.asarray(replicates, dtype=np.float64), [tail, 100.0 - tail])
  return float(lo), float(hi)


def mean_ci(x, num_reps: int = 10_000, seed: int = 0, y=None,
            confidence: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap CI of `mean(x)`, or of `mean(x) - mean(y)` resampling both samples independently.

  For one run's test-game returns against the random policy's (experiments/learning_report.py).
  """
  rng = np.random.default_rng(seed)
  x = np.asarray(x, dtype=np.float64)
  stats = x[rng.integers(0, len(x), (num_reps, len(x)))].mean(1)
  if y is not None:
    y = np.asarray(y, dtype=np.float64)
    stats = stats - y[rng.integers(0, len(y), (num_reps, len(y)))].mean(1)
  return percentile_interval(stats, confidence)


def bootstrap_ci(scores: Mapping[str, object], num_reps: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, tuple[float, float]]:
  """Stratified-bootstrap percentile CI `(low, high)` for every key of `AGGREGATE_KEYS`.

  NaN bounds where the aggregate is undefined (an empty set, or Har-HNS with some HNS_g <= -0.1).
  """
  reps = bootstrap_aggregates(scores, num_reps=num_reps, seed=seed)
  return {k: percentile_interval(v, confidence) for k, v in reps.items()}


def performance_profile(scores: Mapping[str, object], taus) -> np.ndarray:
  """Run-score distribution: fraction of pooled runs (games x seeds) with HNS > tau, for each tau. [T]"""
  pooled = np.concatenate(list(normalize(scores).values()))
  return np.mean(pooled[:, None] > np.asarray(taus, dtype=np.float64)[None, :], axis=0)


def performance_profile_ci(scores: Mapping[str, object], taus, num_reps: int = 2000, seed: int = 0,
                           confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """Stratified-bootstrap percentile band `(low [T], high [T])` of `performance_profile`."""
  hns = normalize(scores)
  taus = np.asarray(taus, dtype=np.float64)
  rng = np.random.default_rng(seed)
  profiles = []
  for start in range(0, num_reps, 500):
    pooled = np.concatenate(_stratified_resamples(hns, min(500, num_reps - start), rng), axis=1)  # [R, N]
    profiles.append(np.mean(pooled[:, :, None] > taus[None, None, :], axis=1))                  # [R, T]
  tail = 100.0 * (1.0 - confidence) / 2.0
  lo, hi = np.percentile(np.concatenate(profiles), [tail, 100.0 - tail], axis=0)
  return lo, hi
