"""Playing inside a trained world model: the keyboard mapping, a session that steps the run's world model one
action at a time (`jedi_jax/dream.py`) and shows its states, headless policy play, and the pygame window
(`experiments/play.py` is the command line; pygame is imported only by the window, the `[play]` extra).

JEDI's latents are shown through the viewing decoder of `jedi_jax/decoder.py`, fitted once on the run's
replay frames and cached in the run (`viewing_decoder.msgpack`, refitted when the checkpoint or the number
of decoder steps change); the pixel baseline shows its own frames.
"""

from __future__ import annotations

import json
import os

DECODER_FILE = "viewing_decoder.msgpack"
KEY_SYMBOLS = {"UP": "Up", "DOWN": "Down", "LEFT": "Left", "RIGHT": "Right", "FIRE": "Space"}


# --- Actions and keys --------------------------------------------------------------------------------------


def action_names(game: str, backend: str) -> list[str]:
  """Names of the game's actions in the policy's order: ALE's minimal action set for Atari (envpool and ale-py
  both use it), bsuite's meaning for Catch, `ACTION_<i>` otherwise."""
  from jedi_jax import envs  # pylint: disable=g-import-not-at-top
  if game in envs.GAMES:
    import ale_py  # pylint: disable=g-import-not-at-top
    from ale_py import roms  # pylint: disable=g-import-not-at-top
    from jedi_jax.envs.protocol import ale_rom_name  # pylint: disable=g-import-not-at-top
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(roms.get_rom_path(ale_rom_name(game)))
    return [a.name for a in ale.getMinimalActionSet()]
  if game == "Catch":
    from jedi_jax.envs import catch  # pylint: disable=g-import-not-at-top
    return [{-1: "LEFT", 0: "NOOP", 1: "RIGHT"}[m] for m in catch.PADDLE_MOVES]
  return [f"ACTION_{i}" for i in range(envs.num_actions(game, backend))]


def action_for_keys(pressed, names: list[str]) -> int:
  """The action for the held keys (a set of "UP", "DOWN", "LEFT", "RIGHT", "FIRE", or digits "0".."9" for
  games without ALE names): ALE's name for the combination, e.g. UP+RIGHT+FIRE -> "UPRIGHTFIRE"; when the
  game lacks it, the first it has of horizontal+FIRE, vertical+FIRE, vertical+horizontal, horizontal,
  vertical, FIRE; else NOOP (or action 0). Opposite directions cancel."""
  digits = sorted(k for k in pressed if k.isdigit() and int(k) < len(names))
  if digits:
    return int(digits[0])
  vert = "UP" if "UP" in pressed and "DOWN" not in pressed else "DOWN" if "DOWN" in pressed and "UP" not in pressed \
      else ""
  horiz = "RIGHT" if "RIGHT" in pressed and "LEFT" not in pressed else "LEFT" if "LEFT" in pressed and \
      "RIGHT" not in pressed else ""
  fire = "FIRE" if "FIRE" in pressed else ""
  for name in (vert + horiz + fire, horiz + fire, vert + fire, vert + horiz, horiz, vert, fire):
    if name and name in names:
      return names.index(name)
  return names.index("NOOP") if "NOOP" in names else 0


def key_help(names: list[str]) -> list[str]:
  """One line per action: the keys that choose it (the mapping shown in the window)."""
  lines = []
  for i, name in enumerate(names):
    if name.startswith("ACTION_"):
      keys = str(i) if i < 10 else "-"
    elif name == "NOOP":
      keys = "(none)"
    else:
      parts, rest = [], name
      for token in ("UP", "DOWN", "RIGHT", "LEFT", "FIRE"):
        if token in rest:
          parts.append(KEY_SYMBOLS[token])
          rest = rest.replace(token, "", 1)
      keys = "+".join(parts) if not rest else "-"
    lines.append(f"{keys:>18}  {name}")
  return lines


# --- The session: world model, start segments, viewer ------------------------------------------------------


