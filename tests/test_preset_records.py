"""The committed runs of a preset were made with the preset as it stands: changing a preset's field without
rerunning its runs (results/<preset>/runs/) fails here, so that docs/results.md never reports a preset's
learning with runs of another."""

import glob
import json
import os

import ml_collections
import pytest

from jedi_jax import config as config_lib

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, "results")


def _records(preset):
  paths = sorted(glob.glob(os.path.join(ROOT, preset, "runs", "*", "results.json")))
  return [(p, json.load(open(p)), json.load(open(os.path.join(os.path.dirname(p), "config.json")))) for p in paths]



@pytest.mark.parametrize("preset", ["catch", "minatar"])
def test_committed_runs_match_the_preset(preset):
  records = _records(preset)
  assert records, f"no committed runs under results/{preset}/runs"
  for path, result, recorded in records:
    c = config_lib.get_config(preset)
    c.seed = result["seed"]
    c.game = recorded["game"]
    c.wm.kind = recorded["wm"]["kind"]
    want = json.loads(json.dumps(config_lib.results_fields(c)))
    got = json.loads(json.dumps(config_lib.results_fields(ml_collections.ConfigDict(recorded))))
    assert want == got, f"{path}: made with other settings than --preset={preset}: {_diff(want, got)}"


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
  out = []
  for k in sorted(set(a) | set(b)):
    x, y = a.get(k), b.get(k)
    if isinstance(x, dict) and isinstance(y, dict):
      out += _diff(x, y, f"{prefix}{k}.")
    elif x != y:
      out.append(f"{prefix}{k}: preset {x!r}, run {y!r}")
  return out
