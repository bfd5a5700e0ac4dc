"""The committed runs of a preset were made with the preset as it stands: changing a preset's field without
rerunning its runs (results/<preset>/runs/) fails here, so that docs/results.md never reports a preset's
learning with runs of another."""

import glob
import json
import os

import pytest

from jedi_jax import config as config_lib

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, "results")


def _records(preset):
  """(path, results.json, config.json) of each committed run of `preset`."""
  paths = sorted(glob.glob(os.path.join(ROOT, preset, "runs", "*", "results.json")))
  return [(p, json.load(open(p)), json.load(open(os.path.join(os.path.dirname(p), "config.json")))) for p in paths]


@pytest.mark.parametrize("preset", ["atari_cpu", "catch", "catch_quick", "minatar"])
def test_committed_runs_match_the_preset(preset):
  records = _records(preset)
  assert records, f"no committed runs under results/{preset}/runs"
  for path, result, recorded in records:
    c = config_lib.get_config(preset)
    c.seed = result["seed"]
    c.game = recorded["game"]
    c.wm.kind = recorded["wm"]["kind"]
    # JSON round trip: tuples of the preset compare equal to the lists of config.json.
    want = config_lib.dotted_fields(json.loads(json.dumps(config_lib.results_fields(config_lib.to_dict(c)))))
    got = config_lib.dotted_fields(config_lib.results_fields(recorded))
    diff = [f"{k}: preset {want.get(k)!r}, run {got.get(k)!r}" for k in sorted(set(want) | set(got))
            if want.get(k) != got.get(k)]
    assert not diff, f"{path}: made with other settings than --preset={preset}: {diff}"


def test_every_committed_record_hashes_to_its_config():
  """`results.json`'s `config_hash` is the hash of the `config.json` beside it, in every committed run: a
  config field renamed in the code and in the records (07bfe00) must update the recorded hash too, or a reader
  cannot tell a record's settings from its hash."""
  paths = sorted(glob.glob(os.path.join(ROOT, "**", "results.json"), recursive=True))
  checked, wrong = 0, []
  for path in paths:
    config_path = os.path.join(os.path.dirname(path), "config.json")
    if not os.path.exists(config_path):
      continue
    recorded = json.load(open(path))["config_hash"]
    actual = config_lib.config_hash(json.load(open(config_path)))
    checked += 1
    if recorded != actual:
      wrong.append(f"{os.path.relpath(path, ROOT)}: {recorded} recorded, {actual} from config.json")
  assert checked >= 5, checked
  assert not wrong, wrong
