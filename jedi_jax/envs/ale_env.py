"""The Atari100k protocol on ale-py: the fallback backend and the stochastic-Atari variant.

`AleVectorAtari` runs ale-py's C++ vector env (`ale_py.vector_env.AtariVectorEnv`) with the same
options as envpool. It cannot be bit-identical with envpool: its no-op start draws 0..noop_max-1
no-ops (envpool and DIAMOND draw 1..noop_max), and its RNG streams differ. Its `episodic_life`
resets the whole game on a life loss, so, as on envpool, full games are played and the training
flag comes from a drop in `lives` (`protocol.advance`).

`StochasticAleAtari` is the stochastic-Atari variant of arXiv 2605.13013: the frame skip of every
agent step is drawn uniformly from {2, ..., 6}. Neither envpool nor the ale-py vector env can vary
the skip per step, so this backend steps one `ale_py.ALEInterface` per env frame by frame:
reward summed over the skipped frames, max-pool of the last 2 raw frames, INTER_AREA resize to
64x64 (an exact area-average port, equal to OpenCV's on Atari frames), 1..noop_max no-ops at reset
(DIAMOND's draw), no sticky actions, no FIRE reset, the step cap counted in agent steps, and the
same next-step auto-reset dummy as envpool.
"""

from __future__ import annotations

import gymnasium
import jax.numpy as jnp
import numpy as np
import ale_py
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv

from jedi_jax.envs import protocol
from jedi_jax.envs.base import AtariBatchEnv
from jedi_jax.envs.protocol import RawStep
from jedi_jax.types import FRAME_SHAPE

FRAME_SKIP = 4                        # DIAMOND's fixed frame skip
STOCHASTIC_FRAME_SKIPS = (2, 6)       # 2605.13013: frame skip ~ U{2, ..., 6} (inclusive bounds)


def ale_vector_options(max_episode_steps: int, noop_max: int) -> dict:
  """`AtariVectorEnv` options for the Atari100k protocol (DIAMOND src/envs/env.py)."""
  return dict(
      img_height=FRAME_SHAPE[0], img_width=FRAME_SHAPE[1], grayscale=False, stack_num=1,
      frameskip=FRAME_SKIP, maxpool=True,
      repeat_action_probability=0.0, full_action_space=False,
      noop_max=noop_max,                 # ale-py draws 0..noop_max-1 no-ops (envpool: 1..noop_max)
      use_fire_reset=False, episodic_life=False, life_loss_info=False, reward_clipping=False,
      max_num_frames_per_episode=FRAME_SKIP * max_episode_steps,  # counted after the no-ops
      autoreset_mode="NextStep",
  )


class AleVectorAtari(AtariBatchEnv):
  """N Atari100k envs on ale-py's vector env (fixed frame skip 4)."""

  backend = "ale"

  def __init__(self, game: str, num_envs: int, seed: int, *, train: bool,
               max_episode_steps: int = 27_000, noop_max: int = 30):
    super().__init__(game, num_envs, seed, train=train, max_episode_steps=max_episode_steps,
                     noop_max=noop_max)
    self.backend_config = ale_vector_options(self.max_episode_steps, self.noop_max)
    self._vec = AtariVectorEnv(protocol.ale_rom_name(self.game), self.num_envs,
                               **self.backend_config)
    self.action_space = gymnasium.spaces.Discrete(int(self._vec.single_action_space.n))
    self._seeded = False

  def _backend_reset(self, seed):
    if seed is None and not self._seeded:
      seed = self.seed  # the first reset seeds env i with seed + i
    self._seeded = True
    obs, info = self._vec.reset(seed=None if seed is None else int(seed))
    return np.ascontiguousarray(obs[:, 0]), np.asarray(info["lives"], np.int32)

  def _backend_step(self, actions):
    obs, reward, terminated, truncated, info = self._vec.step(actions)
    if not np.array_equal(info["env_id"], np.arange(self.num_envs)):
      raise RuntimeError(f"ale-py returned env ids {info['env_id']} out of order")
    return RawStep(obs=np.ascontiguousarray(obs[:, 0]), reward=np.asarray(reward, np.float32),
                   game_over=np.asarray(terminated, bool), truncated=np.asarray(truncated, bool),
                   lives=np.asarray(info["lives"], np.int32))

  def _backend_xla(self):
    handle, _, xla_step = self._vec.xla()

    def raw_step(handle, actions):
      handle, (obs, reward, terminated, truncated, info) = xla_step(handle, actions)
      return handle, RawStep(obs=obs[:, 0], reward=reward.astype(jnp.float32),
                             game_over=terminated.astype(jnp.bool_),
                             truncated=truncated.astype(jnp.bool_),
                             lives=info["lives"].astype(jnp.int32))

    return jnp.asarray(handle), raw_step

  def close(self):
    super().close()
    if self._vec is not None:
      self._vec.close()
      self._vec = None


