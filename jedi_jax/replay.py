"""Replay: a ring of transitions per train env, and DIAMOND's episode-weighted segment sampler.

Layout. Rows are written synchronously for the E train envs, one row per env step, into a ring of C rows
per env. `t` counts the rows written per env so far; absolute step `a` of env `e` lives at
`[e, a % C]` and is present while `a >= t - C`. A row is (frame seen before the action, action, raw
reward, end, trunc). Rows of the env's auto-reset dummy transitions (`valid=False`) are written too -
their frame is the last frame of the game that just ended, i.e. the "next frame" of that game's last
step - but belong to no episode (`episode_id = -1`) and are never sampled as steps.

Episodes. A *training* episode is a maximal run of valid rows of one env ended by a row with
`end | trunc` (a life loss ends one too, as in DIAMOND's training env) or by an invalid row. Episodes are numbered
by creation, i.e. by their first row (envs of one step in index order; DIAMOND numbers them when they
first reach its dataset, the same order with one env), and kept in a table of M slots (slot =
creation index % M: env, first step, rows so far).

Sampleable steps (the choices made for the ring). Step `a` of env `e` is sampleable iff it is a
training step, row `a` is still present (`a >= t - C`) and its next frame, row `a + 1`, has been
written (`a + 1 < t`). So an episode contributes the steps `[max(start, t - C), min(start + len, t - 1))`:
a partly overwritten episode keeps only its still-present steps and is sampled as if it began at its
oldest present step; a running episode (DIAMOND adds incomplete episodes too) is sampleable up to its
second-newest row; an episode is *live* while it has a sampleable step and is still in the table.
Fully overwritten (or table-evicted) episodes are never drawn.

Sampling (DIAMOND `data/batch_sampler.py`, applied to the live episodes in creation order):
  1. Episode. With n >= k = len(weights) live episodes, they are split into k chronological groups of
     n // k episodes, the remainder going to the last (newest) group; group g is drawn with probability
     weights[g], then an episode uniformly within it. With n < k, an episode is drawn with probability
     proportional to its sampleable length (uniform over steps). A Fenwick tree over the live flags of
     the table maps a chronological rank to a slot, so a draw costs O(log M), not O(M).
  2. Step: `i ~ U{0, .., len - 1}` within the episode's sampleable range.
  3. Window of T steps: `pad_after_end=False` (world-model segments): `stop = min(len, i + 1 + U{0..T-1})`,
     `start = stop - T` (padding only before the episode start); `pad_after_end=True` (reward/end
     segments): `start = i - U{0..T-1}`, `stop = start + T`.
  Steps outside `[0, len)` are padding: zero obs/act/rew/end/trunc and `mask` False; so are frames that
  belong to no real step, except the frame after the last real step. Segments never mix two episodes:
  the one row read beyond an episode is the frame after its last step, the env's next row (the next
  episode's first frame after a life loss, the dummy row's final frame after a game over/truncation).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import chex
import flax
import jax
import jax.numpy as jnp

from jedi_jax.types import FRAME_SHAPE

class Segment(NamedTuple):
  """B segments of T consecutive steps, each from one episode (`sample_segments`; rules in the module docstring).

  Steps outside the episode are padding: zeros, with `mask` False. A pytree, so it passes through jit, vmap
  and scan like its arrays.
  """
  obs: jax.Array    # [B, T + 1, H, W, 3] uint8; obs[:, i] is the frame before act[:, i], obs[:, i + 1] the
                    #   frame after it; a frame that is not real (`frame_mask`) is zeros
  act: jax.Array    # [B, T] int32, the action taken at each step
  rew: jax.Array    # [B, T] float32, raw reward of the step
  end: jax.Array    # [B, T] bool, training end at the step (life loss or game over)
  trunc: jax.Array  # [B, T] bool, the env's step cap was reached at the step
  mask: jax.Array   # [B, T] bool, True for real steps of the sampled episode, False for padding

  @property
  def frame_mask(self) -> jax.Array:
    """[B, T + 1] bool: frame k is real when step k or step k - 1 is (a step's frame, or the frame after
    the last real step)."""
    no = jnp.zeros_like(self.mask[..., :1])
    return jnp.concatenate([self.mask, no], -1) | jnp.concatenate([no, self.mask], -1)


class ReplayState(flax.struct.PyTreeNode):
  """Per-env ring of rows plus the episode table. E envs, C rows per env, M episode slots."""
  obs: jax.Array                  # [E, C, H, W, 3] uint8, frame seen before `act`
  act: jax.Array                  # [E, C] int32
  rew: jax.Array                  # [E, C] float32, raw reward
  end: jax.Array                  # [E, C] bool, training end (life loss or game over)
  trunc: jax.Array                # [E, C] bool
  episode_id: jax.Array           # [E, C] int32, creation index of the row's episode; -1: no training step
  t: jax.Array                    # [] int32, rows written per env so far (next row goes to t % C)
  ep_env: jax.Array               # [M] int32, env of the episode in each slot
  ep_start: jax.Array             # [M] int32, absolute step of its first row
  ep_length: jax.Array            # [M] int32, its training steps written so far
  num_created: jax.Array          # [] int32, episodes created so far (episode k lives in slot k % M)
  num_created_before_last_add: jax.Array  # [] int32, episodes created before the latest `add`
  open_episode: jax.Array         # [E] int32, creation index of each env's running episode, -1 if none
  live: jax.Array                 # [M] bool, slot holds an episode with a sampleable step
  live_tree: jax.Array            # [M + 1] int32, Fenwick tree (1-based) over `live`
  num_live: jax.Array             # [] int32, live episodes
  num_rows_held: jax.Array        # [] int32, training steps present in the ring
  rew_counts: jax.Array           # [3] int32, training steps added with sign(reward) = -1, 0, +1
  end_counts: jax.Array           # [2] int32, training steps added with end = False, True

  @property
  def num_envs(self) -> int:
    return self.act.shape[0]

  @property
  def capacity(self) -> int:
    return self.act.shape[1]

  @property
  def max_episodes(self) -> int:
    return self.ep_env.shape[0]


def init_replay(num_envs: int, capacity: int, obs_shape: Sequence[int] = FRAME_SHAPE,
                max_episodes: int | None = None) -> ReplayState:
  """An empty replay.

  Args:
    num_envs: E, the number of train envs (rows are added for all of them at once).
    capacity: C, rows kept per env (>= 2).
    obs_shape: one frame, [H, W, 3].
    max_episodes: M, slots of the episode table (default C * E, >= E). An episode that M newer
      episodes have pushed out of the table is no longer drawn, even if rows of it remain.

  Returns:
    The `ReplayState`.
  """
  e, c = int(num_envs), int(capacity)
  m = c * e if max_episodes is None else int(max_episodes)
  if e < 1 or c < 2 or m < e:
    raise ValueError(f"need num_envs >= 1, capacity >= 2, max_episodes >= num_envs; got {e}, {c}, {m}")
  i32 = jnp.int32
  return ReplayState(
      obs=jnp.zeros((e, c, *obs_shape), jnp.uint8),
      act=jnp.zeros((e, c), i32),
      rew=jnp.zeros((e, c), jnp.float32),
      end=jnp.zeros((e, c), jnp.bool_),
      trunc=jnp.zeros((e, c), jnp.bool_),
      episode_id=jnp.full((e, c), -1, i32),
      t=jnp.zeros((), i32),
      ep_env=jnp.zeros((m,), i32),
      ep_start=jnp.zeros((m,), i32),
      ep_length=jnp.zeros((m,), i32),
      num_created=jnp.zeros((), i32),
      num_created_before_last_add=jnp.zeros((), i32),
      open_episode=jnp.full((e,), -1, i32),
      live=jnp.zeros((m,), jnp.bool_),
      live_tree=jnp.zeros((m + 1,), i32),
      num_live=jnp.zeros((), i32),
      num_rows_held=jnp.zeros((), i32),
      rew_counts=jnp.zeros((3,), i32),
      end_counts=jnp.zeros((2,), i32),
  )


def num_steps(state: ReplayState) -> jax.Array:
  """Training steps (valid rows) present in the ring, running episodes included. [] int32."""
  return state.num_rows_held


def num_episodes(state: ReplayState) -> jax.Array:
  """Live episodes: those that `sample_segments` can draw. [] int32."""
  return state.num_live


# --- Fenwick tree over the live flags of the episode table ---------------------------------------


def _tree_add(tree: jax.Array, slots: jax.Array, deltas: jax.Array) -> jax.Array:
  """Adds deltas [U] at 0-based slots [U] of a Fenwick tree [M + 1]."""
  m = tree.shape[0] - 1
  i = slots + 1
  for _ in range(m.bit_length() + 1):
    tree = tree.at[i].add(deltas, mode="drop")  # i = m + 1: finished, dropped
    i = jnp.where(i > m, m + 1, i + (i & -i))
  return tree


def _tree_prefix(tree: jax.Array, n: jax.Array) -> jax.Array:
  """Number of live slots among slots [0, n)."""
  m = tree.shape[0] - 1
  total = jnp.zeros_like(n)
  for _ in range(m.bit_length() + 1):
    total = total + tree[n]  # tree[0] == 0
    n = n - (n & -n)
  return total


def _tree_find(tree: jax.Array, rank: jax.Array) -> jax.Array:
  """0-based slot of the live slot of 0-based `rank` in slot order (rank < number of live slots)."""
  m = tree.shape[0] - 1
  pos = jnp.zeros_like(rank)
  for j in reversed(range(m.bit_length())):
    nxt = pos + (1 << j)
    val = tree[jnp.minimum(nxt, m)]
    take = (nxt <= m) & (val <= rank)
    pos = jnp.where(take, nxt, pos)
    rank = jnp.where(take, rank - val, rank)
  return pos


def _rank_to_slot(state: ReplayState, rank: jax.Array) -> jax.Array:
  """Slot of the live episode of chronological `rank` (0 = oldest live episode). Same shape as rank."""
  # Creation order is slot order starting at the oldest slot, num_created % M (when the table has
  # wrapped; before that the slots >= num_created are empty, so the same rotation is the identity).
  head = state.num_created % state.max_episodes
  before_head = _tree_prefix(state.live_tree, head)
  r = (rank + before_head) % jnp.maximum(state.num_live, 1)
  return _tree_find(state.live_tree, r)


def _sampleable_range(state: ReplayState, slot: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Absolute steps [lo, hi) of the episode in `slot` that are sampleable (module docstring)."""
  start, length = state.ep_start[slot], state.ep_length[slot]
  lo = jnp.maximum(start, state.t - state.capacity)
  hi = jnp.maximum(jnp.minimum(start + length, state.t - 1), lo)
  return lo, hi


