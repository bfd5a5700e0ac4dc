"""jedi_jax/play.py (behind experiments/play.py): the keyboard mapping, and playing inside the world model of
the Catch reference run headless and in a pygame window under SDL's dummy video driver (no display needed)."""

import os
import shutil
import types

import numpy as np
import pytest

from jedi_jax import play

from test_train import reference  # noqa: F401  (the session's shared reference run)

BREAKOUT = ["NOOP", "FIRE", "RIGHT", "LEFT"]
FULL = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT", "UPFIRE",
        "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE"]


def test_keys_map_onto_the_minimal_action_set():
  assert play.action_names("Breakout", "envpool") == BREAKOUT  # ALE's minimal set, the policy's order
  assert play.action_names("Catch", "jax") == ["LEFT", "NOOP", "RIGHT"]
  cases = [(set(), BREAKOUT, 0), ({"FIRE"}, BREAKOUT, 1), ({"RIGHT"}, BREAKOUT, 2), ({"UP", "LEFT"}, BREAKOUT, 3),
           ({"LEFT", "RIGHT"}, BREAKOUT, 0), ({"UP"}, BREAKOUT, 0),
           ({"UP", "LEFT", "FIRE"}, FULL, 15), ({"DOWN", "RIGHT"}, FULL, 8), ({"UP", "DOWN", "FIRE"}, FULL, 1),
           (set(), ["LEFT", "NOOP", "RIGHT"], 1), ({"1"}, ["ACTION_0", "ACTION_1"], 1),
           # A combination the game lacks keeps its horizontal part first, then its vertical part.
           ({"UP", "RIGHT", "FIRE"}, ["NOOP", "FIRE", "UP", "RIGHT", "UPFIRE", "RIGHTFIRE"], 5),
           ({"UP", "RIGHT"}, ["NOOP", "UP", "RIGHT"], 2)]
  for pressed, names, want in cases:
    assert play.action_for_keys(pressed, names) == want, (pressed, names)
  assert [l.split() for l in play.key_help(BREAKOUT)] == [["(none)", "NOOP"], ["Space", "FIRE"],
                                                          ["Right", "RIGHT"], ["Left", "LEFT"]]
  assert play.key_help(FULL)[15].split() == ["Up+Left+Space", "UPLEFTFIRE"]


class FakeSession:
  """What `run_window` uses of a `play.Session`, without a world model: reward +1 for FIRE, an end at step 3."""

  def __init__(self):
    self.names, self.t, self.episode_return, self.starts = BREAKOUT, 0, 0.0, 0
    self.cfg = types.SimpleNamespace(game="Breakout", wm=types.SimpleNamespace(kind="jedi"))

  def frame(self):
    return np.full((64, 64, 3), 40 * self.starts, np.uint8)

  def new_start(self):
    self.starts, self.t, self.episode_return = self.starts + 1, 0, 0.0

  def step(self, action):
    self.t += 1
    reward = 1.0 if BREAKOUT[action] == "FIRE" else 0.0
    self.episode_return += reward
    return {"action": action, "reward": reward, "end": self.t == 3, "frame": self.frame()}


def test_window_turns_key_presses_into_actions(tmp_path, monkeypatch):
  """The pygame loop under SDL's dummy video driver, keys posted as events: held keys choose the action every
  step, R restarts, Esc quits, and the window is saved."""
  monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
  pygame = pytest.importorskip("pygame")  # the test extra installs it
  key = lambda kind, k: pygame.event.Event(kind, key=k)
  scripted = {0: [key(pygame.KEYDOWN, pygame.K_RIGHT)], 2: [key(pygame.KEYUP, pygame.K_RIGHT)],
              3: [key(pygame.KEYDOWN, pygame.K_SPACE)], 4: [key(pygame.KEYDOWN, pygame.K_r)],
              5: [key(pygame.KEYUP, pygame.K_SPACE), key(pygame.KEYDOWN, pygame.K_LEFT),
                  key(pygame.KEYDOWN, pygame.K_UP)],
              6: [key(pygame.KEYDOWN, pygame.K_ESCAPE)]}
  session, shot = FakeSession(), tmp_path / "window.png"
  outcomes = play.run_window(session, scale=2, fps=1000, scripted=scripted, screenshot=str(shot))
  assert [BREAKOUT[o["action"]] for o in outcomes] == ["RIGHT", "RIGHT", "NOOP", "FIRE", "FIRE", "LEFT"]
  assert [o["end"] for o in outcomes] == [False, False, True, False, False, False]
  assert session.starts == 1 and session.t == 2  # R before step 5: a new start, then two steps
  image = pygame.image.load(str(shot))
  assert image.get_size()[0] >= 128 + 300 and image.get_at((5, 5))[:3] == (40, 40, 40)  # the new start's frame


@pytest.mark.after_suite
def test_session_headless_and_window_on_a_finished_run(reference, tmp_path, monkeypatch):  # noqa: F811
  monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
  pygame = pytest.importorskip("pygame")
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)  # the viewing decoder is cached in the run
  lines = []
  session = play.Session(str(workdir), decoder_steps=0, log=lines.append)
  assert any("fitting 0 steps" in l for l in lines) and (workdir / play.DECODER_FILE).exists()
  frames, outcomes = play.play_headless(session, 4)
  assert len(outcomes) == 4 and len(frames) == 5 + sum(o["end"] for o in outcomes)
  assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
  assert all(o["reward"] in (-1.0, 0.0, 1.0) and 0 <= o["action"] < 3 for o in outcomes)

  key = lambda kind, k: pygame.event.Event(kind, key=k)
  scripted = {0: [key(pygame.KEYDOWN, pygame.K_RIGHT)], 2: [key(pygame.KEYUP, pygame.K_RIGHT)],
              3: [key(pygame.KEYDOWN, pygame.K_r), key(pygame.KEYDOWN, pygame.K_LEFT)],
              4: [key(pygame.KEYDOWN, pygame.K_ESCAPE)]}
  shot = tmp_path / "window.png"
  outcomes = play.run_window(session, scale=2, fps=1000, scripted=scripted, screenshot=str(shot))
  assert [o["action"] for o in outcomes] == [2, 2, 1, 0]  # RIGHT, RIGHT, released: NOOP, LEFT; Esc stops
  assert session.t == 1  # R restarted from a new segment before the last step
  assert shot.stat().st_size > 1000

  lines.clear()
  play.Session(str(workdir), decoder_steps=0, log=lines.append)  # the cached decoder is reused
  assert any("loaded" in l for l in lines) and not any("fitting" in l for l in lines)
