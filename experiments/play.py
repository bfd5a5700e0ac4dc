r"""Play inside a trained world model with the keyboard, or watch the run's policy play in it.

  python -m experiments.play --workdir=runs/cpu_Boxing_0                 # a pygame window (pip install -e ".[play]")
  SDL_VIDEODRIVER=dummy python -m experiments.play --workdir=RUN --headless_steps=200 --record=dream.gif

Each game starts from a real replay segment of the run (its num_cond frames and actions, as imagination
does); from there every frame is the world model's (`jedi_jax/dream.py`: imagine's step with your action).
JEDI's latents are shown through the viewing decoder of `jedi_jax/decoder.py`, fitted once on the run's
replay frames and cached in the run (`viewing_decoder.msgpack`, refitted when the checkpoint or
--decoder_steps change); the pixel baseline shows its own frames. Window: arrow keys, space (FIRE) and
their combinations map onto the game's minimal action set (the mapping is shown beside the picture);
rewards and ends appear as they happen, an end restarts from the same segment, R restarts from a new
segment, Esc quits. --headless_steps=N plays N steps with the run's policy, no window, and --record writes
the frames as a GIF.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (its newest checkpoint is used).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 1, "Seeds packed in that workdir (--num_seeds of train.py).")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "Which packed seed to play.")
_HEADLESS = flags.DEFINE_integer("headless_steps", 0, "If > 0: play this many steps with the run's policy, "
                                 "without a window.", lower_bound=0)
_RECORD = flags.DEFINE_string("record", "", "Write the played frames to this .gif.")
_DECODER_STEPS = flags.DEFINE_integer("decoder_steps", 2000, "Viewing-decoder training steps (JEDI runs).",
                                      lower_bound=0)
_SCALE = flags.DEFINE_integer("scale", 6, "Window / GIF pixels per observation pixel.", lower_bound=1)
_FPS = flags.DEFINE_integer("fps", 15, "Steps per second in the window (15: Atari's real time).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the start segments and of the world model's sampling.")
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _RECORD.value and not _RECORD.value.lower().endswith(".gif"):
    print("error: --record must name a .gif file", file=sys.stderr)
    sys.exit(1)
  if not _HEADLESS.value and _RECORD.value:
    print("error: --record needs --headless_steps (the window does not record)", file=sys.stderr)
    sys.exit(1)
  from jedi_jax import checkpoint, play, videos  # pylint: disable=g-import-not-at-top
  try:
    session = play.Session(_WORKDIR.value, _NUM_SEEDS.value, _SEED_INDEX.value, _DECODER_STEPS.value, _SEED.value)
  except (checkpoint.WorkdirError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"{session.cfg.game}, checkpoint at epoch {session.epoch}; actions: {', '.join(session.names)}")
  if _HEADLESS.value:
    frames, outcomes = play.play_headless(session, _HEADLESS.value)
    rewards = [o["reward"] for o in outcomes]
    print(f"played {len(outcomes)} steps with the policy: reward sum {sum(rewards):+.0f}, "
          f"{sum(o['end'] for o in outcomes)} end(s)")
    if _RECORD.value:
      import numpy as np  # pylint: disable=g-import-not-at-top
      videos.write_gif(_RECORD.value, np.stack(frames), fps=_FPS.value, scale=_SCALE.value)
      print(f"wrote {_RECORD.value} ({len(frames)} frames)")
    return
  try:
    import pygame  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print("error: the window needs pygame: pip install -e '.[play]'", file=sys.stderr)
    sys.exit(1)
  play.run_window(session, scale=_SCALE.value, fps=_FPS.value)


if __name__ == "__main__":
  app.run(main)
