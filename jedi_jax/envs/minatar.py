"""MinAtar (Young & Tian 2019, arXiv 1903.03176) on gymnax, as pure per-env JAX game functions.

Four MinAtar games, `MinAtar-Breakout`, `MinAtar-Asterix`, `MinAtar-Freeway` and `MinAtar-SpaceInvaders`,
run on gymnax 1.0.1's JAX ports (github.com/RobertTLange/gymnax, `gymnax/environments/minatar/`),
which are the reference implementation here: `reset` is gymnax's `reset_env`, `step` its `step_env`
with its default `EnvParams`, so rewards, dynamics and randomness are gymnax's.

* Actions: gymnax's minimal action sets (`num_actions`): Breakout 3 (no-op, left, right), Asterix 5
  (no-op, left, up, right, down), Freeway 3 (no-op, up, down), SpaceInvaders 4 (no-op, left, right, fire).
* Game over: what gymnax's own `Environment.step` ends a game on, `terminated | truncated`: the game's
  terminal condition (`is_terminated`: the ball passes the paddle, the player touches an enemy, an alien or
  a bullet reaches the cannon) or gymnax's time limit `time >= max_steps_in_episode` (`is_truncated`):
  1000 agent steps, 2500 for Freeway, which has no other end (MinAtar's Freeway ends at 2500 frames).
* The key: gymnax's `step` splits its key into (step key, reset key) and steps with the first; `step`
  here does the same, so the same key gives the same transition as gymnax's `step`. gymnax's own
  auto-reset is left out: `jedi_jax.envs.jax_env` resets on the next step, as envpool does.
* Lives: MinAtar has none; reported as 0 (like Catch and Atari games without a life counter).
* Dtypes: every state leaf keeps the (non-weak) dtype of the reset state, so a batch state is a fixed
  `lax.scan` carry.

Observation. MinAtar's observation is a 10x10xC boolean grid, one channel per kind of object (gymnax's
`get_obs`). It is drawn as a [64, 64, 3] uint8 frame so that the Atari agent runs unchanged: each grid
cell is a block of 6-7 x 6-7 pixels (pixel y shows row y * 10 // 64, pixel x column x * 10 // 64), black
where no channel is set, otherwise the colour of the first set channel in the game's priority order
(`PRIORITY`, top first): the player, then moving objects, then the trails and direction markers they
leave, then static objects, so a cell never hides the player or a moving object behind its trail.

Palette (RGB; channel names and indices are gymnax's):

  =============  ====================================================================================
  Breakout       paddle(0) blue 64,160,255; ball(1) white 255,255,255; trail(2) grey 128,128,128;
                 brick(3) orange 255,128,0.  Priority paddle, ball, trail, brick.
  Asterix        player(0) blue 64,160,255; enemy(1) red 255,64,64; trail(2) grey 128,128,128;
                 gold(3) yellow 255,215,0.  Priority player, enemy, gold, trail.
  Freeway        chicken(0) yellow 255,255,0; car(1) red 255,64,64; speed1..speed5(2..6), the trail
                 cell behind a car by its speed, a ramp of cyans 0,60,60 / 0,100,100 / 0,140,140 /
                 0,180,180 / 0,220,220.  Priority chicken, car, speed1..speed5.
  SpaceInvaders  cannon(0) blue 64,160,255; alien(1) green 0,200,0; alien_left(2) green 0,200,120;
                 alien_right(3) lime 180,220,0; friendly_bullet(4) white 255,255,255;
                 enemy_bullet(5) red 255,64,64.  Priority cannon, friendly_bullet, enemy_bullet,
                 alien_left, alien_right, alien (every alien is in exactly one of alien_left /
                 alien_right, so the plain alien colour never shows: the colour gives the direction).
  =============  ====================================================================================
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax.types import FRAME_SHAPE

GRID = 10                          # MinAtar's 10x10 board
FRAME_SIZE = FRAME_SHAPE[0]
# Grid cell of every pixel row / column (blocks of 6-7 pixels).
PIXEL_CELL = np.arange(FRAME_SIZE) * GRID // FRAME_SIZE     # [64]
BACKGROUND_RGB = (0, 0, 0)


class MinAtarSpec(NamedTuple):
  """One MinAtar game: the gymnax env id, its channel colours (by channel index) and draw priority."""
  gymnax_id: str
  palette: tuple[tuple[int, int, int], ...]     # [C] RGB, indexed by gymnax's channel
  priority: tuple[int, ...]                     # channel indices, the one drawn on top first


BLUE, WHITE, GREY, RED = (64, 160, 255), (255, 255, 255), (128, 128, 128), (255, 64, 64)

SPECS: dict[str, MinAtarSpec] = {
    "MinAtar-Breakout": MinAtarSpec(
        "Breakout-MinAtar", (BLUE, WHITE, GREY, (255, 128, 0)), (0, 1, 2, 3)),
    "MinAtar-Asterix": MinAtarSpec(
        "Asterix-MinAtar", (BLUE, RED, GREY, (255, 215, 0)), (0, 1, 3, 2)),
    "MinAtar-Freeway": MinAtarSpec(
        "Freeway-MinAtar",
        ((255, 255, 0), RED, (0, 60, 60), (0, 100, 100), (0, 140, 140), (0, 180, 180), (0, 220, 220)),
        (0, 1, 2, 3, 4, 5, 6)),
    "MinAtar-SpaceInvaders": MinAtarSpec(
        "SpaceInvaders-MinAtar", (BLUE, (0, 200, 0), (0, 200, 120), (180, 220, 0), WHITE, RED),
        (0, 4, 5, 2, 3, 1)),
}
GAMES: tuple[str, ...] = tuple(SPECS)


class GameFunctions(NamedTuple):
  """The fields of `jax_env.JaxGame` (kept here as a plain tuple so this module does not import jax_env)."""
  num_actions: int
  reset: Callable[[jax.Array], Any]
  step: Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array, jax.Array]]
  render: Callable[[Any], jax.Array]
  lives: Callable[[Any], jax.Array]


def gymnax_env(game: str):
  """gymnax's env object and default params of a MinAtar game ("MinAtar-Breakout" -> "Breakout-MinAtar")."""
  import gymnax  # here, not at the top: importing gymnax takes ~2 s (it loads its plotting stack)
  return gymnax.make(SPECS[game].gymnax_id)