# --- Adding rows ---------------------------------------------------------------------------------


def add(state: ReplayState, obs: jax.Array, act: jax.Array, rew: jax.Array, end: jax.Array,
        trunc: jax.Array, valid: jax.Array) -> ReplayState:
  """Writes one synchronous env step of all E envs. Pure; jit with `donate_argnums=0` outside a scan.

  Args:
    state: the replay.
    obs: [E, H, W, 3] uint8, the frame each env showed BEFORE `act`.
    act: [E] int, the action taken.
    rew: [E] float, raw reward of the step.
    end: [E] bool, training end (life loss or game over) at this step.
    trunc: [E] bool, the step cap was reached at this step.
    valid: [E] bool, False for the auto-reset dummy transition (written, never a training step).

  Returns:
    The new state.
  """
  e, c, m = state.num_envs, state.capacity, state.max_episodes
  chex.assert_shape(obs, (e, *state.obs.shape[2:]))
  chex.assert_shape([act, rew, end, trunc, valid], (e,))
  act = act.astype(jnp.int32)
  rew = rew.astype(jnp.float32)
  end, trunc, valid = end.astype(bool), trunc.astype(bool), valid.astype(bool)
  i32 = jnp.int32
  envs = jnp.arange(e, dtype=i32)
  t = state.t
  pos = t % c
  overwritten_id = state.episode_id[:, pos]  # [E], -1: the overwritten row was no training step
  num_created_old, num_created_before = state.num_created, state.num_created_before_last_add

  # Episode bookkeeping: a valid row opens an episode where none is running (envs in index order).
  opens = valid & (state.open_episode < 0)
  new_id = state.num_created + jnp.cumsum(opens, dtype=i32) - opens
  row_id = jnp.where(valid, jnp.where(opens, new_id, state.open_episode), -1)
  num_created = state.num_created + opens.sum(dtype=i32)
  new_slot = jnp.where(opens, new_id % m, m)  # m: dropped
  ep_env = state.ep_env.at[new_slot].set(envs, mode="drop")
  ep_start = state.ep_start.at[new_slot].set(t, mode="drop")
  ep_length = state.ep_length.at[new_slot].set(0, mode="drop")
  in_table = valid & (row_id >= num_created - m)  # a running episode may have been pushed out
  ep_length = ep_length.at[jnp.where(in_table, row_id % m, m)].add(1, mode="drop")
  # An end/trunc row closes its episode after itself; an invalid row closes any running one.
  open_episode = jnp.where(valid & ~(end | trunc), row_id, -1)

  state = state.replace(
      obs=jax.lax.dynamic_update_index_in_dim(state.obs, obs.astype(jnp.uint8), pos, axis=1),
      act=state.act.at[:, pos].set(act),
      rew=state.rew.at[:, pos].set(rew),
      end=state.end.at[:, pos].set(end),
      trunc=state.trunc.at[:, pos].set(trunc),
      episode_id=state.episode_id.at[:, pos].set(row_id),
      t=t + 1,
      ep_env=ep_env,
      ep_start=ep_start,
      ep_length=ep_length,
      num_created=num_created,
      num_created_before_last_add=state.num_created,
      open_episode=open_episode,
      num_rows_held=state.num_rows_held + valid.sum(dtype=i32) - (overwritten_id >= 0).sum(dtype=i32),
      rew_counts=state.rew_counts.at[jnp.sign(rew).astype(i32) + 1].add(valid.astype(i32)),
      end_counts=state.end_counts.at[end.astype(i32)].add(valid.astype(i32)),
  )

  # Live flags can only change for: episodes that lost a row to the ring (they die with their last
  # row), episodes created by the previous add (their first step now has its next frame), and slots
  # just taken by new episodes (their previous occupant leaves the table). Recompute those slots.
  born_id = num_created_before + envs
  born_id = jnp.where(born_id < num_created_old, born_id, -1)
  touched_id = jnp.concatenate([overwritten_id, born_id])
  slots = jnp.concatenate([jnp.where(touched_id >= 0, touched_id % m, m), new_slot])  # [3E]
  ok = slots < m
  first = ~jnp.any(jnp.tril(slots[:, None] == slots[None, :], k=-1), axis=1)  # count a slot once
  slots_c = jnp.where(ok, slots, 0)
  lo, hi = _sampleable_range(state, slots_c)
  new_live = hi > lo
  delta = jnp.where(ok & first, new_live.astype(i32) - state.live[slots_c].astype(i32), 0)
  return state.replace(
      live=state.live.at[slots].set(new_live, mode="drop"),
      live_tree=_tree_add(state.live_tree, slots_c, delta),
      num_live=state.num_live + delta.sum(dtype=i32),
  )