class StochasticAleAtari(AtariBatchEnv):
  """N Atari100k envs whose frame skip is drawn from {2, ..., 6} at every agent step."""

  backend = "ale"

  def __init__(self, game: str, num_envs: int, seed: int, *, train: bool,
               max_episode_steps: int = 27_000, noop_max: int = 30):
    super().__init__(game, num_envs, seed, train=train, max_episode_steps=max_episode_steps,
                     noop_max=noop_max)
    self.backend_config = dict(
        frame_skip_low=STOCHASTIC_FRAME_SKIPS[0], frame_skip_high=STOCHASTIC_FRAME_SKIPS[1],
        maxpool=True, img_height=FRAME_SHAPE[0], img_width=FRAME_SHAPE[1], repeat_action_probability=0.0,
        full_action_space=False, noop_max=self.noop_max, use_fire_reset=False,
        max_episode_steps=self.max_episode_steps, reward_clip=False)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    self._rom = roms.get_rom_path(protocol.ale_rom_name(self.game))
    self._build(self.seed)
    self.action_space = gymnasium.spaces.Discrete(len(self._action_set))
    height, width = self._ales[0].getScreenDims()
    self._resize_rows = area_resize_taps(height, FRAME_SHAPE[0])
    self._resize_cols = area_resize_taps(width, FRAME_SHAPE[1])
    # Last two raw frames of every env, for the max-pool: [N, 2, H, W, 3].
    self._frames = np.zeros((self.num_envs, 2, height, width, 3), np.uint8)
    self._slot = np.zeros((self.num_envs,), np.int64)   # which of the two slots to write next
    self._ended = np.zeros((self.num_envs,), bool)    # game over or truncated at the last step
    self._steps = np.zeros((self.num_envs,), np.int64)  # agent steps in the current game
    # [N] frame skip drawn at the last step (0: it was an auto-reset dummy).
    self.last_frame_skips = np.zeros((self.num_envs,), np.int64)

  def _build(self, seed: int) -> None:
    """One ALE per env; env i is seeded with seed + i (emulator and frame-skip/no-op draws)."""
    self._ales, self._rngs = [], []
    for i in range(self.num_envs):
      ale = ale_py.ALEInterface()
      ale.setInt("random_seed", (seed + i) % (2**31))
      ale.setFloat("repeat_action_probability", 0.0)
      ale.setInt("frame_skip", 1)
      ale.loadROM(self._rom)
      self._ales.append(ale)
      self._rngs.append(np.random.default_rng([seed, i]))
    self._action_set = self._ales[0].getMinimalActionSet()

  def _reset_one(self, i: int) -> None:
    num_noops = int(self._rngs[i].integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
    noop_reset(self._ales[i], num_noops, self._frames[i])
    self._ended[i] = False
    self._steps[i] = 0

  def _observe(self) -> np.ndarray:
    return area_resize(self._frames.max(axis=1), self._resize_rows, self._resize_cols)

  def _lives(self) -> np.ndarray:
    return np.array([ale.lives() for ale in self._ales], np.int32)

  def _backend_reset(self, seed):
    if seed is not None:
      self._build(int(seed))
    for i in range(self.num_envs):
      self._reset_one(i)
    return self._observe(), self._lives()

  def _backend_step(self, actions):
    n = self.num_envs
    reward = np.zeros((n,), np.float32)
    game_over = np.zeros((n,), bool)
    truncated = np.zeros((n,), bool)
    for i in range(n):
      if self._ended[i]:  # auto-reset dummy: the action is ignored
        self._reset_one(i)
        self.last_frame_skips[i] = 0
        continue
      ale, action = self._ales[i], self._action_set[int(actions[i])]
      skip = int(self._rngs[i].integers(STOCHASTIC_FRAME_SKIPS[0], STOCHASTIC_FRAME_SKIPS[1] + 1))
      self.last_frame_skips[i] = skip
      total, self._slot[i] = act_frames(ale, action, skip, self._frames[i], int(self._slot[i]))
      self._steps[i] += 1
      reward[i] = total
      game_over[i] = ale.game_over(with_truncation=False)
      truncated[i] = self._steps[i] >= self.max_episode_steps
      self._ended[i] = game_over[i] or truncated[i]
    return RawStep(obs=self._observe(), reward=reward, game_over=game_over, truncated=truncated,
                   lives=self._lives())

  def _xla_hint(self) -> str:
    return " with stochastic_frameskip (a per-env Python frame loop)"


def noop_reset(ale, num_noops: int, frames: np.ndarray) -> None:
  """reset_game, then `num_noops` NOOPs (a game over among them restarts the game); the first screen goes into
  both slots of frames [2, H, W, 3], so the max-pool of the first observation is that screen."""
  ale.reset_game()
  for _ in range(num_noops):
    ale.act(ale_py.Action.NOOP)
    if ale.game_over(with_truncation=False):
      ale.reset_game()
  ale.getScreenRGB(frames[0])
  frames[1] = frames[0]


def act_frames(ale, action, skip: int, frames: np.ndarray, slot: int) -> tuple[float, int]:
  """One agent step of `skip` emulator frames of `action` on `ale`, stopped early at game over. Each screen is
  written into frames[slot] (frames: [2, H, W, 3] uint8) and the slot alternates, so that frames holds the last
  two screens for the max-pool. Returns (summed reward, the slot to write next)."""
  total = 0.0
  for _ in range(skip):
    total += ale.act(action)
    ale.getScreenRGB(frames[slot])
    slot ^= 1
    if ale.game_over(with_truncation=False):
      break
  return total, slot


def area_resize_weights(size_in: int, size_out: int) -> np.ndarray:
  """Row-stochastic [size_out, size_in] matrix of OpenCV INTER_AREA for downscaling.

  Output pixel o averages the input interval [o * s, (o + 1) * s), s = size_in / size_out, each
  input pixel weighted by its overlap with that interval.
  """
  scale = size_in / size_out
  edges = np.arange(size_out + 1) * scale                        # [size_out + 1]
  lo, hi = edges[:-1, None], edges[1:, None]                     # [size_out, 1]
  pixels = np.arange(size_in)[None, :]                           # [1, size_in]
  overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0.0, None)
  return (overlap / scale).astype(np.float32)


