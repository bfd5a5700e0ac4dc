"""Pure-JAX games (`env.backend = "jax"`) behind the same interface as the Atari backends.

A game is four pure per-env functions (`JaxGame`): `reset(key) -> game_state`,
`step(game_state, action, key) -> (game_state, reward, game_over)`, `render(game_state) -> [64, 64, 3]
uint8` and `lives(game_state)`. `raw_step` vmaps them over N envs and adds what envpool does around a
game (as gymnax's and purejaxrl's auto-reset wrappers do, but on the *next* step, like envpool):

* the step after a game over or truncation is the auto-reset dummy: the action is ignored, the reward
  is 0, no flag is set, and the frame is the first frame of the new game (envpool#194);
* a step cap of `max_episode_steps` agent steps (truncation).

The handle of `EnvState` is the whole batch state (`JaxEnvHandle`: game states, one PRNG key per env,
the pending-reset flags and step counters), so `step_fn(env_state, actions)` is pure and the
protocol (`protocol.advance`: life loss, episode statistics, `is_reset`) is the one every backend uses.
The "host" path runs the same jitted step from Python (through `io_callback` inside a compiled loop).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.struct
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax.envs import catch
from jedi_jax.envs import minatar
from jedi_jax.envs import protocol
from jedi_jax.envs.base import AtariBatchEnv
from jedi_jax.envs.protocol import RawStep


class JaxGame(NamedTuple):
  """A pure-JAX game: per-env functions (no batch axis), vmapped by `raw_step`."""
  num_actions: int
  reset: Callable[[jax.Array], Any]                          # key -> game state
  step: Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array, jax.Array]]
  render: Callable[[Any], jax.Array]                         # game state -> [64, 64, 3] uint8
  lives: Callable[[Any], jax.Array]                          # game state -> int32


JAX_GAMES: dict[str, JaxGame] = {
    "Catch": JaxGame(catch.NUM_ACTIONS, catch.reset, catch.step, catch.render, catch.lives),
    **{name: JaxGame(*minatar.functions(name)) for name in minatar.GAMES},
}
assert tuple(JAX_GAMES) == protocol.JAX_GAMES


class JaxEnvHandle(flax.struct.PyTreeNode):
  """The state of N pure-JAX envs (the `handle` of their `EnvState`).

  Attributes:
    game: the game states, leaves [N, ...].
    key: [N, 2] uint32, each env's PRNG key (split at every step).
    ended: [N] bool, the last step ended the game (game over or step cap): the next step resets.
    steps: [N] int32, agent steps of the current game (for the step cap).
  """
  game: Any
  key: jax.Array
  ended: jax.Array
  steps: jax.Array


def reset_all(game: JaxGame, keys: jax.Array) -> tuple[JaxEnvHandle, jax.Array, jax.Array]:
  """New games in every env. keys: [N, 2]. Returns the handle, obs [N, 64, 64, 3] and lives [N]."""
  keys, reset_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  states = jax.vmap(game.reset)(reset_keys)
  n = keys.shape[0]
  handle = JaxEnvHandle(game=states, key=keys, ended=jnp.zeros((n,), jnp.bool_),
                        steps=jnp.zeros((n,), jnp.int32))
  return handle, jax.vmap(game.render)(states), jax.vmap(game.lives)(states)


def raw_step(game: JaxGame, max_episode_steps: int, handle: JaxEnvHandle, actions: jax.Array
             ) -> tuple[JaxEnvHandle, RawStep]:
  """One agent step of N envs (pure). actions: [N] int32. An env whose last step ended its game
  starts a new one instead (its action is ignored, reward 0, no flags)."""

  def one(state, key, ended, steps, action):
    key, k_reset, k_step = jax.random.split(key, 3)
    played, reward, game_over = game.step(state, action, k_step)
    state = jax.tree.map(lambda new, old: jnp.where(ended, new, old), game.reset(k_reset), played)
    steps = jnp.where(ended, 0, steps + 1)
    game_over = ~ended & game_over
    truncated = ~ended & ~game_over & (steps >= max_episode_steps)
    reward = jnp.where(ended, 0.0, reward).astype(jnp.float32)
    raw = RawStep(obs=game.render(state), reward=reward, game_over=game_over, truncated=truncated,
                  lives=game.lives(state).astype(jnp.int32))
    return (state, key, game_over | truncated, steps), raw

  (states, keys, ended, steps), raw = jax.vmap(one)(
      handle.game, handle.key, handle.ended, handle.steps, jnp.asarray(actions, jnp.int32))
  return JaxEnvHandle(game=states, key=keys, ended=ended, steps=steps), raw


class JaxBatchEnv(AtariBatchEnv):
  """N envs of a pure-JAX game (`JAX_GAMES`), with the Atari envs' interface and step protocol.

  Env i is seeded with `PRNGKey(seed + i)` (so one pool of K x E envs laid out as in
  `loop.env_seed` gives every packed seed the envs of its single run). `noop_max` does not apply
  (the games draw their own random starts) and is only recorded.
  """

  backend = "jax"
  xla_platforms = None  # a pure-JAX step: compiled into the program on any platform

  def __init__(self, game: str, num_envs: int, seed: int, *, train: bool,
               max_episode_steps: int = 27_000, noop_max: int = 30):
    super().__init__(game, num_envs, seed, train=train, max_episode_steps=max_episode_steps,
                     noop_max=noop_max)
    if self.game not in JAX_GAMES:
      raise ValueError(f"game {game!r} has no pure-JAX version; jax backend games: "
                       f"{', '.join(JAX_GAMES)}")
    self._game = JAX_GAMES[self.game]
    self.action_space = gymnasium.spaces.Discrete(self._game.num_actions)
    self.backend_config = dict(game=self.game, max_episode_steps=self.max_episode_steps,
                               noop_max_unused=self.noop_max)
    self._raw_step = jax.jit(lambda handle, actions: raw_step(
        self._game, self.max_episode_steps, handle, actions))
    self._reset = jax.jit(lambda keys: reset_all(self._game, keys))
    self._handle: JaxEnvHandle | None = None

  def _backend_reset(self, seed):
    if seed is not None or self._handle is None:
      first = self.seed if seed is None else int(seed)
      keys = jnp.stack([jax.random.PRNGKey(first + i) for i in range(self.num_envs)])
    else:  # continue every env's stream
      keys = self._handle.key
    self._handle, obs, lives = self._reset(keys)
    return np.asarray(obs), np.asarray(lives, np.int32)

  def _backend_step(self, actions):
    if self._handle is None:
      raise RuntimeError("call reset() before step()")
    self._handle, raw = self._raw_step(self._handle, jnp.asarray(actions, jnp.int32))
    return RawStep(*(np.asarray(x) for x in raw))

  def _backend_xla(self):
    game, cap = self._game, self.max_episode_steps
    return self._handle, lambda handle, actions: raw_step(game, cap, handle, actions)

  def close(self):
    super().close()
    self._handle = None
