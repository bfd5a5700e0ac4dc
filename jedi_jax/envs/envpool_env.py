"""The Atari100k protocol on envpool (the default backend), with its XLA step.

Options follow DIAMOND's Atari setup (src/envs/env.py, atari_preprocessing.py). Departures from envpool's defaults that matter: `use_fire_reset`
(envpool: True) is off, as DIAMOND never presses FIRE at reset; `episodic_life` is off because
envpool's version reports the life loss and then plays 1-30 extra no-op frames on the next step,
whereas DIAMOND's game simply continues (the flag is derived from `lives` in `protocol.advance`).

Quirks handled here (measured on envpool 1.2.5): on a truncated step envpool's `terminated` is also
True, so the real game over is read from `info["terminated"]`; observations are channels-first and
are transposed to NHWC once, here; `noop_max=0` crashes envpool's reset (segfault), so it is
refused; in synchronous mode (batch_size == num_envs) results come back in
env-id order.
"""

from __future__ import annotations

import envpool
import gymnasium
import jax.numpy as jnp
import numpy as np

from jedi_jax.envs import protocol
from jedi_jax.envs.base import AtariBatchEnv
from jedi_jax.envs.protocol import RawStep
from jedi_jax.types import FRAME_SHAPE


def envpool_options(max_episode_steps: int, noop_max: int) -> dict:
  """envpool Atari options for the Atari100k protocol (DIAMOND src/envs/env.py)."""
  return dict(
      img_height=FRAME_SHAPE[0], img_width=FRAME_SHAPE[1], gray_scale=False, stack_num=1, use_inter_area_resize=True,
      frame_skip=4,                      # envpool always max-pools the last 2 raw frames
      repeat_action_probability=0.0,     # no sticky actions
      full_action_space=False,           # minimal action set
      noop_max=noop_max,                 # 1..noop_max no-ops at reset
      use_fire_reset=False,              # envpool's default is True; DIAMOND never FIREs at reset
      episodic_life=False,               # life loss is derived from `lives` (DIAMOND semantics)
      reward_clip=False,                 # raw rewards; training targets take the sign later
      max_episode_steps=max_episode_steps,
  )


class EnvpoolAtari(AtariBatchEnv):
  """N Atari100k envs on one synchronous envpool (`<Game>-v5`)."""

  backend = "envpool"

  def __init__(self, game: str, num_envs: int, seed: int, *, train: bool,
               max_episode_steps: int = 27_000, noop_max: int = 30):
    super().__init__(game, num_envs, seed, train=train, max_episode_steps=max_episode_steps,
                     noop_max=noop_max)
    if self.noop_max < 1:  # envpool 1.2.5 segfaults in reset() with noop_max=0
      raise ValueError(f"the envpool backend needs noop_max >= 1, got {noop_max}")
    self._options = envpool_options(self.max_episode_steps, self.noop_max)
    self._pool = None
    self._make_pool(self.seed)
    self.action_space = gymnasium.spaces.Discrete(int(self._pool.action_space.n))

  def _make_pool(self, seed: int) -> None:
    if self._pool is not None:
      self._pool.close()
    # batch_size == num_envs: synchronous stepping, results in env-id order.
    self._pool = envpool.make_gymnasium(protocol.envpool_task_id(self.game), num_envs=self.num_envs,
                                        batch_size=self.num_envs, seed=seed, **self._options)
    self.backend_config = dict(self._pool.config)

  def _backend_reset(self, seed):
    if seed is not None:  # envpool seeds at construction only: re-create the pool
      self._make_pool(int(seed))
    obs, info = self._pool.reset()
    return _to_nhwc(obs), np.asarray(info["lives"], np.int32)

  def _backend_step(self, actions):
    obs, reward, _, truncated, info = self._pool.step(actions)
    if not np.array_equal(info["env_id"], np.arange(self.num_envs)):
      raise RuntimeError(f"envpool returned env ids {info['env_id']} out of order")
    return RawStep(obs=_to_nhwc(obs), reward=np.asarray(reward, np.float32),
                   game_over=np.asarray(info["terminated"]).astype(bool),
                   truncated=np.asarray(truncated, bool), lives=np.asarray(info["lives"], np.int32))

  def _backend_xla(self):
    # The pool was just reset synchronously (by `functional`); calling envpool's async_reset and
    # then step without a recv scrambles env ids (BUILD_NOTES.md).
    handle, _, _, xla_step = self._pool.xla()

    def raw_step(handle, actions):
      handle, (obs, reward, _, truncated, info) = xla_step(handle, actions)
      return handle, RawStep(obs=jnp.transpose(obs, (0, 2, 3, 1)),
                             reward=reward.astype(jnp.float32),
                             game_over=info["terminated"].astype(jnp.bool_),
                             truncated=truncated.astype(jnp.bool_),
                             lives=info["lives"].astype(jnp.int32))

    return jnp.asarray(handle), raw_step

  def close(self):
    super().close()
    if self._pool is not None:
      self._pool.close()
      self._pool = None


def _to_nhwc(obs: np.ndarray) -> np.ndarray:
  """[N, 3, 64, 64] -> [N, 64, 64, 3] uint8 (contiguous)."""
  return np.ascontiguousarray(np.transpose(obs, (0, 2, 3, 1)))
