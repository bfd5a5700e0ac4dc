"""Tests for experiments/tables.py: loading, rendering, bad inputs, and the CLI end to end."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from experiments import tables  # pylint: disable=g-import-not-at-top,wrong-import-position
from jedi_jax import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position

DIAMOND_JSON = ROOT / "jedi_jax" / "data" / "DIAMOND.json"


def _write_run(root, folder, game, seed, score, config_hash="abc123"):
  path = root / folder / "results.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"game": game, "seed": seed, "score": score, "config_hash": config_hash,
                              "preset": "atari100k", "num_test_episodes": 2, "episode_returns": [score, score]}))


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.tables", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, check=False)


def test_load_run_directory_pools_seeds(tmp_path):
  for i, game in enumerate(metrics.GAMES):
    _write_run(tmp_path, f"sweep/{game}/seed1", game, 1, 10.0 + i)
    _write_run(tmp_path, f"other/{game}-s0", game, 0, 20.0 + i)
  scores, warnings = tables.load_results(str(tmp_path))
  assert len(scores) == 26 and warnings == []
  assert scores["Alien"] == [20.0, 10.0]  # sorted by seed
  assert scores["UpNDown"] == [45.0, 35.0]


def test_load_run_directory_errors_and_warnings(tmp_path):
  _write_run(tmp_path, "a", "Pong", 0, 1.0)
  _write_run(tmp_path, "b", "Pong", 1, 2.0, config_hash="def456")
  scores, warnings = tables.load_results(str(tmp_path))
  assert scores == {"Pong": [1.0, 2.0]}
  assert len(warnings) == 1 and "mixed config hashes" in warnings[0] and "def456" in warnings[0]
  _write_run(tmp_path, "c/d", "Pong", 1, 3.0)
  with pytest.raises(tables.ResultsError, match="two runs of Pong with seed 1"):
    tables.load_results(str(tmp_path))
  with pytest.raises(tables.ResultsError, match="--results path does not exist"):
    tables.load_results(str(tmp_path / "nothing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(tables.ResultsError, match="no results.json found"):
    tables.load_results(str(tmp_path / "empty"))


def test_load_results_rejects_nan_in_run(tmp_path):
  path = tmp_path / "r" / "results.json"
  path.parent.mkdir()
  path.write_text('{"game": "Pong", "seed": 0, "score": NaN, "config_hash": "x"}')
  with pytest.raises(tables.ResultsError, match="score of Pong seed 0 must be a finite number"):
    tables.load_results(str(tmp_path))


def _all_games(value=0.0):
  return {g: [value, value] for g in metrics.GAMES}


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("Qbert"), "missing 1 of the 26 Atari100k games: Qbert"),
    (lambda s: s.__setitem__("Pong", [1.0, float("nan")]), "Pong: non-finite score nan"),
    (lambda s: s.__setitem__("Tetris", [1.0]), "unknown Atari100k game 'Tetris'"),
    (lambda s: s.__setitem__("Pong", []), "Pong: empty list"),
])
def test_bad_inputs_name_the_problem(tmp_path, edit, message):
  scores = _all_games()
  edit(scores)
  path = tmp_path / "scores.json"
  path.write_text(json.dumps(scores))  # json writes NaN as the literal NaN, which json.loads accepts
  with pytest.raises(metrics.ScoreError, match=message):
    tables.build_tables(str(path), "Ours", ["IRIS"], num_bootstrap=10, seed=0, allow_missing=False)


def test_unknown_baseline_is_an_error():
  with pytest.raises(tables.ResultsError, match="unknown baseline.*Dreamer"):
    tables.resolve_baselines(["IRIS", "Dreamer"], "Ours")
  names, notes = tables.resolve_baselines(["all"], "DIAMOND")
  assert names == [b for b in metrics.BASELINES if b != "DIAMOND"] and "DIAMOND" in notes[0]
  assert tables.resolve_baselines([""], "Ours") == ([], [])


def test_all_baselines_include_the_newer_ones_with_cis():
  methods, tbls, _ = tables.build_tables(str(DIAMOND_JSON), "Ours", ["all"], num_bootstrap=50, seed=0,
                                         allow_missing=False)
  by_name = {m.name: m for m in methods}
  for name in ("BBF", "REM", "Simulus"):
    assert by_name[name].cis is not None, name  # per-run scores: bootstrap CIs like IRIS and DIAMOND
    assert by_name[name].aggregates == metrics.aggregate(metrics.baseline_scores(name))
    lo, hi = by_name[name].cis["agent_optimal_iqm"]
    assert lo <= by_name[name].aggregates["agent_optimal_iqm"] <= hi
  assert by_name["STORM"].cis is None
  per_game = tables.render(tbls[0], "markdown")
  # BBF shows its paper's per-game mean, Simulus the mean of its 5 runs.
  assert "| BBF | REM | Simulus | Ours |" in per_game
  breakout = next(line for line in per_game.splitlines() if line.startswith("| Breakout |"))
  assert breakout.endswith("| **414.1** | 2.6 | 19.6 | 25.5 | 370.6 | 90.7 | 148.9 | 132.5 |")  # EfficientZero best
  sets = tables.render(tbls[2], "markdown")
  assert any(line.startswith("| Simulus | ") for line in sets.splitlines())


def test_allow_missing_flags_missing_games(tmp_path):
  path = tmp_path / "scores.json"
  path.write_text(json.dumps({"Pong": [14.6, 14.6], "Freeway": [29.6, 0.0]}))
  methods, tbls, warnings = tables.build_tables(str(path), "Ours", ["IRIS"], num_bootstrap=20, seed=0,
                                                allow_missing=True)
  assert "missing 24 of the 26 games" in warnings[0] and "Qbert" in warnings[0]
  assert "MISSING from --results" in tbls[0].title and "Alien" in tbls[0].title
  assert "2 of 26 games" in tbls[1].title
  # IRIS is restricted to the same two games.
  assert methods[0].aggregates["num_games"] == 2
  ours = methods[-1].aggregates
  assert ours["mean"] == pytest.approx(0.75)      # Pong 1, Freeway 0.5
  text = tables.render(tbls[0], "markdown")
  assert "| Alien | human | 227.8 | 7127.7 | — | — |" in text


def test_render_formats_and_bold():
  methods = [
      tables.make_method("A", {"Pong": [14.6], "Freeway": [0.0]}, 10, 0),          # HNS 1, 0
      tables.make_method("B", {"Pong": [-20.7], "Freeway": [29.6, 14.8]}, 50, 0),  # HNS 0, (1 + .5) / 2
  ]
  per_game = tables.render(tables.per_game_table(methods, ["Pong", "Freeway"]), "markdown")
  assert "| Pong | agent | -20.7 | 14.6 | **14.6** | -20.7 |" in per_game
  assert "| Freeway | agent | 0.0 | 29.6 | 0.0 | **22.2** |" in per_game
  agg = tables.aggregate_table(methods)
  md = tables.render(agg, "markdown")
  # Means: A 0.5, B 0.375; optimality gaps: A 0.5, B (1 + 0 + .5) / 3 = 0.5 -> tie, both bold.
  assert "| A | **0.500** | " in md and "| B | 0.375 [" in md
  assert md.count("**0.500**") >= 3
  tex = tables.render(agg, "latex")
  assert r"\#Superhuman" in tex and r"\textbf{0.500}" in tex and r"\begin{tabular}{lrrrrrr}" in tex
  csv_text = tables.render(agg, "csv", with_title=False)
  header = csv_text.splitlines()[0].split(",")
  assert header[:4] == ["Method", "Mean", "Mean low", "Mean high"]
  assert csv_text.splitlines()[1].startswith("A,0.5000,,,")


def test_cli_reproduces_diamond_table1(tmp_path):
  out = tmp_path / "out"
  proc = _run_cli(f"--results={DIAMOND_JSON}", "--name=DIAMOND", "--num_bootstrap=300", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  row = next(line for line in proc.stdout.splitlines() if line.startswith("| DIAMOND | **1.459**"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  # DIAMOND Table 1: mean 1.459, median 0.373, IQM 0.641, optimality gap 0.480, 11 superhuman games.
  assert [c.split(" [")[0].strip("*") for c in cells[1:]] == ["1.459", "0.373", "0.641", "0.480", "0.319", "11"]
  assert "| IRIS | 1.046 [" in proc.stdout and "Agent-Optimal" in proc.stdout
  for name in ("hns_per_game.png", "aggregate_intervals.png", "performance_profiles.png"):
    data = (out / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
  for name in ("per_game.md", "aggregates.md", "sets.md"):
    assert (out / name).stat().st_size > 0
  summary = json.loads((out / "summary.json").read_text())
  assert summary["methods"]["DIAMOND"]["aggregates"]["num_superhuman"] == 11


def test_cli_run_directory_latex(tmp_path):
  runs = tmp_path / "runs"
  diamond = json.loads(DIAMOND_JSON.read_text())
  for game in metrics.GAMES:
    for seed in range(2):
      _write_run(runs, f"{game}_{seed}", game, seed, diamond[game][seed])
  proc = _run_cli(f"--results={runs}", "--baselines=STORM", "--format=latex", "--num_bootstrap=50")
  assert proc.returncode == 0, proc.stderr
  assert r"\begin{tabular}" in proc.stdout and "STORM & " in proc.stdout and "Ours & " in proc.stdout


def test_cli_bad_input_is_one_line(tmp_path):
  scores = _all_games()
  scores["Pong"] = [1.0, float("nan")]
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(scores))
  proc = _run_cli(f"--results={path}", "--num_bootstrap=10")
  assert proc.returncode == 1
  assert proc.stderr.strip() == "error: Pong: non-finite score nan (seed index 1)"
  assert "Traceback" not in proc.stderr and proc.stdout == ""
