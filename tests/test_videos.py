"""Videos: GIF writing, the open-loop error grid, and test-episode recording that replays exactly the scored
episodes of a finished run (the Catch reference run of test_train.py, built once per session)."""

import json

import numpy as np
import pytest

from experiments import train as train_cli
from jedi_jax import evaluate
from jedi_jax import run_files
from jedi_jax import videos

from test_train import reference  # noqa: F401  (the session's shared reference run)


def test_gif_round_trip_is_exact_and_enlarged(tmp_path):
  rng = np.random.default_rng(0)
  palette = rng.integers(0, 256, (8, 3), dtype=np.uint8)  # Atari-like: few colours
  frames = palette[rng.integers(0, 8, (5, 6, 7))]
  path = videos.write_gif(str(tmp_path / "a" / "clip.gif"), frames, scale=3)
  back = videos.read_gif(path)
  assert back.shape == (5, 18, 21, 3)
  np.testing.assert_array_equal(back[:, ::3, ::3], frames)
  np.testing.assert_array_equal(back[:, 2::3, 1::3], frames)
  for bad, message in ((frames.astype(np.float32), "must be uint8"), (frames[0], r"must be \[T, H, W, 3\]")):
    with pytest.raises(ValueError, match=message):
      videos.write_gif(str(tmp_path / "bad.gif"), bad)
  with pytest.raises(ValueError, match="only .gif"):
    videos.write_gif(str(tmp_path / "clip.mp4"), frames)
  assert not (tmp_path / "bad.gif").exists()


def test_error_grid_layout():
  real = np.zeros((2, 3, 4, 5, 3), np.uint8)          # 2 examples, 3 steps, 4x5 frames
  imagined = np.zeros_like(real)
  real[1, 2, 0, 0] = (90, 30, 0)                        # example 1, step 2, pixel (0, 0): error mean 40
  imagined[0, 0, 3, 4] = 255                            # example 0, step 0, pixel (3, 4): error 255
  grid = videos.error_grid(real, imagined, gap=1)
  assert grid.shape == (3, 2 * 4 + 1, 3 * 5 + 2, 3)
  assert (grid[:, 4, :] == 255).all() and (grid[:, :, 5] == 255).all() and (grid[:, :, 11] == 255).all()
  np.testing.assert_array_equal(grid[2, 5, 0], (90, 30, 0))   # real panel of example 1
  np.testing.assert_array_equal(grid[2, 5, 12], (40, 40, 40))  # its error panel: grey mean |difference|
  np.testing.assert_array_equal(grid[0, 3, 6 + 4], (255, 255, 255))  # imagined panel of example 0
  np.testing.assert_array_equal(grid[0, 3, 12 + 4], (255, 255, 255))
  panels = np.delete(np.delete(grid[1], 4, axis=0), [5, 11], axis=1)  # step 1 without the white gaps
  assert panels.max() == 0  # nothing differs: every panel black
  with pytest.raises(ValueError, match="must both be"):
    videos.error_grid(real, imagined[:, :2])


def test_recorded_test_episodes_are_the_scored_ones(reference, tmp_path):  # noqa: F811
  """The recorded episodes are the first ones of the final test: same returns as results.json, in order."""
  ref_dir, _ = reference
  cfg, state, _ = run_files.load_run(str(ref_dir))
  results = json.loads((ref_dir / "results.json").read_text())
  config = train_cli.config_lib.to_config_dict(cfg)
  config.run.record_test_episodes = 2
  train_cli.record_videos(config, str(tmp_path), state, 1)
  index = json.loads((tmp_path / "videos" / videos.VIDEO_INDEX).read_text())
  assert [e["index"] for e in index] == [0, 1]
  # Two test envs with a quota of one game each: env 0's game, then env 1's (evaluate's env-major order).
  assert [e["env"] for e in index] == [0, 1]
  assert [e["return"] for e in index] == results["episode_returns"][:2]
  for entry in index:
    frames = videos.read_gif(str(tmp_path / "videos" / entry["file"]))
    assert frames.shape == (entry["steps"] + 1, 64 * 4, 64 * 4, 3)
    assert entry["steps"] >= 1 and frames.std() > 0  # a game's frames, not a blank
  with pytest.raises(ValueError, match="can record 1 to env.num_test_episodes=2"):
    evaluate.record_test_episodes(state, cfg, 3)


def test_record_field_out_of_range_is_refused():
  config = train_cli.config_lib.debug()  # 4 test episodes
  config.run.record_test_episodes = 5
  with pytest.raises(ValueError, match=r"run.record_test_episodes must lie in \[0, env.num_test_episodes=4\], got 5"):
    train_cli.check_output_fields(config)
  config.run.record_test_episodes = 4
  train_cli.check_output_fields(config)
