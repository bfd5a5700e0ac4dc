"""Catch, with bsuite's rules, as pure per-env JAX functions rendered to 64x64 RGB frames.

The rules are those of bsuite's Catch (Osband et al. 2020, github.com/deepmind/bsuite,
`bsuite/environments/catch.py`); gymnax (github.com/RobertTLange/gymnax,
`gymnax/environments/bsuite/catch.py`) shows the same game as a pure JAX step:

* a board of 10 rows x 5 columns; the ball starts in the top row (row 0) at a uniformly random
  column, the paddle sits in the bottom row (row 9) and starts in the middle column (5 // 2 = 2);
* 3 actions: 0 moves the paddle one column left, 1 keeps it, 2 moves it right (clipped at the walls);
* every step moves the paddle first, then drops the ball one row; when the ball reaches the bottom
  row (after exactly 9 steps) the game ends with reward +1 if the paddle is under the ball, else -1;
  every other step has reward 0. There are no lives.

Under a uniformly random policy the paddle's final column is independent of the ball's, which is
uniform over 5 columns, so the catch probability is exactly 1/5 and the mean return -0.6.

Departures from bsuite, both presentational: the observation is a 64x64 RGB frame instead of the
10x5 binary board (each cell is a block of about 6x13 pixels; the ball and the paddle have distinct
colours, the ball drawn over the paddle), so that the Atari agent runs unchanged; and the reset after
a game over is done by `jedi_jax.envs.jax_env` (bsuite's own next-step reset is the same rule).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax.types import FRAME_SHAPE

ROWS = 10
COLUMNS = 5
NUM_ACTIONS = 3
PADDLE_MOVES = (-1, 0, 1)          # action 0: left, 1: stay, 2: right (bsuite's _ACTIONS)
PADDLE_ROW = ROWS - 1
PADDLE_START = COLUMNS // 2

FRAME_SIZE = FRAME_SHAPE[0]
# Board cell of every pixel row / column: pixel y shows row y * ROWS // 64 (blocks of 6-7 pixels),
# pixel x column x * COLUMNS // 64 (blocks of 12-13 pixels).
PIXEL_ROW = np.arange(FRAME_SIZE) * ROWS // FRAME_SIZE         # [64]
PIXEL_COLUMN = np.arange(FRAME_SIZE) * COLUMNS // FRAME_SIZE   # [64]
BACKGROUND_RGB = (0, 0, 0)
BALL_RGB = (255, 80, 64)
PADDLE_RGB = (64, 160, 255)


class CatchState(flax.struct.PyTreeNode):
  """One game's state (scalars; a batch of N envs has leaves [N]).

  Attributes:
    ball_row: int32, 0 (top) .. 9 (bottom).
    ball_column: int32, 0 .. 4.
    paddle_column: int32, 0 .. 4 (the paddle is always in the bottom row).
  """
  ball_row: jax.Array
  ball_column: jax.Array
  paddle_column: jax.Array


def reset(key: jax.Array) -> CatchState:
  """A new game: the ball in the top row at a uniformly random column, the paddle in the middle."""
  return CatchState(ball_row=jnp.zeros((), jnp.int32),
                    ball_column=jax.random.randint(key, (), 0, COLUMNS, dtype=jnp.int32),
                    paddle_column=jnp.full((), PADDLE_START, jnp.int32))


def step(state: CatchState, action: jax.Array, key: jax.Array
         ) -> tuple[CatchState, jax.Array, jax.Array]:
  """One agent step of a running game (Catch draws nothing while playing: `key` is unused).

  Args:
    state: the game before the step (its ball not yet in the bottom row).
    action: int32 in {0, 1, 2}.
    key: unused (the signature every pure-JAX game shares).

  Returns:
    The new state, the reward (float32: +1 catch, -1 miss, 0 while falling) and game_over (bool).
  """
  del key
  move = jnp.asarray(PADDLE_MOVES, jnp.int32)[action]
  paddle = jnp.clip(state.paddle_column + move, 0, COLUMNS - 1)
  ball_row = state.ball_row + 1
  game_over = ball_row >= PADDLE_ROW
  caught = paddle == state.ball_column
  reward = jnp.where(game_over, jnp.where(caught, 1.0, -1.0), 0.0).astype(jnp.float32)
  return state.replace(ball_row=ball_row, paddle_column=paddle), reward, game_over


def render(state: CatchState) -> jax.Array:
  """The frame of one game: [64, 64, 3] uint8, black background, ball drawn over the paddle."""
  rows = jnp.asarray(PIXEL_ROW)[:, None]          # [64, 1]
  columns = jnp.asarray(PIXEL_COLUMN)[None, :]    # [1, 64]
  ball = (rows == state.ball_row) & (columns == state.ball_column)            # [64, 64]
  paddle = (rows == PADDLE_ROW) & (columns == state.paddle_column)            # [64, 64]
  rgb = lambda c: jnp.asarray(c, jnp.uint8)                                    # noqa: E731
  frame = jnp.where(paddle[..., None], rgb(PADDLE_RGB), rgb(BACKGROUND_RGB))
  return jnp.where(ball[..., None], rgb(BALL_RGB), frame)


def lives(state: CatchState) -> jax.Array:
  """Catch has no lives (reported as 0, like Atari games without a life counter)."""
  del state
  return jnp.zeros((), jnp.int32)
