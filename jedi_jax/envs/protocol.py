"""The Atari100k step protocol shared by every backend (as DIAMOND's src/envs/env.py runs Atari).

Each backend (envpool, ale-py, pure-JAX games) produces a `RawStep` per agent step; `advance` turns it into the
`StepOutput` the agent trains on, with DIAMOND's semantics:

* Life loss. The training env flags a life loss as `terminated` while the game simply continues
  (DIAMOND's `DoneOnLifeLoss` wrapper sits *outside* the auto-resetting vector env). envpool's and
  ale-py's `episodic_life` options do something else (extra no-op frames, or a full reset), so the
  backends run full games and the flag is derived here from a drop in `lives`.
* Auto-reset dummy. envpool and ale-py reset a finished game on the *next* step: that step ignores
  its action, returns reward 0, no flags, and the first frame of the new game (envpool#194,
  cleanrl#562). It is marked `is_reset` and must never become a training transition.
* Episode statistics. `episode_return` / `episode_length` are the raw return and the agent steps of
  the current full game, including the current step; at a game-over or truncated step they hold the
  finished game's totals, and the dummy step starts the new game at 0.

`advance` is written once against an array module (`numpy` for the host step, `jax.numpy` inside
`jit`/`scan`) so that all paths agree bit for bit.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import flax.struct
import numpy as np

from jedi_jax.atari100k import GAMES, did_you_mean

JAX_GAMES: tuple[str, ...] = ("Catch", "MinAtar-Breakout", "MinAtar-Asterix", "MinAtar-Freeway",
                              "MinAtar-SpaceInvaders")  # pure-JAX games (backend "jax", `jedi_jax/envs/jax_env.py`)


def check_game(game: str, backend: str | None = None) -> str:
  """Returns `game` if it is a known game (for `backend`, when given), else raises one clear ValueError.

  Atari100k games run on the "envpool" and "ale" backends, the pure-JAX games on "jax" only.
  """
  if game not in GAMES and game not in JAX_GAMES:
    raise ValueError(f"unknown game {game!r}{did_you_mean(game, GAMES + JAX_GAMES)}; valid Atari100k games: "
                     f"{', '.join(GAMES)}; pure-JAX games (env.backend 'jax'): {', '.join(JAX_GAMES)}")
  if backend is not None and (backend == "jax") != (game in JAX_GAMES):
    need = "'jax'" if game in JAX_GAMES else "'envpool' or 'ale'"
    raise ValueError(f"game {game!r} needs env.backend {need}, got {backend!r}")
  return game


def envpool_task_id(game: str) -> str:
  """"MsPacman" -> "MsPacman-v5" (envpool's task id)."""
  return f"{check_game(game)}-v5"


def ale_rom_name(game: str) -> str:
  """"MsPacman" -> "ms_pacman", "UpNDown" -> "up_n_down" (ale-py's ROM name)."""
  return re.sub(r"(?<!^)(?=[A-Z])", "_", check_game(game)).lower()


class RawStep(NamedTuple):
  """One agent step as a backend reports it (batch of N envs).

  Attributes:
    obs: [N, 64, 64, 3] uint8, NHWC.
    reward: [N] float32, raw (unclipped) reward summed over the skipped frames.
    game_over: [N] bool, the game really ended (all lives lost).
    truncated: [N] bool, the step cap was reached.
    lives: [N] int32, lives after the step.
  """
  obs: Any
  reward: Any
  game_over: Any
  truncated: Any
  lives: Any


class StepOutput(NamedTuple):
  """One agent step under the Atari100k protocol (batch of N envs).

  Attributes:
    obs: [N, 64, 64, 3] uint8, the frame after the step (on an `is_reset` step: the first frame of
      the new game).
    reward: [N] float32, raw reward (training targets take its sign).
    terminated: [N] bool, training end: game over, or (train env only) a life loss.
    truncated: [N] bool, the step cap was reached.
    lives: [N] int32.
    game_over: [N] bool, the real end of the game.
    is_reset: [N] bool, this transition is the auto-reset dummy (its action was ignored): never
      train on it.
    episode_return: [N] float32, raw return of the current full game, this step included.
    episode_length: [N] int32, agent steps of the current full game, this step included.
  """
  obs: Any
  reward: Any
  terminated: Any
  truncated: Any
  lives: Any
  game_over: Any
  is_reset: Any
  episode_return: Any
  episode_length: Any


class EnvState(flax.struct.PyTreeNode):
  """What a functional env step carries (a leaf of the training scan carry).

  Attributes:
    handle: backend handle: envpool's/ale-py's XLA handle ([8] uint8) on the "xla" path, an empty
      [0] uint8 placeholder on the "host" path (the pool lives in Python); for the pure-JAX
      backend on the "xla" path, the whole batch state (`jax_env.JaxEnvHandle`, keys included).
    obs: [N, 64, 64, 3] uint8, the observation the agent acts on next.
    lives: [N] int32, lives after the previous step (to detect a life loss).
    done: [N] bool, the previous step ended the game (game over or truncation): the next step is
      the auto-reset dummy.
    episode_return: [N] float32, raw return of the current full game so far.
    episode_length: [N] int32, agent steps of the current full game so far.
  """
  handle: Any
  obs: Any
  lives: Any
  done: Any
  episode_return: Any
  episode_length: Any


def initial_state(handle, obs, lives, xp=np) -> EnvState:
  """State right after a reset: no step taken, nothing pending.

  Args:
    handle: backend handle (see `EnvState.handle`).
    obs: [N, 64, 64, 3] uint8, the reset observation.
    lives: [N] int32.
    xp: `numpy` or `jax.numpy`.
  """
  n = obs.shape[0]
  return EnvState(handle=handle, obs=xp.asarray(obs, dtype=xp.uint8),
                  lives=xp.asarray(lives, dtype=xp.int32),
                  done=xp.zeros((n,), dtype=xp.bool_),
                  episode_return=xp.zeros((n,), dtype=xp.float32),
                  episode_length=xp.zeros((n,), dtype=xp.int32))


def advance(state: EnvState, raw: RawStep, *, train: bool, xp=np) -> tuple[EnvState, StepOutput]:
  """Applies the protocol to one backend step. Pure; works for numpy and inside `jax.jit`.

  Args:
    state: the state before the step (its `handle` is passed through unchanged).
    raw: what the backend returned for this step.
    train: True for the training env (a life loss is a training end), False for the test env.
    xp: `numpy` or `jax.numpy`.

  Returns:
    The state after the step and the step's `StepOutput`.
  """
  is_reset = state.done                        # the backend auto-reset on this step
  live = xp.logical_not(is_reset)
  game_over = xp.logical_and(raw.game_over, live)
  truncated = xp.logical_and(raw.truncated, live)
  life_loss = xp.logical_and(raw.lives < state.lives, live)
  terminated = xp.logical_or(game_over, life_loss) if train else game_over
  episode_return = xp.where(is_reset, xp.zeros_like(state.episode_return),
                            state.episode_return + raw.reward)
  episode_length = xp.where(is_reset, xp.zeros_like(state.episode_length),
                            state.episode_length + xp.ones_like(state.episode_length))
  new_state = state.replace(obs=raw.obs, lives=raw.lives, done=xp.logical_or(game_over, truncated),
                            episode_return=episode_return, episode_length=episode_length)
  out = StepOutput(obs=raw.obs, reward=raw.reward, terminated=terminated, truncated=truncated,
                   lives=raw.lives, game_over=game_over, is_reset=is_reset,
                   episode_return=episode_return, episode_length=episode_length)
  return new_state, out
