"""logs.py: metrics.jsonl rows mirrored to Weights & Biases, checked in W&B's offline mode (no network) by
reading back the run's own record file."""

import glob
import json
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from jedi_jax import logs
from jedi_jax import videos

from test_train import reference  # noqa: F401  (the session's shared reference run)

wandb = pytest.importorskip("wandb")  # installed by the test extra; CI always has it
from wandb.proto import wandb_internal_pb2  # noqa: E402  pylint: disable=g-import-not-at-top


def _wandb_records(path):
  """The records of an offline run file: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
  chunks, each `crc32 (4) | length (2, LE) | type (1: full, 2: first, 3: middle, 4: last) | data`."""
  data = open(path, "rb").read()
  assert data[:4] == b":W&B"
  records, pending, pos, block = [], b"", 7, 32768
  while pos + 7 <= len(data):
    if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
      pos += block - pos % block
      continue
    length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
    chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
    if kind == 0 and length == 0:
      continue
    pending = chunk if kind in (1, 2) else pending + chunk
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      records.append(record)
  return records


def _finished_run_records(run_dir, timeout=30.0):
  """The records of the run in `run_dir` once its `exit` record is on disk (wandb-core may still be writing
  the file when `finish()` returns)."""
  path = glob.glob(f"{run_dir}/run-*.wandb")[0]
  deadline = time.time() + timeout
  while True:
    records = _wandb_records(path)
    if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
      return records
    time.sleep(0.1)


def _history(records):
  rows = []
  for r in records:
    if r.WhichOneof("record_type") == "history":
      rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
  return rows


@pytest.fixture(name="offline")
def fixture_offline(tmp_path, monkeypatch):
  for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                   ("WANDB_DATA_DIR", "data")):
    monkeypatch.setenv(var, str(tmp_path / sub))
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  return tmp_path


def test_metrics_rows_are_mirrored_to_wandb_offline(offline):
  workdir = offline / "run"
  run = logs.start_wandb("jedi-test", str(workdir), {"game": "Catch", "optim": {"lr": 1e-4}})
  assert wandb.run is run and (workdir / logs.WANDB_ID_FILE).read_text().strip() == run.id
  logger = logs.MetricsLogger(str(workdir), tensorboard=False)
  rows = [(1, {"wm/loss": 0.5, "env_steps": 55, "collect/games_finished": 3}),
          (2, {"wm/loss": 0.25, "env_steps": 110, "shape": [1, 2], "flag": True}),
          (6, {"test/return_mean": -1.0})]
  for epoch, scalars in rows:
    logger.write(epoch, scalars)
  frames = np.zeros((3, 8, 8, 3), np.uint8)
  frames[1] = 255
  logs.log_media({"test/videos": [videos.write_gif(str(offline / "clip.gif"), frames)]})
  run_dir = run.dir.rsplit("/files", 1)[0]
  run.finish()
  logger.close()
  assert wandb.run is None

  assert [json.loads(l)["epoch"] for l in (workdir / logs.METRICS_FILE).read_text().splitlines()] == [1, 2, 6]
  history = _history(_finished_run_records(run_dir))
  logged = [{k: v for k, v in h.items() if not k.startswith("_")} for h in history]
  # The same numeric scalars as metrics.jsonl (lists and booleans stay in the JSONL file), step = epoch.
  # The video goes into the last row (W&B's current step): a GIF file in the run's media.
  video = {k: logged[2].pop(k) for k in list(logged[2]) if k.startswith("test/videos/")}
  assert logged == [{"epoch": 1, "wm/loss": 0.5, "env_steps": 55, "collect/games_finished": 3},
                    {"epoch": 2, "wm/loss": 0.25, "env_steps": 110},
                    {"epoch": 6, "test/return_mean": -1.0}]
  assert [h["_step"] for h in history] == [1, 2, 6]
  assert video["test/videos/_type"] == "videos" and video["test/videos/count"] == 1
  assert video["test/videos/videos"][0]["path"].endswith(".gif")



def test_rerun_continues_the_same_wandb_run(tmp_path, monkeypatch):
  inits = []
  monkeypatch.setattr(wandb, "init", lambda **kw: inits.append(kw) or kw["id"])
  first = logs.start_wandb("p", str(tmp_path / "w"), {"a": 1})
  assert logs.start_wandb("p", str(tmp_path / "w"), {"a": 1}) == first
  assert len(first) == 12 and first.isalnum() and first == first.lower()
  assert [(kw["resume"], kw["dir"], kw["name"]) for kw in inits] == [("allow", str(tmp_path / "w"), "w")] * 2