class Session:
  """A trained run's world model and policy, stepped one action at a time (`jedi_jax/dream.py`)."""

  def __init__(self, workdir: str, num_seeds: int = 1, seed_index: int = 0, decoder_steps: int = 2000,
               seed: int = 0, log=print):
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jedi_jax import dream, run_files, train  # pylint: disable=g-import-not-at-top
    cfg, state, epoch = run_files.load_run(workdir, num_seeds, log=lambda *a: None)
    if num_seeds > 1:
      state = jax.tree.map(lambda x: x[seed_index], state)
    self.cfg, self.epoch, self.log = cfg, epoch, log
    self.wm_params, self.ac_params, self.replay = state.wm_params, state.ac_params, state.replay
    self.names = action_names(cfg.game, cfg.env.backend)
    self.key = jax.random.PRNGKey(seed)
    self._np = np
    self._start = jax.jit(lambda wm, ac, replay, key: dream.start(
        wm, ac, train.sample_imagination_starts(replay, key, 1, cfg), cfg))
    self._step = jax.jit(lambda wm, ac, d, action, t, key, use_policy: dream.step(
        wm, ac, d, action, t, key, cfg, use_policy))
    self.view = self._make_viewer(workdir, decoder_steps)
    self.new_start()

  def _make_viewer(self, workdir: str, decoder_steps: int):
    """states [B, *S] -> uint8 frames [B, 64, 64, 3]."""
    import jax  # pylint: disable=g-import-not-at-top
    from flax import serialization  # pylint: disable=g-import-not-at-top
    from jedi_jax import decoder  # pylint: disable=g-import-not-at-top
    if self.cfg.wm.kind != "jedi":  # the pixel model's states are frames in [-1, 1]
      return jax.jit(decoder.pixel_frames)
    path, meta_path = os.path.join(workdir, DECODER_FILE), os.path.join(workdir, DECODER_FILE + ".json")
    meta = {"checkpoint_epoch": int(self.epoch), "decoder_steps": decoder_steps}
    template = decoder.init_decoder(jax.random.PRNGKey(0), self._state_shape())
    params = None
    if os.path.exists(path) and os.path.exists(meta_path):
      with open(meta_path) as f:
        if json.load(f) == meta:
          with open(path, "rb") as g:
            params = serialization.from_bytes(template, g.read())
          self.log(f"viewing decoder: loaded {path}")
    if params is None:
      self.log(f"viewing decoder: fitting {decoder_steps} steps on replay frames (once; cached in {path})")
      params = decoder.fit_decoder(self.wm_params, self.replay, jax.random.PRNGKey(1), decoder_steps, 32,
                                   self.cfg, log=self.log)
      with open(path + ".tmp", "wb") as g:
        g.write(serialization.to_bytes(params))
      os.replace(path + ".tmp", path)
      with open(meta_path, "w") as f:
        json.dump(meta, f)
    return jax.jit(lambda s: decoder.decode(params, s))

  def _state_shape(self):
    from jedi_jax import world_model  # pylint: disable=g-import-not-at-top
    return world_model.state_shape(self.cfg)

  def new_start(self) -> None:
    """A new real replay segment to start from (R)."""
    import jax  # pylint: disable=g-import-not-at-top
    self.key, k_start, self.k_dream = jax.random.split(self.key, 3)
    self.dream = self._start(self.wm_params, self.ac_params, self.replay, k_start)
    self.t, self.episode_return = 0, 0.0

  def frame(self):
    """The frame shown now: [64, 64, 3] uint8."""
    return self._np.asarray(self.view(self.dream.cond[:, -1]))[0]

  def step(self, action: int | None) -> dict:
    """One step with `action` (None: the policy's); returns {"action", "reward", "end", "frame"} where frame
    is what the action led to (an end's last frame; the restart is shown by the next `frame()`)."""
    np = self._np
    use_policy = action is None
    self.dream, out = self._step(self.wm_params, self.ac_params, self.dream, np.asarray([action or 0], np.int32),
                                 np.int32(self.t), self.k_dream, np.asarray([use_policy]))
    self.t += 1
    reward, end = float(out.reward[0]), bool(out.end[0])
    self.episode_return += reward
    return {"action": int(out.action[0]), "reward": reward, "end": end,
            "frame": np.asarray(self.view(out.state))[0]}