def area_resize_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
  """The nonzero part of `area_resize_weights`: K = ceil(s) + 1 input taps per output pixel.

  Returns:
    index [size_out, K] int64 (input pixels) and weight [size_out, K] float32 (0 past the edge).
  """
  dense = area_resize_weights(size_in, size_out)
  scale = size_in / size_out
  start = np.floor(np.arange(size_out) * scale).astype(np.int64)
  index = start[:, None] + np.arange(int(np.ceil(scale)) + 1)[None, :]
  inside = index < size_in
  index = np.minimum(index, size_in - 1)
  weight = np.where(inside, np.take_along_axis(dense, index, axis=1), 0.0).astype(np.float32)
  return index, weight


def area_resize(frames: np.ndarray, rows: tuple[np.ndarray, np.ndarray],
                cols: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
  """INTER_AREA resize of a batch of RGB frames (separable, a few taps per pixel: fast on CPU).

  Args:
    frames: [N, H, W, C] uint8.
    rows: `area_resize_taps(H, h)`.
    cols: `area_resize_taps(W, w)`.

  Returns:
    [N, h, w, C] uint8, rounded to nearest (equal to OpenCV's INTER_AREA on Atari frames).
  """
  (row_index, row_weight), (col_index, col_weight) = rows, cols
  x = frames.astype(np.float32)
  x = np.einsum("nokwc,ok->nowc", x[:, row_index], row_weight)   # [N, h, W, C]
  x = np.einsum("nhokc,ok->nhoc", x[:, :, col_index], col_weight)  # [N, h, w, C]
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class BranchingAle:
  """One ale-py emulator under the Atari100k protocol (the `StochasticAleAtari` step with a fixed skip of 4)
  whose state can be branched: `branches` plays every action from the current state and leaves it as it was
  (experiments/action_effect.py)."""

  def __init__(self, game: str, seed: int):
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    self.ale = ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed % (2**31))
    ale.setFloat("repeat_action_probability", 0.0)
    ale.setInt("frame_skip", 1)
    ale.loadROM(roms.get_rom_path(protocol.ale_rom_name(game)))
    self.actions = ale.getMinimalActionSet()
    height, width = ale.getScreenDims()
    self._taps = (area_resize_taps(height, FRAME_SHAPE[0]), area_resize_taps(width, FRAME_SHAPE[1]))
    self.frames, self.slot = np.zeros((2, height, width, 3), np.uint8), 0
    self.rng = np.random.default_rng(seed)

  def reset(self, noop_max: int = 30):
    """A new game after 1..noop_max no-ops (DIAMOND's draw); returns its first frame."""
    noop_reset(self.ale, int(self.rng.integers(1, noop_max + 1)), self.frames)
    self.slot = 0
    return self.observe()

  def observe(self):
    return area_resize(self.frames.max(axis=0)[None], *self._taps)[0]

  def step(self, a: int):
    """One agent step of action index `a` -> (frame, game over)."""
    _, self.slot = act_frames(self.ale, self.actions[a], FRAME_SKIP, self.frames, self.slot)
    return self.observe(), self.ale.game_over(with_truncation=False)

  def branches(self, horizon: int):
    """Frames [A, horizon, 64, 64, 3] of each action held from the current state; the state is left as it was."""
    saved, frames, slot = self.ale.cloneState(), self.frames.copy(), self.slot
    out = []
    for a in range(len(self.actions)):
      self.ale.restoreState(saved)
      self.frames[:], self.slot = frames, slot
      out.append([self.step(a)[0] for _ in range(horizon)])
    self.ale.restoreState(saved)
    self.frames[:], self.slot = frames, slot
    return np.asarray(out)