def test_without_an_active_run_nothing_goes_to_wandb(offline):
  (offline / "plain").mkdir()
  logger = logs.MetricsLogger(str(offline / "plain"), tensorboard=False)
  logger.write(1, {"wm/loss": 0.5})  # no W&B run: JSONL only, and wandb is never started
  assert wandb.run is None and not (offline / "plain" / "wandb").exists()
  assert logs.read_metrics(str(offline / "plain")) == [{"epoch": 1, "wm/loss": 0.5}]


def test_missing_wandb_is_one_clear_error(tmp_path):
  code = ("import sys; sys.modules['wandb'] = None\n"
          "from jedi_jax import logs\n"
          f"logs.start_wandb('p', {str(tmp_path / 'w')!r}, {{}})")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
  assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
      "ValueError: run.wandb_project needs the wandb package: pip install -e '.[wandb]'")
  assert not (tmp_path / "w").exists()


@pytest.mark.after_suite
def test_imagination_strip_writes_its_grid_and_sends_it_to_the_runs_wandb_run(reference, offline):  # noqa: F811
  """videos.write_imagination_strip (experiments/imagination_strip.py) on the Catch reference run (JEDI, a
  viewing decoder of 0 steps): the PNG strip (3 rows of `horizon` frames per example, enlarged 2x), the GIF
  grid (one frame per imagined step), and both in the run's W&B run, which a second call continues (same id)."""
  from PIL import Image
  workdir = offline / "run"
  shutil.copytree(reference[0], workdir)
  lines, horizon = [], 3
  write = lambda: videos.write_imagination_strip(str(workdir), str(offline / "out" / "strip"), decoder_steps=0,
                                                 horizon=horizon, examples=1, wandb_project="jedi-test",
                                                 log=lines.append)
  png, gif = write()
  assert Image.open(png).size == (2 * horizon * 64, 2 * 3 * 64)
  with Image.open(gif) as g:
    assert g.n_frames == horizon and g.size == (3 * (3 * 64 + 2 * 2), 3 * 64)
  assert any(l.startswith("sent both to W&B project jedi-test") for l in lines)
  run_id = (workdir / logs.WANDB_ID_FILE).read_text().strip()
  run_dir = glob.glob(f"{workdir}/wandb/offline-run-*-{run_id}")[0]
  logged = {k for h in _history(_finished_run_records(run_dir)) for k in h}
  assert {"imagination/open_loop/_type", "imagination/strip/_type"} <= logged, logged
  assert wandb.run is None
  write()
  assert (workdir / logs.WANDB_ID_FILE).read_text().strip() == run_id
  assert len(glob.glob(f"{workdir}/wandb/offline-run-*-{run_id}")) == 2


def test_a_resume_keeps_the_interim_tests_before_its_checkpoint(tmp_path):
  """run_files.drop_metrics_after on resuming from epoch 2: the rows of epochs 1-2 stay, the interim test of
  epoch 2 included (the resumed run will not play it again); later rows, the final test's row and a line cut
  by a kill go. logs.interim_test_curves then reads the kept tests."""
  from jedi_jax import run_files
  rows = [{"epoch": 1, "wm/loss": 1.0}, {"epoch": 1, "test/return_mean": -0.6, "test/episodes": 3, "env_steps": 10},
          {"epoch": 2, "wm/loss": 0.5}, {"epoch": 2, "test/return_mean": 0.1, "test/episodes": 3, "env_steps": 20},
          {"epoch": 3, "wm/loss": 0.2}, {"epoch": 3, "test/return_mean": 0.9, "test/return_std": 0.1}]
  path = tmp_path / logs.METRICS_FILE
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 4, "wm/lo')
  run_files.drop_metrics_after(str(tmp_path), 3)      # a finished run rerun: its final test is played again
  assert logs.read_metrics(str(tmp_path)) == rows[:5]
  run_files.drop_metrics_after(str(tmp_path), 2)
  assert logs.read_metrics(str(tmp_path)) == rows[:4]
  curves = logs.interim_test_curves(logs.read_metrics(str(tmp_path)), [{"env_steps": 30, "score": 0.9}])
  assert curves == [([10, 20, 30], [-0.6, 0.1, 0.9])]