# --- Headless play and the window --------------------------------------------------------------------------


def play_headless(session: Session, num_steps: int) -> tuple[list, list[dict]]:
  """`num_steps` steps with the run's policy: (frames incl. the first, step outcomes)."""
  frames, outcomes = [session.frame()], []
  for _ in range(num_steps):
    out = session.step(None)
    outcomes.append({k: v for k, v in out.items() if k != "frame"})
    frames.append(out["frame"])
    if out["end"]:
      frames.append(session.frame())  # the restart
  return frames, outcomes


def _key_names():
  import pygame  # pylint: disable=g-import-not-at-top
  names = {pygame.K_UP: "UP", pygame.K_DOWN: "DOWN", pygame.K_LEFT: "LEFT", pygame.K_RIGHT: "RIGHT",
           pygame.K_SPACE: "FIRE"}
  names.update({getattr(pygame, f"K_{d}"): str(d) for d in range(10)})
  return names


def run_window(session: Session, *, scale: int, fps: int, max_steps: int | None = None,
               scripted: dict | None = None, screenshot: str | None = None) -> list[dict]:
  """The pygame loop; returns the step outcomes. `scripted` {step: [pygame events]} posts events before that
  step and `max_steps` stops (tests, screenshots: `SDL_VIDEODRIVER=dummy`); `screenshot` saves the window."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pygame  # pylint: disable=g-import-not-at-top
  keys = _key_names()
  pygame.display.init()  # no audio
  pygame.font.init()
  side = 64 * scale
  help_lines = key_help(session.names)
  font = pygame.font.Font(None, 22)
  panel = max(300, max(font.size(l)[0] for l in help_lines) + 20)
  screen = pygame.display.set_mode((side + panel, max(side, 22 * (len(help_lines) + 7))))
  pygame.display.set_caption(f"jedi_jax: {session.cfg.game} inside the world model ({session.cfg.wm.kind})")
  clock, pressed, outcomes, message, running = pygame.time.Clock(), set(), [], "", True
  frame = session.frame()
  while running and (max_steps is None or len(outcomes) < max_steps):
    for event in (scripted or {}).get(len(outcomes), []):
      pygame.event.post(event)
    for event in pygame.event.get():
      if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
        running = False
      elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
        session.new_start()
        frame, message = session.frame(), "restarted from a new replay segment"
      elif event.type == pygame.KEYDOWN and event.key in keys:
        pressed.add(keys[event.key])
      elif event.type == pygame.KEYUP and event.key in keys:
        pressed.discard(keys[event.key])
    if not running:
      break
    out = session.step(action_for_keys(pressed, session.names))
    outcomes.append({k: v for k, v in out.items() if k != "frame"})
    frame = out["frame"]
    if out["reward"]:
      message = f"reward {out['reward']:+.0f}"
    if out["end"]:
      message = f"END (return {session.episode_return:+.0f}): restarting from the segment"
      session.episode_return = 0.0
    screen.fill((20, 20, 20))
    image = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
    screen.blit(pygame.surfarray.make_surface(np.transpose(image, (1, 0, 2))), (0, 0))
    lines = [f"{session.cfg.game} ({session.cfg.wm.kind} world model)", f"step {session.t}",
             f"action: {session.names[out['action']]}", f"return: {session.episode_return:+.0f}", message,
             "R: new start   Esc: quit", "keys -> action:"] + help_lines
    for i, line in enumerate(lines):
      color = (255, 220, 80) if line == message and message else (230, 230, 230)
      screen.blit(font.render(line, True, color), (side + 10, 6 + 22 * i))
    pygame.display.flip()
    if out["end"]:
      frame = session.frame()
    clock.tick(fps)
  if screenshot:
    pygame.image.save(screen, screenshot)
  pygame.quit()
  return outcomes
