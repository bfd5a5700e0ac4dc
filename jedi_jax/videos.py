"""Frames to files: animated GIFs of test episodes, play sessions and open-loop grids (real | imagined | |error|).

GIFs are written with Pillow (already installed with matplotlib), so no video codec is needed; one agent step
is one GIF frame, 15 per second by default: real time for Atari's 4-frame skip at 60 Hz. Frames are
`[T, H, W, 3] uint8` (NHWC, the env's observation layout) and are enlarged by an integer factor with
nearest-neighbour sampling, so 64x64 observations stay sharp.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

DEFAULT_FPS = 15


def _check_frames(frames, name: str = "frames") -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise ValueError(f"{name} must be [T, H, W, 3] with T >= 1, got shape {frames.shape}")
  if frames.dtype != np.uint8:
    raise ValueError(f"{name} must be uint8, got {frames.dtype}")
  return frames


def enlarge(frames: np.ndarray, scale: int) -> np.ndarray:
  """`[..., H, W, C]` -> `[..., H*scale, W*scale, C]`, each pixel repeated (nearest neighbour)."""
  if not isinstance(scale, int) or scale < 1:
    raise ValueError(f"scale must be a positive integer, got {scale!r}")
  return frames if scale == 1 else np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def write_gif(path: str, frames, *, fps: float = DEFAULT_FPS, scale: int = 1) -> str:
  """Writes `frames` ([T, H, W, 3] uint8) as a looping GIF at `path`; returns the path."""
  frames = enlarge(_check_frames(frames), scale)
  if not path.lower().endswith(".gif"):
    raise ValueError(f"only .gif is written, got {path!r}")
  if fps <= 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images = [Image.fromarray(f) for f in frames]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.gif"
  # disposal=1 and optimize=False: every frame is stored whole, so a reader gets back exactly these frames.
  images[0].save(tmp, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0,
                 optimize=False, disposal=1)
  os.replace(tmp, path)
  return path


def read_gif(path: str) -> np.ndarray:
  """The frames of a GIF as `[T, H, W, 3] uint8` (tests, and checking a written file)."""
  from PIL import Image, ImageSequence  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def error_grid(real, imagined, *, gap: int = 2) -> np.ndarray:
  """Open-loop comparison frames: real | imagined | |real - imagined| side by side, examples stacked.

  Args:
    real, imagined: `[E, T, H, W, 3] uint8` (E examples of T steps) or `[T, H, W, 3]` (one example).
    gap: white pixels between panels and between examples.

  Returns:
    `[T, E*H + (E-1)*gap, 3*W + 2*gap, 3] uint8`. The error panel is the per-pixel absolute difference
    averaged over channels, shown in grey (black: identical, white: off by 255).
  """
  real, imagined = np.asarray(real), np.asarray(imagined)
  if real.ndim == 4:
    real, imagined = real[None], imagined[None]
  if real.shape != imagined.shape or real.ndim != 5 or real.shape[-1] != 3:
    raise ValueError(f"real and imagined must both be [E, T, H, W, 3], got {real.shape} and {imagined.shape}")
  if real.dtype != np.uint8 or imagined.dtype != np.uint8:
    raise ValueError(f"real and imagined must be uint8, got {real.dtype} and {imagined.dtype}")
  error = np.abs(real.astype(np.int16) - imagined.astype(np.int16)).mean(axis=-1).round().astype(np.uint8)
  error = np.repeat(error[..., None], 3, axis=-1)
  e, t, h, w, _ = real.shape
  out = np.full((t, e * h + (e - 1) * gap, 3 * w + 2 * gap, 3), 255, np.uint8)
  for i in range(e):
    top = i * (h + gap)
    for j, panel in enumerate((real[i], imagined[i], error[i])):
      out[:, top:top + h, j * (w + gap):j * (w + gap) + w] = panel
  return out


VIDEO_INDEX = "test_episodes.json"


def save_test_episodes(episodes: Sequence[dict], directory: str, *, scale: int = 4,
                       fps: float = DEFAULT_FPS) -> list[str]:
  """Writes each episode of `evaluate.record_test_episodes` as `directory/test_episode_<index>.gif` and an
  index, `directory/test_episodes.json` (file, position in results.json's `episode_returns`, test env,
  return, agent steps); returns the GIF paths."""
  paths, index = [], []
  for ep in episodes:
    name = f"test_episode_{ep['index']:03d}.gif"
    paths.append(write_gif(os.path.join(directory, name), ep["frames"], fps=fps, scale=scale))
    index.append({"file": name, "index": ep["index"], "env": ep["env"], "return": ep["return"],
                  "steps": int(len(ep["frames"]) - 1)})
  with open(os.path.join(directory, VIDEO_INDEX), "w") as f:
    json.dump(index, f, indent=1)
  return paths


def check_record_test_episodes(config) -> None:
  """`run.record_test_episodes` must lie in [0, env.num_test_episodes] (an output field: config.validate
  leaves it to the launcher)."""
  if not 0 <= config.run.record_test_episodes <= config.env.num_test_episodes:
    raise ValueError(f"run.record_test_episodes must lie in [0, env.num_test_episodes="
                     f"{config.env.num_test_episodes}], got {config.run.record_test_episodes}")


def record_test_videos(config, workdir: str, states, num_seeds: int, log=print) -> None:
  """GIFs of the first `run.record_test_episodes` final test episodes of each seed under `<seed dir>/videos/`
  (`workdir/videos/`, or `workdir/seed_<s>/videos/` for packed seeds), also sent to an active W&B run: the
  final test played again exactly (`evaluate.record_test_episodes`). `states`: the trained state(s), stacked
  over seeds when `num_seeds` > 1."""
  import jax  # pylint: disable=g-import-not-at-top
  from jedi_jax import evaluate, logs, run_files  # pylint: disable=g-import-not-at-top
  for k in range(num_seeds):
    seed = config.seed + k
    state = jax.tree.map(lambda x: x[k], states) if num_seeds > 1 else states
    cfg = run_files.seed_config(config, seed)
    directory = os.path.join(workdir, f"seed_{seed}" if num_seeds > 1 else "", "videos")
    episodes = evaluate.record_test_episodes(state, cfg, config.run.record_test_episodes)
    paths = save_test_episodes(episodes, directory)
    logs.log_media({f"test/videos_seed_{seed}" if num_seeds > 1 else "test/videos": paths})
    log(f"{'seed %d: ' % seed if num_seeds > 1 else ''}wrote {len(paths)} test episode video(s) to {directory}")


def write_imagination_strip(workdir: str, out: str, *, num_seeds: int = 1, seed_index: int = 0,
                            decoder_steps: int = 3000, batch_size: int = 32, horizon: int = 15, examples: int = 2,
                            seed: int = 0, wandb_project: str | None = None, log=print) -> tuple[str, str]:
  """The picture of a run's imagination (`experiments/imagination_strip.py`): loads the newest checkpoint in
  `workdir`, imagines `horizon` steps open loop from real starts of its replay with the recorded actions
  (`decoder.open_loop_frames`) and writes `out`.png (three rows per example: real frames / their latents,
  viewed / imagined states, viewed; enlarged 2x) and `out`.gif (real | imagined | |error|, `error_grid`).
  When `wandb_project` (default: the run's `run.wandb_project`; "" for none) is set, both go into the run's
  own W&B run as `imagination/open_loop` and `imagination/strip`. Returns the two paths."""
  import jax  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jedi_jax import config as config_lib, decoder, logs, run_files  # pylint: disable=g-import-not-at-top

  cfg, state, epoch = run_files.load_run(workdir, num_seeds)
  if num_seeds > 1:
    state = jax.tree.map(lambda x: x[seed_index], state)
  log(f"{cfg.game} ({cfg.wm.kind}): checkpoint at epoch {epoch}, {int(state.env_steps)} env steps")
  frames = decoder.open_loop_frames(state.wm_params, state.replay, jax.random.PRNGKey(seed), cfg, horizon=horizon,
                                    examples=examples, decoder_steps=decoder_steps, batch_size=batch_size, log=log)
  real, recon, dream = (np.asarray(frames[k]) for k in ("real", "recon", "dream"))
  err_recon = np.abs(recon.astype(float) - real).mean()
  err_dream = np.abs(dream.astype(float) - real).mean(axis=(0, 2, 3, 4))
  log(f"mean abs pixel error: reconstruction {err_recon:.1f}; imagined step 1 {err_dream[0]:.1f}, "
      f"step {len(err_dream)} {err_dream[-1]:.1f} (of 255)")

  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  rows = [r for e in range(len(real)) for r in (real[e], recon[e], dream[e])]
  strip = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
  png, gif = out + ".png", out + ".gif"
  Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(png)
  write_gif(gif, error_grid(real, dream), fps=4, scale=3)
  log(f"wrote {png} (rows per example: real / encoded / imagined, viewed) and {gif} "
      "(real | imagined | |error|, one frame per step)")

  project = cfg.run.wandb_project if wandb_project is None else wandb_project
  if project:
    run = logs.start_wandb(project, workdir, config_lib.to_dict(cfg))
    try:
      logs.log_media({"imagination/open_loop": gif, "imagination/strip": png})
    finally:
      run.finish()
    log(f"sent both to W&B project {project} (the run's id: {os.path.join(workdir, logs.WANDB_ID_FILE)})")
  return png, gif