# --- Sampling segments ---------------------------------------------------------------------------


def _check_weights(weights: Sequence[float]) -> None:
  if not weights or any(not 0 <= w <= 1 for w in weights) or not math.isclose(sum(weights), 1.0):
    raise ValueError(f"sample weights must lie in [0, 1] and sum to 1, got {weights}")


def _draw_episode_slots(state: ReplayState, key: jax.Array, batch_size: int,
                        weights: tuple[float, ...]) -> jax.Array:
  """Slots [B] of live episodes drawn by DIAMOND's rule (module docstring, step 1)."""
  k = len(weights)
  n = state.num_live
  key_group, key_member, key_few = jax.random.split(key, 3)
  # n >= k: a chronological group by its weight, then an episode uniformly within it.
  group = jax.random.categorical(key_group, jnp.log(jnp.asarray(weights, jnp.float32)),
                                 shape=(batch_size,)).astype(jnp.int32)
  base = n // k
  size = base + jnp.where(group == k - 1, n % k, 0)
  rank = group * base + jax.random.randint(key_member, (batch_size,), 0, jnp.maximum(size, 1))
  if k > 1:
    # n < k: proportional to the sampleable length, i.e. uniform over steps.
    few_rank = jnp.arange(k - 1, dtype=jnp.int32)
    lo, hi = _sampleable_range(state, _rank_to_slot(state, few_rank))
    few_len = jnp.where(few_rank < n, hi - lo, 0).astype(jnp.float32)
    pick = jax.random.categorical(key_few, jnp.log(few_len), shape=(batch_size,)).astype(jnp.int32)
    rank = jnp.where(n >= k, rank, pick)
  return _rank_to_slot(state, rank)


