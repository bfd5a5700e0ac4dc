"""Tests of experiments/benchmark_world_model.py (through experiments/benchmark.py's world_model section):
the JSON it writes and the ratios it prints, on the tests' tiny networks."""

import json
import subprocess
import sys

import pytest

from experiments import benchmark_world_model as bwm

from conftest import FEWEST_STEPS, NARROW_WM, PATCH_ENCODER

# The tests' tiny world model (conftest), one stage per network, for both models alike.
TINY = {**PATCH_ENCODER, **NARROW_WM, **FEWEST_STEPS, "wm.encoder_channels": (4,), "wm.encoder_depths": (1,),
        "wm.encoder_down": (1,), "wm.pixel_denoiser_channels": (4,), "wm.pixel_denoiser_depths": (1,),
        "wm.rew_end_channels": (4,), "wm.rew_end_depths": (1,), "ac.latent_channels": (4,), "ac.latent_down": (1,),
        "ac.pixel_channels": (4,), "ac.pixel_down": (1,), "ac.lstm_dim": 8, "ac.horizon": 2,
        "wm.share_encoder_pass": True, "wm.remat": True}
SCHEMA_KEYS = {"memory_bytes", "gflop", "compile_seconds", "seconds"}


@pytest.mark.after_suite
def test_json_schema_and_printed_ratios(tmp_path, capsys):
  path = tmp_path / "b.json"
  out = bwm.run("debug", 2, 4, repeats=1, overrides={k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in TINY.items()},
                json_path=str(path), timed=("wm_update", "ac_update", "sample_next"))
  printed = capsys.readouterr().out
  data = json.loads(path.read_text())
  assert data == json.loads(json.dumps(out))
  for kind in ("jedi", "diamond"):
    assert set(data[kind]) == set(bwm.PROGRAMS)
    for name, row in data[kind].items():
      assert set(row) == SCHEMA_KEYS, (kind, name)
      assert row["memory_bytes"] > 0 and row["gflop"] > 0 and row["compile_seconds"] > 0
      assert (row["seconds"] is None) == (name == "imagine"), (kind, name)   # not asked to time it
  r = data["ratios"]
  assert r["whole_update_speedup"] == pytest.approx(
      r["whole_update_seconds"]["diamond"] / r["whole_update_seconds"]["jedi"])
  peak = {k: max(data[k][p]["memory_bytes"] for p in ("wm_update", "ac_update")) for k in ("jedi", "diamond")}
  assert r["training_peak_memory_jedi_over_diamond"] == pytest.approx(peak["jedi"] / peak["diamond"])
  assert data["setup"]["overrides"]["wm.remat"] is True and data["setup"]["target"] == "cpu"
  assert f"JEDI / DIAMOND = {r['training_peak_memory_jedi_over_diamond']:.2f} (target <= 0.57)" in printed
  assert f"DIAMOND / JEDI = {r['whole_update_speedup']:.2f}x (target >= 3)" in printed
  assert "sample_next: DIAMOND / JEDI = " in printed


def test_overrides_and_a_bad_target_are_one_line():
  assert bwm.parse_overrides(["wm.remat=true", "optim.batch_size=8", "wm.kind=jedi"]) == {
      "wm.remat": True, "optim.batch_size": 8, "wm.kind": "jedi"}
  with pytest.raises(ValueError, match=r"^--set takes FIELD=VALUE, got 'wm.remat'$"):
    bwm.parse_overrides(["wm.remat"])
  proc = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--sections=world_model", "--target=tpu-v9"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "--target" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.after_suite
def test_tpu_target_compiles_deviceless_and_reports_memory(tmp_path):
  """--target=tpu-v5e: every program compiled for one v5e chip on this CPU host, nothing timed."""
  pytest.importorskip("libtpu")
  path = tmp_path / "v5e.json"
  bwm.run("debug", 2, 4, repeats=1, target="tpu-v5e", json_path=str(path),
          overrides={k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()})
  data = json.loads(path.read_text())
  assert data["setup"]["target"] == "tpu-v5e" and data["ratios"]["whole_update_speedup"] is None
  for kind in ("jedi", "diamond"):
    for name, row in data[kind].items():
      assert row["seconds"] is None and row["memory_bytes"] > 0, (kind, name)


@pytest.mark.parametrize("preset", ["atari100k", "cpu", "atari_cpu"])
def test_model_config_builds_at_every_benchmarked_preset(preset):
  """The benchmark's stand-in replay (REPLAY_STEPS) is smaller than a preset's budget; the config is checked
  before it is swapped in (the atari100k benchmark once stopped at validate's replay-capacity check)."""
  for kind in ("jedi", "diamond"):
    c = bwm.model_config(kind, preset, 32, {"wm.remat": True, "wm.share_encoder_pass": True})
    assert c.replay.capacity == bwm.REPLAY_STEPS and c.optim.batch_size == 32 and c.wm.remat