def render_grid(grid: jax.Array, spec: MinAtarSpec) -> jax.Array:
  """grid: [10, 10, C] (nonzero = set) -> [64, 64, 3] uint8, each cell the colour of its first set
  channel in `spec.priority`, black if none."""
  grid = jnp.asarray(grid) != 0
  cells = jnp.broadcast_to(jnp.asarray(BACKGROUND_RGB, jnp.uint8), (GRID, GRID, 3))
  for channel in reversed(spec.priority):        # lowest priority first, so the top channel wins
    colour = jnp.asarray(spec.palette[channel], jnp.uint8)
    cells = jnp.where(grid[:, :, channel, None], colour, cells)
  index = jnp.asarray(PIXEL_CELL)
  return cells[index][:, index]


def _strong(x) -> jax.Array:
  x = jnp.asarray(x)
  return jnp.asarray(x, x.dtype)   # an explicit dtype drops weak typing


def functions(game: str) -> GameFunctions:
  """The pure per-env functions of a MinAtar game (the fields of a `JaxGame`)."""
  spec = SPECS[game]
  env, params = gymnax_env(game)

  def reset(key: jax.Array):
    """A new game: gymnax's `reset_env(key)`."""
    _, state = env.reset_env(key, params)
    return jax.tree.map(_strong, state)

  def step(state, action: jax.Array, key: jax.Array):
    """One agent step of a running game: gymnax's `step_env` with the step half of `key` (as gymnax's
    `step`). Returns the new state, the reward (float32) and game_over (terminated or truncated)."""
    key_step, _ = jax.random.split(key)     # gymnax's step: (key_step, key_reset) = split(key)
    _, new, reward, terminated, _ = env.step_env(key_step, state, action, params)
    game_over = jnp.logical_or(terminated, env.is_truncated(new, params))
    new = jax.tree.map(lambda n, old: jnp.asarray(n, old.dtype), new, state)
    return new, jnp.asarray(reward, jnp.float32), jnp.asarray(game_over, jnp.bool_)

  def render(state) -> jax.Array:
    """The frame of one game: [64, 64, 3] uint8 (the module docstring gives the palette)."""
    return render_grid(env.get_obs(state), spec)

  def lives(state) -> jax.Array:
    """MinAtar has no lives (reported as 0)."""
    del state
    return jnp.zeros((), jnp.int32)

  return GameFunctions(int(env.num_actions), reset, step, render, lives)
