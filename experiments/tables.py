r"""Atari100k result tables and plots: our runs beside the published baselines.

    python -m experiments.tables --results=PATH [--baselines=IRIS,DIAMOND,...] [--format=markdown|latex|csv]
        [--name=Ours] [--out=DIR] [--num_bootstrap=10000] [--seed=0] [--allow_missing]

`--results` is either
  * a JSON file in DIAMOND's `results/data/DIAMOND.json` format, `{game: [per-seed final score, ...]}`, or
  * a directory searched recursively for the trainer's `results.json` files, each
    `{"game", "seed", "score", "config_hash", "preset", "num_test_episodes", "episode_returns"}`; runs of one
    game pool into one list of seeds (the same game and seed twice is an error; mixed config hashes warn).

Prints three tables: per-game raw scores beside the baselines (best agent in bold), the aggregates (Mean,
Median, IQM, Optimality gap, Har-HNS, #Superhuman) with stratified-bootstrap 95% CIs, and the same aggregates on
the Agent-Optimal and Human-Optimal sets side by side. `--out` also writes the tables as files, a
`summary.json`, and three PNG plots. Definitions: `jedi_jax/metrics.py`.

Baselines: IRIS, DIAMOND, REM and Simulus (M3) use their 5 published runs per game and BBF its 52-60 (so they
get CIs; `jedi_jax/data/SOURCES.md` says where each file comes from); the others only have published per-game
means, aggregated as one run per game (no CI; IQM and optimality gap over 26 values). The per-game table shows
the published per-game means (for BBF the paper's table, which is not the mean of its released runs).
All 26 games are required unless `--allow_missing`, which aggregates every column over the games given.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence

from absl import app
from absl import flags
import numpy as np

from jedi_jax import metrics

WORLD_MODEL_BASELINES = ("SimPLe", "TWM", "IRIS", "DreamerV3", "STORM", "DIAMOND")
FORMATS = ("markdown", "latex", "csv")
EXTENSIONS = {"markdown": "md", "latex": "tex", "csv": "csv"}
METRIC_LABELS = (("mean", "Mean"), ("median", "Median"), ("iqm", "IQM"), ("optimality_gap", "Optimality gap"),
                 ("har_hns", "Har-HNS"), ("num_superhuman", "#Superhuman"))
LOWER_IS_BETTER = ("optimality_gap",)
SETS = (("", "All games"), ("agent_optimal_", "Agent-Optimal"), ("human_optimal_", "Human-Optimal"))
PROFILE_TAUS = tuple(np.round(np.linspace(0.0, 8.0, 81), 3))

_RESULTS = flags.DEFINE_string("results", None, "DIAMOND-format JSON file, or a directory of run folders.")
_BASELINES = flags.DEFINE_list(
    "baselines", list(WORLD_MODEL_BASELINES),
    f"Published baselines to show ('all' for every one; empty for none). Known: {','.join(metrics.BASELINES)}.")
_FORMAT = flags.DEFINE_enum("format", "markdown", FORMATS, "Table format.")
_NAME = flags.DEFINE_string("name", "Ours", "Column name for the runs in --results.")
_OUT = flags.DEFINE_string("out", None, "If set, write the tables, summary.json and PNG plots here.")
_NUM_BOOTSTRAP = flags.DEFINE_integer("num_bootstrap", 10_000, "Stratified-bootstrap repetitions.")
_SEED = flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
_ALLOW_MISSING = flags.DEFINE_bool("allow_missing", False,
                                   "Aggregate over the games given instead of failing on missing games.")


class ResultsError(ValueError):
  """Unreadable or inconsistent results input."""


# --- Loading ---------------------------------------------------------------------------------------------


def _read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ResultsError(f"{path}: not valid JSON ({e})") from None


def _load_run_dirs(root: pathlib.Path) -> tuple[dict[str, list[float]], list[str]]:
  files = sorted(root.rglob("results.json"))
  if not files:
    raise ResultsError(f"no results.json found under {root}")
  seen, runs, hashes = {}, collections.defaultdict(list), collections.Counter()
  for path in files:
    run = _read_json(path)
    if not isinstance(run, Mapping) or not {"game", "seed", "score"} <= run.keys():
      raise ResultsError(f"{path}: expected an object with keys game, seed, score")
    if not isinstance(run["game"], str):
      raise ResultsError(f"{path}: game must be a string, got {run['game']!r}")
    if not isinstance(run["seed"], int) or isinstance(run["seed"], bool):
      raise ResultsError(f"{path}: seed must be an integer, got {run['seed']!r}")
    score = run["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
      raise ResultsError(f"{path}: score of {run['game']} seed {run['seed']} must be a finite number, "
                         f"got {score!r}")
    key = (run["game"], run["seed"])
    if key in seen:
      raise ResultsError(f"two runs of {run['game']} with seed {run['seed']}: {seen[key]} and {path}")
    seen[key] = path
    runs[run["game"]].append((run["seed"], run["score"]))
    hashes[run.get("config_hash")] += 1
  warnings = []
  if len(hashes) > 1:
    counts = ", ".join(f"{h} ({n} runs)" for h, n in hashes.most_common())
    warnings.append(f"runs under {root} have mixed config hashes: {counts}")
  scores = {game: [score for _, score in sorted(entries)] for game, entries in runs.items()}
  return scores, warnings


def load_results(path: str) -> tuple[dict[str, list[float]], list[str]]:
  """Reads `--results` into `({game: [per-seed score]}, warnings)`; raises `ResultsError` on bad input."""
  p = pathlib.Path(path)
  if p.is_dir():
    return _load_run_dirs(p)
  if not p.is_file():
    raise ResultsError(f"--results path does not exist: {path}")
  data = _read_json(p)
  if isinstance(data, Mapping) and {"game", "score"} <= data.keys():  # a single trainer results.json
    return {data["game"]: [data["score"]]}, []
  if not isinstance(data, Mapping):
    raise ResultsError(f"{path}: expected an object mapping game -> list of per-seed scores")
  return dict(data), []


# --- Methods: one column of the tables -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Method:
  """One agent: per-seed scores, the per-game score shown, aggregates and their CIs (None: one run/game)."""
  name: str
  scores: dict[str, list[float]]
  shown: dict[str, float]
  aggregates: dict[str, float]
  cis: dict[str, tuple[float, float]] | None


def make_method(name: str, scores: Mapping[str, Sequence[float]], num_bootstrap: int, seed: int,
                shown: Mapping[str, float] | None = None) -> Method:
  """Aggregates `scores`; CIs only when some game has more than one run."""
  scores = {g: list(map(float, v)) for g, v in metrics.validate_scores(scores).items()}
  multi = any(len(v) > 1 for v in scores.values())
  cis = metrics.bootstrap_ci(scores, num_reps=num_bootstrap, seed=seed) if multi else None
  shown = dict(shown) if shown is not None else {g: float(np.mean(v)) for g, v in scores.items()}
  return Method(name, scores, shown, metrics.aggregate(scores), cis)


def make_baseline(name: str, games: Sequence[str], num_bootstrap: int, seed: int) -> Method:
  """A published baseline restricted to `games`; the per-game table shows the published per-game means."""
  runs = metrics.baseline_scores(name, per_run=True)
  means = metrics.baseline_scores(name, per_run=False)
  return make_method(name, {g: runs[g] for g in games}, num_bootstrap, seed,
                     shown={g: means[g][0] for g in games})


def resolve_baselines(names: Sequence[str], ours: str) -> tuple[list[str], list[str]]:
  """Expands 'all', checks names; drops a baseline named like our column. Returns (names, notes)."""
  names = [n.strip() for n in names if n.strip()]
  if [n.lower() for n in names] == ["all"]:
    names = list(metrics.BASELINES)
  unknown = [n for n in names if n not in metrics.BASELINES]
  if unknown:
    raise ResultsError(f"unknown baseline(s) {', '.join(unknown)} (known: {', '.join(metrics.BASELINES)})")
  notes = []
  if ours in names:
    notes.append(f"baseline {ours} left out: --name={ours} is the column of --results")
    names = [n for n in names if n != ours]
  return names, notes


# --- Tables ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
  value: float | str | None
  ci: tuple[float, float] | None = None
  bold: bool = False
  digits: int = 3


@dataclasses.dataclass(frozen=True)
class Table:
  name: str            # file stem under --out
  title: str
  header: list[str]
  rows: list[list[Cell]]


def _fmt(x: float | str | None, digits: int) -> str:
  if x is None:
    return "—"
  if isinstance(x, str):
    return x
  return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def _best(values: Sequence[float | None], lower_is_better: bool = False) -> set[int]:
  finite = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
  if len(finite) < 2:  # nothing to compare with
    return set()
  target = (min if lower_is_better else max)(v for v, _ in finite)
  return {i for v, i in finite if v == target}


def per_game_table(methods: Sequence[Method], games_shown: Sequence[str]) -> Table:
  """Raw scores per game: Random, Human, then every method (mean over seeds); best agent per game in bold."""
  header = ["Game", "Set", "Random", "Human"] + [m.name for m in methods]
  rows = []
  for game in metrics.GAMES:
    values = [m.shown.get(game) if game in games_shown else None for m in methods]
    best = _best(values)
    rows.append([Cell(game), Cell("agent" if game in metrics.AGENT_OPTIMAL else "human"),
                 Cell(metrics.random_score(game), digits=1), Cell(metrics.human_score(game), digits=1)]
                + [Cell(v, bold=i in best, digits=1) for i, v in enumerate(values)])
  missing = [g for g in metrics.GAMES if g not in games_shown]
  title = "Per-game raw scores (mean over seeds; best agent in bold)"
  if missing:
    title += f" - MISSING from --results: {', '.join(missing)}"
  return Table("per_game", title, header, rows)


def _metric_cells(methods: Sequence[Method], key: str) -> list[Cell]:
  values = [m.aggregates[key] for m in methods]
  best = _best(values, lower_is_better=key.endswith(LOWER_IS_BETTER))
  digits = 0 if key.endswith("num_superhuman") else 3
  return [Cell(v, ci=m.cis[key] if m.cis else None, bold=i in best, digits=digits)
          for i, (m, v) in enumerate(zip(methods, values))]


def _coverage(methods: Sequence[Method]) -> str:
  m = methods[-1]
  seeds = sorted({len(v) for v in m.scores.values()})
  seeds_text = "-".join(map(str, (seeds[0], seeds[-1]) if len(seeds) > 1 else seeds))
  return f"{m.aggregates['num_games']} of 26 games, {seeds_text} seeds per game for {m.name}"


def aggregate_table(methods: Sequence[Method]) -> Table:
  """Methods x (Mean, Median, IQM, Optimality gap, Har-HNS, #Superhuman) over all games given."""
  columns = [_metric_cells(methods, key) for key, _ in METRIC_LABELS]
  rows = [[Cell(m.name)] + [col[i] for col in columns] for i, m in enumerate(methods)]
  title = (f"Aggregate human-normalised scores ({_coverage(methods)}; [95% stratified-bootstrap CI]; "
           "optimality gap: lower is better)")
  return Table("aggregates", title, ["Method"] + [label for _, label in METRIC_LABELS], rows)


def set_table(methods: Sequence[Method]) -> Table:
  """The aggregates on the Agent-Optimal (AO) and Human-Optimal (HO) games, side by side."""
  header, columns = ["Method"], []
  for prefix, short in (("agent_optimal_", "AO"), ("human_optimal_", "HO")):
    for key, label in METRIC_LABELS:
      header.append(f"{short} {label}")
      columns.append(_metric_cells(methods, prefix + key))
  rows = [[Cell(m.name)] + [col[i] for col in columns] for i, m in enumerate(methods)]
  agg = methods[-1].aggregates
  title = (f"Aggregates on the Agent-Optimal (AO, {agg['agent_optimal_num_games']} games) and Human-Optimal "
           f"(HO, {agg['human_optimal_num_games']} games) sets")
  return Table("sets", title, header, rows)


def _latex_escape(text: str) -> str:
  for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_")):
    text = text.replace(a, b)
  return text


def render(table: Table, fmt: str, with_title: bool = True) -> str:
  """The table as markdown, LaTeX (booktabs tabular) or CSV (CIs in their own `low`/`high` columns)."""
  if fmt == "csv":
    has_ci = [any(row[j].ci for row in table.rows) for j in range(len(table.header))]
    header = []
    for label, ci in zip(table.header, has_ci):
      header += [label, f"{label} low", f"{label} high"] if ci else [label]
    lines = [header]
    for row in table.rows:
      line = []
      for cell, ci in zip(row, has_ci):
        digits = max(cell.digits, 4) if cell.digits else 0  # counts stay integers
        line.append(_fmt(cell.value, digits))
        if ci:
          line += [_fmt(x, digits) for x in cell.ci] if cell.ci else ["", ""]
      lines.append(line)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return (f"# {table.title}\n" if with_title else "") + buf.getvalue()

  def text(cell: Cell, bold: tuple[str, str], ci: str) -> str:
    s = _fmt(cell.value, cell.digits)
    if fmt == "latex":
      s = _latex_escape(s)
    if cell.bold:
      s = bold[0] + s + bold[1]
    if cell.ci:
      s += ci.format(_fmt(cell.ci[0], cell.digits), _fmt(cell.ci[1], cell.digits))
    return s

  if fmt == "markdown":
    out = [f"### {table.title}\n"] if with_title else []
    out.append("| " + " | ".join(table.header) + " |")
    out.append("|" + "|".join(":---" if isinstance(c.value, str) else "---:" for c in table.rows[0]) + "|")
    out += ["| " + " | ".join(text(c, ("**", "**"), " [{}, {}]") for c in row) + " |" for row in table.rows]
    return "\n".join(out) + "\n"
  if fmt == "latex":
    out = [f"% {table.title}"] if with_title else []
    out += [r"\begin{tabular}{l" + "r" * (len(table.header) - 1) + "}", r"\toprule",
            " & ".join(_latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    out += [" & ".join(text(c, (r"\textbf{", "}"), r" {{\scriptsize [{}, {}]}}") for c in row) + r" \\"
            for row in table.rows]
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"
  raise ValueError(f"unknown format {fmt!r}")


# --- Plots -----------------------------------------------------------------------------------------------


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _colors(methods: Sequence[Method]) -> dict[str, str]:
  """Ours (last) in black; baselines from the tab10 cycle."""
  palette = [f"C{i}" for i in range(10)]
  colors = {m.name: palette[i % 10] for i, m in enumerate(methods[:-1])}
  colors[methods[-1].name] = "black"
  return colors


def plot_hns_per_game(method: Method, path: str) -> None:
  """Per-game HNS bars (mean over seeds, dots per seed), sorted, coloured by Agent-/Human-Optimal set."""
  plt = _pyplot()
  hns = metrics.normalize(method.scores)
  games = sorted(hns, key=lambda g: hns[g].mean())
  colors = ["tab:blue" if g in metrics.AGENT_OPTIMAL else "tab:orange" for g in games]
  fig, ax = plt.subplots(figsize=(11, 4.2))
  x = np.arange(len(games))
  ax.bar(x, [hns[g].mean() for g in games], color=colors)
  for i, g in enumerate(games):
    ax.scatter(np.full(hns[g].size, i), hns[g], s=8, color="black", zorder=3)
  ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
  ax.set_yscale("symlog", linthresh=1.0)  # linear up to human level, logarithmic above
  ticks = [t for t in (-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
           if min(0.0, hns[games[0]].min()) - 0.25 <= t <= max(1.0, hns[games[-1]].max()) * 2]
  ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
  ax.set_ylim(bottom=min(0.0, min(r.min() for r in hns.values())) - 0.05)
  ax.set_xticks(x, games, rotation=60, ha="right", fontsize=8)
  ax.set_ylabel("Human-normalised score")
  ax.set_title(f"{method.name}: per-game HNS (bars: mean over seeds, dots: seeds; dashed: human)")
  patches = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:orange")]
  ax.legend(patches, ["Agent-Optimal", "Human-Optimal"], loc="upper left", frameon=False)
  ax.spines[["top", "right"]].set_visible(False)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_aggregate_intervals(methods: Sequence[Method], path: str) -> None:
  """rliable-style interval estimates: rows = sets, columns = aggregates; bar = 95% CI, tick = point."""
  plt = _pyplot()
  colors = _colors(methods)
  labels = [(k, lbl) for k, lbl in METRIC_LABELS if k != "num_superhuman"]
  fig, axes = plt.subplots(len(SETS), len(labels), figsize=(3.0 * len(labels), 0.45 * len(methods) * 3 + 1.6),
                           squeeze=False)
  for r, (prefix, set_name) in enumerate(SETS):
    for c, (key, label) in enumerate(labels):
      ax = axes[r, c]
      for y, m in enumerate(methods):
        point = m.aggregates[prefix + key]
        lo, hi = m.cis[prefix + key] if m.cis else (point, point)
        if m.cis:
          ax.barh(y, hi - lo, left=lo, height=0.6, color=colors[m.name], alpha=0.6)
          ax.vlines(point, y - 0.3, y + 0.3, color="black", linewidth=1.5)
        else:  # published per-game means only: a point, no interval
          ax.plot([point], [y], marker="D", markersize=5, color=colors[m.name])
      ax.margins(x=0.1)
      ax.set_yticks(range(len(methods)), [m.name for m in methods] if c == 0 else [""] * len(methods))
      ax.tick_params(axis="y", length=0)
      ax.set_title(f"{label}" + (" (lower is better)" if key in LOWER_IS_BETTER else ""), fontsize=9)
      if c == 0:
        ax.set_ylabel(set_name)
      ax.spines[["top", "right", "left"]].set_visible(False)
      ax.grid(axis="x", alpha=0.3)
  fig.suptitle("Human-normalised aggregates: bars are 95% stratified-bootstrap CIs; "
               "diamonds are baselines with published per-game means only")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_performance_profiles(methods: Sequence[Method], path: str, num_bootstrap: int, seed: int) -> None:
  """Fraction of runs with HNS > tau, with 95% bootstrap bands for methods that have several seeds."""
  plt = _pyplot()
  colors = _colors(methods)
  taus = np.asarray(PROFILE_TAUS)
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for m in methods:
    ax.plot(taus, metrics.performance_profile(m.scores, taus), color=colors[m.name], label=m.name,
            linewidth=2.0 if m is methods[-1] else 1.2)
    if m.cis is not None:
      lo, hi = metrics.performance_profile_ci(m.scores, taus, num_reps=num_bootstrap, seed=seed)
      ax.fill_between(taus, lo, hi, color=colors[m.name], alpha=0.2, linewidth=0)
  ax.set_xlabel(r"Human-normalised score $\tau$")
  ax.set_ylabel(r"Fraction of runs with HNS > $\tau$")
  ax.set_xlim(taus[0], taus[-1])
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(frameon=False)
  ax.spines[["top", "right"]].set_visible(False)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# --- Entry point -----------------------------------------------------------------------------------------


def build_tables(results: str, name: str, baselines: Sequence[str], num_bootstrap: int, seed: int,
                 allow_missing: bool) -> tuple[list[Method], list[Table], list[str]]:
  """Loads and validates the results; returns (methods with ours last, tables, warnings)."""
  scores, warnings = load_results(results)
  metrics.validate_scores(scores, require_all=not allow_missing)
  games = [g for g in metrics.GAMES if g in scores]
  if len(games) < len(metrics.GAMES):
    missing = [g for g in metrics.GAMES if g not in scores]
    warnings.append(f"--results is missing {len(missing)} of the 26 games ({', '.join(missing)}): "
                    f"every column is aggregated over the {len(games)} games given")
  names, notes = resolve_baselines(baselines, name)
  warnings += notes
  methods = [make_baseline(b, games, num_bootstrap, seed) for b in names]
  methods.append(make_method(name, scores, num_bootstrap, seed))
  tables = [per_game_table(methods, games), aggregate_table(methods), set_table(methods)]
  return methods, tables, warnings


def write_outputs(out: str, methods: Sequence[Method], tables: Sequence[Table], fmt: str, num_bootstrap: int,
                  seed: int) -> list[str]:
  """Writes the tables, summary.json and the plots under `out`; returns the paths written."""
  os.makedirs(out, exist_ok=True)
  paths = []
  for table in tables:
    paths.append(os.path.join(out, f"{table.name}.{EXTENSIONS[fmt]}"))
    with open(paths[-1], "w", encoding="utf-8") as f:
      f.write(render(table, fmt, with_title=fmt != "csv"))
  def strict(x):  # NaN (an undefined aggregate) -> null, so summary.json is standard JSON
    if isinstance(x, dict):
      return {k: strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return [strict(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x

  summary = {m.name: strict({"aggregates": m.aggregates, "ci95": m.cis, "scores": m.scores}) for m in methods}
  paths.append(os.path.join(out, "summary.json"))
  with open(paths[-1], "w", encoding="utf-8") as f:
    json.dump({"num_bootstrap": num_bootstrap, "seed": seed, "methods": summary}, f, indent=1)
  plots = (("hns_per_game.png", lambda p: plot_hns_per_game(methods[-1], p)),
           ("aggregate_intervals.png", lambda p: plot_aggregate_intervals(methods, p)),
           ("performance_profiles.png", lambda p: plot_performance_profiles(methods, p, num_bootstrap, seed)))
  for filename, plot in plots:
    paths.append(os.path.join(out, filename))
    plot(paths[-1])
  return paths


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _RESULTS.value:
    print("error: --results is required", file=sys.stderr)
    return 1
  try:
    methods, tables, warnings = build_tables(_RESULTS.value, _NAME.value, _BASELINES.value,
                                             _NUM_BOOTSTRAP.value, _SEED.value, _ALLOW_MISSING.value)
  except (metrics.ScoreError, ResultsError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for w in warnings:
    print(f"warning: {w}", file=sys.stderr)
  print("\n".join(render(t, _FORMAT.value) for t in tables))
  if _OUT.value:
    for path in write_outputs(_OUT.value, methods, tables, _FORMAT.value, _NUM_BOOTSTRAP.value, _SEED.value):
      print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  app.run(main)
