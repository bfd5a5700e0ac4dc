"""A batch of N Atari envs with gymnasium vector-env conventions and a functional (jit-able) step.

A backend implements three hooks (`_backend_reset`, `_backend_step`, optionally `_backend_xla`);
this class applies the protocol of `protocol.advance` on top, so every backend and every path (host
Python step, host step through `io_callback`, XLA step) shares one definition of the semantics.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium
import jax
import jax.numpy as jnp
from jax.experimental import io_callback
import numpy as np

from jedi_jax.envs import protocol
from jedi_jax.envs.protocol import EnvState, RawStep, StepOutput
from jedi_jax.types import FRAME_SHAPE

StepFn = Callable[[EnvState, jax.Array], tuple[EnvState, StepOutput]]
RawStepFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, RawStep]]  # (handle, actions)

STEP_PATHS = ("auto", "xla", "host")


def resolve_step_path(path: str, platform: str, xla_platforms: tuple[str, ...] | None) -> str:
  """The env step path a run uses on `platform` (`jax.default_backend()`: "cpu", "gpu" or "tpu").

  "auto" is the XLA step wherever the backend's step can be compiled into the program (`xla_platforms`; None:
  everywhere, a pure-JAX step) and the host step elsewhere. envpool 1.2.5 and ale-py 0.12.1 register their
  XLA step as a CPU and a CUDA custom call only (envpool/python/xla_template.py, ale_py/vector_env.py): on a
  TPU there is no target to compile it for, so "auto" is "host" there and an explicit "xla" is refused.
  """
  if path not in STEP_PATHS:
    raise ValueError(f"unknown functional path {path!r}; valid: {', '.join(map(repr, STEP_PATHS))}")
  xla_ok = xla_platforms is None or platform in xla_platforms
  if path == "auto":
    return "xla" if xla_ok else "host"
  if path == "xla" and not xla_ok:
    raise ValueError(f"env.step_path='xla' cannot run on {platform}: the env's XLA step is a custom call for "
                     f"{' and '.join(xla_platforms)} only; use env.step_path='auto' or 'host'")
  return path


class AtariBatchEnv:
  """N Atari100k envs; subclasses provide the backend.

  Attributes:
    game: Atari100k game name, e.g. "Breakout".
    num_envs: N.
    train: True for the training env (life loss = terminated), False for the test env.
    action_space: `gymnasium.spaces.Discrete` over the game's minimal action set.
    single_observation_space: Box [64, 64, 3] uint8; `observation_space`: its batch [N, 64, 64, 3].
    backend_config: the options passed to the backend (for inspection and tests).
  """

  backend: str = ""
  # Platforms with a target for the backend's XLA step (`resolve_step_path`); None: a pure-JAX step, any platform.
  xla_platforms: tuple[str, ...] | None = ("cpu", "gpu")

  def __init__(self, game: str, num_envs: int, seed: int, *, train: bool, max_episode_steps: int,
               noop_max: int):
    self.game = protocol.check_game(game)
    if num_envs < 1:
      raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if max_episode_steps < 1 or noop_max < 0:
      raise ValueError(f"need max_episode_steps >= 1 and noop_max >= 0, got {max_episode_steps}, "
                       f"{noop_max}")
    self.num_envs = int(num_envs)
    self.seed = int(seed)
    self.train = bool(train)
    self.max_episode_steps = int(max_episode_steps)
    self.noop_max = int(noop_max)
    self.single_observation_space = gymnasium.spaces.Box(0, 255, FRAME_SHAPE, np.uint8)
    self.observation_space = gymnasium.spaces.Box(0, 255, (self.num_envs,) + FRAME_SHAPE, np.uint8)
    self.action_space: gymnasium.spaces.Discrete = None  # set by the backend
    self.backend_config: dict[str, Any] = {}
    self._state: EnvState | None = None  # host-side protocol state of the gymnasium API

  # --- Backend hooks --------------------------------------------------------------------------

  def _backend_reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Resets all envs. Returns obs [N, 64, 64, 3] uint8 and lives [N] int32."""
    raise NotImplementedError

  def _backend_step(self, actions: np.ndarray) -> RawStep:
    """Steps all envs with actions [N] int32; returns numpy arrays of the exact `RawStep` dtypes."""
    raise NotImplementedError

  def _backend_xla(self) -> tuple[jax.Array, RawStepFn]:
    """Returns (handle, raw_step(handle, actions) -> (handle, RawStep)) usable inside `jax.jit`."""
    raise ValueError(f"the {self.backend!r} backend has no XLA step{self._xla_hint()}; "
                     "use env.functional('host')")

  def _xla_hint(self) -> str:
    return ""

  # --- gymnasium vector-env API ---------------------------------------------------------------

  @property
  def num_actions(self) -> int:
    return int(self.action_space.n)

  def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
    """Resets every env (new games with fresh no-op starts).

    Args:
      seed: None continues the random streams; an int re-seeds (env i gets seed + i).
      options: unused (gymnasium signature).

    Returns:
      obs [N, 64, 64, 3] uint8 and info (see `step`), with zero episode statistics.
    """
    del options
    obs, lives = self._backend_reset(seed)
    self._state = protocol.initial_state(None, obs, lives, xp=np)
    zeros = np.zeros((self.num_envs,), bool)
    info = {"lives": self._state.lives, "game_over": zeros, "is_reset": zeros.copy(),
            "episode_return": self._state.episode_return,
            "episode_length": self._state.episode_length}
    return obs, info

  def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Steps every env once (one agent step = frame skip raw frames).

    Args:
      actions: [N] int, indices into the minimal action set.

    Returns:
      obs [N, 64, 64, 3] uint8, reward [N] float32 (raw), terminated [N] bool, truncated [N] bool,
      info with "lives" [N] int32, "game_over" [N] bool, "is_reset" [N] bool,
      "episode_return" [N] float32 and "episode_length" [N] int32 (see `protocol.StepOutput`).
    """
    if self._state is None:
      raise RuntimeError("call reset() before step()")
    raw = self._backend_step(self._check_actions(actions))
    self._state, out = protocol.advance(self._state, raw, train=self.train, xp=np)
    info = {"lives": out.lives, "game_over": out.game_over, "is_reset": out.is_reset,
            "episode_return": out.episode_return, "episode_length": out.episode_length}
    return out.obs, out.reward, out.terminated, out.truncated, info

  def close(self) -> None:
    self._state = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # --- Functional API -------------------------------------------------------------------------

  def functional(self, path: str = "auto", seed: int | None = None, *, num_groups: int = 1
                 ) -> tuple[EnvState, StepFn]:
    """Resets the envs and returns a pure step for use inside `jax.jit` / `lax.scan`.

    The initial observation (of this reset) is `env_state.obs`; after each step `env_state.obs`
    holds the frame to act on next. The step function drives this env's pool: do not mix it with
    `reset()`/`step()` calls on the same object, and do not reuse an `env_state` after a later
    `functional()` or `reset(seed=...)` (envpool re-creates the pool, the old handle dangles).

    Args:
      path: "xla": the backend's XLA custom call (envpool, ale-py without stochastic frame skip; CPU and
        GPU), or the pure-JAX step; "host": the Python backend step through
        `jax.experimental.io_callback(ordered=True)`; "auto": "xla" where it can run on the default
        backend's platform, else "host" (`resolve_step_path`).
      seed: as in `reset`.
      num_groups: K > 1 splits the N envs into K groups of N / K (envs k*N/K .. (k+1)*N/K - 1 in group k),
        for packed seeds: every leaf of `env_state` gets a leading [K] axis and `step_fn` steps one group
        (vmap it, or the program around it, over that axis). Only where the whole env state is a pytree of
        arrays: the pure-JAX backend on the "xla" path.

    Returns:
      env_state (an `EnvState` of jax arrays) and `step_fn(env_state, actions [N] int32) ->
      (env_state, StepOutput)` (with N / K envs per group when `num_groups` = K).
    """
    path = self.step_path(path)
    self._check_groups(path, num_groups)
    if path == "xla" and type(self)._backend_xla is AtariBatchEnv._backend_xla:
      AtariBatchEnv._backend_xla(self)  # raises the backend's "no XLA step" error
    obs, info = self.reset(seed)
    if path == "xla":
      handle, raw_step = self._backend_xla()
    else:
      handle, raw_step = jnp.zeros((0,), jnp.uint8), self._host_raw_step()
    state = protocol.initial_state(handle, jnp.asarray(obs), jnp.asarray(info["lives"]), xp=jnp)
    n = self.num_envs // num_groups
    if num_groups != 1:
      state = jax.tree.map(lambda x: x.reshape((num_groups, n) + x.shape[1:]), state)
    return state, self._step_fn(raw_step, n)

  def group_step(self, num_groups: int) -> StepFn:
    """The functional step of one group of N / K envs, as `functional(num_groups=K)` returns it, without
    resetting anything: for a program that steps the groups apart (data-parallel collection, one group of
    envs per device). Call `functional` first."""
    self._check_groups("xla", num_groups)
    return self._step_fn(self._backend_xla()[1], self.num_envs // num_groups)

  def _check_groups(self, path: str, num_groups: int) -> None:
    if num_groups != 1 and (self.backend != "jax" or path != "xla" or self.num_envs % num_groups):
      raise ValueError(f"num_groups={num_groups} needs the pure-JAX backend on the 'xla' path and a multiple of "
                       f"it as num_envs; got backend {self.backend!r}, path {path!r}, {self.num_envs} envs")

  def _step_fn(self, raw_step: RawStepFn, n: int) -> StepFn:
    """The protocol (`protocol.advance`) around a backend's raw step of `n` envs."""
    train = self.train

    def step_fn(env_state: EnvState, actions: jax.Array) -> tuple[EnvState, StepOutput]:
      actions = jnp.asarray(actions, jnp.int32).reshape((n,))
      handle, raw = raw_step(env_state.handle, actions)
      new_state, out = protocol.advance(env_state, raw, train=train, xp=jnp)
      return new_state.replace(handle=handle), out

    return step_fn

  @classmethod
  def step_path(cls, path: str = "auto", platform: str | None = None) -> str:
    """The path `functional(path)` takes on `platform` (default: `jax.default_backend()`); "auto" is "host"
    for a backend without an XLA step. Raises one ValueError where `path` cannot run."""
    if path == "auto" and cls._backend_xla is AtariBatchEnv._backend_xla:
      return "host"
    return resolve_step_path(path, platform or jax.default_backend(), cls.xla_platforms)

  def _host_raw_step(self) -> RawStepFn:
    n = self.num_envs
    shapes = RawStep(obs=jax.ShapeDtypeStruct((n,) + FRAME_SHAPE, jnp.uint8),
                     reward=jax.ShapeDtypeStruct((n,), jnp.float32),
                     game_over=jax.ShapeDtypeStruct((n,), jnp.bool_),
                     truncated=jax.ShapeDtypeStruct((n,), jnp.bool_),
                     lives=jax.ShapeDtypeStruct((n,), jnp.int32))

    def host_step(actions):
      return self._backend_step(np.asarray(actions, np.int32))

    def raw_step(handle, actions):
      # ordered=True: steps run once each, in program order, also inside lax.scan.
      return handle, io_callback(host_step, shapes, actions, ordered=True)

    return raw_step

  def _check_actions(self, actions) -> np.ndarray:
    actions = np.asarray(actions)
    if actions.shape != (self.num_envs,):
      raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
    if actions.size and (actions.min() < 0 or actions.max() >= self.num_actions):
      raise ValueError(f"actions must lie in [0, {self.num_actions}), got {actions}")
    return actions.astype(np.int32)
