"""Videos: GIF writing, the open-loop error grid, and where experiments/train.py writes recorded test episodes
(the recording itself: tests/test_evaluate.py)."""

import json

import numpy as np
import pytest

from jedi_jax import config as config_lib
from jedi_jax import evaluate
from jedi_jax import logs
from jedi_jax import videos


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


def test_record_videos_writes_each_seeds_episodes(monkeypatch, tmp_path):
  """The step after the final test (experiments/train.py): each seed's state and single-seed config go to
  `evaluate.record_test_episodes` (tested frame for frame in test_evaluate.py), its GIFs to the seed's folder."""
  calls = []

  def fake_record(state, cfg, num):
    calls.append((int(state["w"]), cfg.seed, num))
    frames = np.full((4, 64, 64, 3), cfg.seed, np.uint8)
    frames[:, 0, 0] = np.arange(4)[:, None]  # distinct frames (a GIF merges identical consecutive ones)
    return [{"frames": frames, "return": float(cfg.seed), "env": e, "index": e} for e in range(num)]
  monkeypatch.setattr(evaluate, "record_test_episodes", fake_record)
  media = []
  monkeypatch.setattr(logs, "log_media", lambda m: media.extend(m))
  config = config_lib.debug()
  config.seed, config.run.record_test_episodes = 5, 2
  videos.record_test_videos(config, str(tmp_path / "one"), {"w": np.int32(7)}, 1)
  videos.record_test_videos(config, str(tmp_path / "packed"), {"w": np.array([7, 8], np.int32)}, 2)
  assert calls == [(7, 5, 2), (7, 5, 2), (8, 6, 2)]
  # W&B keys of their own: "test/episodes" is the interim test's scalar (a scalar and a media under one key clash).
  assert media == ["test/videos", "test/videos_seed_5", "test/videos_seed_6"]
  for directory, seed in ((tmp_path / "one" / "videos", 5), (tmp_path / "packed" / "seed_5" / "videos", 5),
                          (tmp_path / "packed" / "seed_6" / "videos", 6)):
    index = json.loads((directory / videos.VIDEO_INDEX).read_text())
    assert index == [{"file": f"test_episode_00{e}.gif", "index": e, "env": e, "return": float(seed), "steps": 3}
                     for e in range(2)]
    frames = videos.read_gif(str(directory / "test_episode_001.gif"))
    assert frames.shape == (4, 256, 256, 3) and (frames[:, 4:] == seed).all()


def test_record_field_out_of_range_is_refused():
  config = config_lib.debug()  # 4 test episodes
  config.run.record_test_episodes = 5
  with pytest.raises(ValueError, match=r"run.record_test_episodes must lie in \[0, env.num_test_episodes=4\], got 5"):
    videos.check_record_test_episodes(config)
  config.run.record_test_episodes = 4
  videos.check_record_test_episodes(config)