def _rewarded_steps(state: ReplayState, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """n draws, uniform over the sampleable steps with a nonzero reward in the whole ring.

  Returns (slot [n], step [n] within the episode's sampleable range, found [n]: False where the ring holds no
  such step, and slot / step are then meaningless).
  """
  c, m = state.capacity, state.max_episodes
  rows = jnp.arange(c)
  absolute = state.t - 1 - jnp.mod(state.t - 1 - rows, c)  # [C] the step each row holds (< 0: not written)
  slot = jnp.mod(state.episode_id, m)                          # [E, C]
  in_table = (state.episode_id >= 0) & (state.episode_id >= state.num_created - m) & state.live[slot]
  sampleable = in_table & (absolute[None] >= 0) & (absolute[None] + 1 < state.t)
  counts = jnp.cumsum((sampleable & (state.rew != 0)).reshape(-1).astype(jnp.int32))
  u = jax.random.randint(key, (n,), 0, jnp.maximum(counts[-1], 1))
  flat = jnp.minimum(jnp.searchsorted(counts, u, side="right"), counts.shape[0] - 1)
  env, row = flat // c, flat % c
  slot = slot[env, row]
  lo, _ = _sampleable_range(state, slot)
  return slot, absolute[row] - lo, jnp.broadcast_to(counts[-1] > 0, (n,))


@functools.partial(jax.jit, static_argnames=("batch_size", "length", "weights", "pad_after_end", "rewarded",
                                             "rewarded_last"))
def sample_segments(state: ReplayState, key: jax.Array, batch_size: int, length: int, *,
                    weights: tuple[float, ...] = (0.1, 0.1, 0.1, 0.7), pad_after_end: bool, rewarded: int = 0,
                    rewarded_last: int = 1) -> Segment:
  """B segments of T steps, each from one episode, by DIAMOND's BatchSampler rules.

  Args:
    state: the replay; it must hold a live episode (`num_episodes(state) >= 1`), else every step
      comes back as padding.
    key: PRNG key.
    batch_size: B.
    length: T, steps per segment.
    weights: probabilities of the chronological episode groups, oldest first (config
      `replay.sample_weights`); a hashable tuple, it is a static argument.
    pad_after_end: False for world-model segments (padding only before the episode's start), True for
      reward/end segments (padding before the start and after the end).
    rewarded: the first `rewarded` of the B segments hold a step with a nonzero reward among their last
      `rewarded_last` steps (`pad_after_end=False` only): the step is drawn uniformly among the ring's
      sampleable rewarded steps, whatever its episode's age, and the window is placed as in rule 3 with an
      offset drawn from U{0..rewarded_last - 1}. Where the ring holds no rewarded step, DIAMOND's draw stands.
      The other segments, and all of them with `rewarded=0` (the default), are DIAMOND's, draw for draw.
      Not DIAMOND's: `wm.rewarded_fraction` (jedi_jax/config.py) says why.

  Returns:
    A `Segment`: obs [B, T + 1, H, W, 3] uint8, act [B, T] int32, rew [B, T] float32, end/trunc/mask
    [B, T] bool.
  """
  weights = tuple(float(w) for w in weights)
  _check_weights(weights)
  b, t_len, c = batch_size, length, state.capacity
  key_episode, key_step, key_offset = jax.random.split(key, 3)
  slot = _draw_episode_slots(state, key_episode, b, weights)  # [B]
  env = state.ep_env[slot]
  lo, hi = _sampleable_range(state, slot)
  ep_len = hi - lo
  step = jax.random.randint(key_step, (b,), 0, jnp.maximum(ep_len, 1))
  offset = jax.random.randint(key_offset, (b,), 0, t_len)
  if rewarded:
    if pad_after_end or not 1 <= rewarded <= b or not 1 <= rewarded_last <= t_len:
      raise ValueError(f"rewarded segments need pad_after_end=False, 1 <= rewarded <= batch_size and 1 <= "
                       f"rewarded_last <= length, got {rewarded}, {rewarded_last} ({b}, {t_len}, {pad_after_end})")
    key_slot, key_off = jax.random.split(jax.random.fold_in(key, 1))
    r_slot, r_step, found = _rewarded_steps(state, key_slot, rewarded)
    r_offset = jax.random.randint(key_off, (rewarded,), 0, rewarded_last)
    mix = lambda r, x: x.at[:rewarded].set(jnp.where(found, r, x[:rewarded]))
    slot, step, offset = mix(r_slot, slot), mix(r_step, step), mix(r_offset, offset)
    env = state.ep_env[slot]
    lo, hi = _sampleable_range(state, slot)
    ep_len = hi - lo
  if pad_after_end:
    start = step - offset
  else:
    start = jnp.minimum(ep_len, step + 1 + offset) - t_len
  rel = start[:, None] + jnp.arange(t_len + 1)[None, :]  # [B, T + 1], step index within the episode
  mask = (rel[:, :-1] >= 0) & (rel[:, :-1] < ep_len[:, None]) & (state.num_live > 0)  # [B, T]
  row = jnp.mod(lo[:, None] + rel, c)  # padding indices are gathered, then zeroed
  env = env[:, None]
  steps = lambda x: jnp.where(mask, x[env, row[:, :-1]], jnp.zeros((), x.dtype))
  seg = Segment(obs=state.obs[env, row], act=steps(state.act), rew=steps(state.rew), end=steps(state.end),
                trunc=steps(state.trunc), mask=mask)
  frame_mask = seg.frame_mask
  return seg._replace(obs=jnp.where(frame_mask.reshape(*frame_mask.shape, *(1,) * (seg.obs.ndim - 2)), seg.obs, 0))