def branch_points(game: str, points: int, gap: int, horizon: int, num_cond: int, seed: int) -> dict:
  """Plays `game` with uniformly random actions and branches every `gap` steps (once `num_cond` frames of the
  episode are held). Returns context obs [N, K, 64, 64, 3] (the last is the branch state) and act [N, K] (the
  actions taken on them; the last is replaced by the branch's), and branches [A, N, horizon, 64, 64, 3]."""
  env = BranchingAle(game, seed)
  obs, acts = [env.reset()], []
  ctx_obs, ctx_act, branches = [], [], []
  since = 0
  while len(branches) < points:
    if len(obs) >= num_cond and since >= gap:
      ctx_obs.append(np.stack(obs[-num_cond:]))
      ctx_act.append(np.array(acts[len(acts) - num_cond + 1:] + [0], np.int32))
      branches.append(env.branches(horizon))
      since = 0
    a = int(env.rng.integers(len(env.actions)))
    frame, over = env.step(a)
    acts.append(a)
    obs.append(frame)
    obs, acts, since = obs[-num_cond:], acts[-num_cond:], since + 1
    if over:
      obs, acts = [env.reset()], []
  return {"obs": np.stack(ctx_obs), "act": np.stack(ctx_act), "branches": np.stack(branches, axis=1)}
