"""Tests for jedi_jax/replay.py against a plain-Python model of the ring, the episodes and DIAMOND's rules."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import replay

OBS = (1, 1, 3)  # small frames keep the tests fast; one test uses the real 64x64x3
WEIGHTS = (0.1, 0.1, 0.1, 0.7)


# --- A plain-Python model of what the replay should hold ----------------------------------------


class ListReplay:
  """Rows as lists per env, episodes as a list in creation order (no ring: everything is kept)."""

  def __init__(self, num_envs, capacity, max_episodes):
    self.e, self.c, self.m = num_envs, capacity, max_episodes
    self.rows = [[] for _ in range(num_envs)]  # rows[e][a] = dict for absolute step a
    self.episodes = []  # dicts: env, start, length
    self.open = [None] * num_envs
    self.rew_counts = [0, 0, 0]
    self.end_counts = [0, 0]

  @property
  def t(self):
    return len(self.rows[0])

  def add(self, obs, act, rew, end, trunc, valid):
    t = self.t
    for e in range(self.e):
      row_id = -1
      if valid[e]:
        if self.open[e] is None:
          self.open[e] = len(self.episodes)
          self.episodes.append({"env": e, "start": t, "length": 0})
        row_id = self.open[e]
        self.episodes[row_id]["length"] += 1
        if end[e] or trunc[e]:
          self.open[e] = None
        self.rew_counts[int(np.sign(rew[e])) + 1] += 1
        self.end_counts[int(end[e])] += 1
      else:
        self.open[e] = None
      self.rows[e].append(dict(obs=obs[e], act=act[e], rew=rew[e], end=end[e], trunc=trunc[e], id=row_id))

  def sampleable(self, k):
    """Absolute steps [lo, hi) of episode k that may be sampled (empty: not live)."""
    ep, t = self.episodes[k], self.t
    if k < len(self.episodes) - self.m:
      return 0, 0
    lo = max(ep["start"], t - self.c)
    hi = min(ep["start"] + ep["length"], t - 1)
    return lo, max(hi, lo)

  def live(self):
    return [k for k in range(len(self.episodes)) if self.length(k) > 0]

  def length(self, k):
    lo, hi = self.sampleable(k)
    return hi - lo


def encode(e, a):
  """A frame that names its env and absolute step; never all-zero."""
  return np.array([e + 1, a // 250 + 1, a % 250 + 1], np.uint8).reshape(OBS)


def decode(frame):
  f = np.asarray(frame).reshape(-1)[:3].astype(int)
  return f[0] - 1, (f[1] - 1) * 250 + f[2] - 1


def random_stream(rng, num_envs, steps, *, protocol):
  """Env steps: `protocol=True` follows the Atari100k protocol (life losses; a dummy row after a game
  over or a truncation); False draws every flag independently (odd cases: invalid rows mid-episode)."""
  out = {k: [] for k in ("obs", "act", "rew", "end", "trunc", "valid")}
  pending_dummy = np.zeros(num_envs, bool)
  for a in range(steps):
    obs = np.stack([encode(e, a) for e in range(num_envs)])
    act = rng.integers(0, 18, num_envs)
    rew = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0, 3.0], num_envs)
    if protocol:
      valid = ~pending_dummy
      u = rng.random(num_envs)
      over, cut, life = u < 0.04, (u >= 0.04) & (u < 0.07), (u >= 0.07) & (u < 0.2)
      end = valid & (over | life)
      trunc = valid & cut
      rew = np.where(valid, rew, 0.0)
      pending_dummy = valid & (over | cut)
    else:
      valid = rng.random(num_envs) < 0.8
      end = rng.random(num_envs) < 0.2
      trunc = rng.random(num_envs) < 0.05
    for k, v in zip(out, (obs, act, rew, end, trunc, valid)):
      out[k].append(v)
  return {k: np.stack(v) for k, v in out.items()}


@jax.jit
def add_all(state, stream):
  """Adds a stream of [S, E, ...] steps with one scan."""
  def body(s, x):
    return replay.add(s, x["obs"], x["act"], x["rew"], x["end"], x["trunc"], x["valid"]), None
  return jax.lax.scan(body, state, stream)[0]


def build(num_envs, capacity, stream, max_episodes=None):
  state = replay.init_replay(num_envs, capacity, OBS, max_episodes)
  ref = ListReplay(num_envs, capacity, state.max_episodes)
  for i in range(len(stream["act"])):
    ref.add(*(stream[k][i] for k in ("obs", "act", "rew", "end", "trunc", "valid")))
  return add_all(state, jax.tree.map(jnp.asarray, stream)), ref


def live_slots(state):
  ranks = jnp.arange(int(replay.num_episodes(state)))
  return np.asarray(jax.jit(replay._rank_to_slot)(state, ranks))


# --- Contents ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol,max_episodes", [(False, None), (False, 5), (True, None)])
def test_contents_after_wraparound(protocol, max_episodes):
  e, c, steps = 2, 11, 60
  stream = random_stream(np.random.default_rng(1), e, steps, protocol=protocol)
  state, ref = build(e, c, stream, max_episodes)
  t = ref.t
  assert int(state.t) == t
  for env in range(e):
    for p in range(c):
      a = max(a for a in range(t) if a % c == p)
      row = ref.rows[env][a]
      np.testing.assert_array_equal(state.obs[env, p], row["obs"])
      assert int(state.act[env, p]) == row["act"]
      assert float(state.rew[env, p]) == row["rew"]
      assert bool(state.end[env, p]) == row["end"]
      assert bool(state.trunc[env, p]) == row["trunc"]
      assert int(state.episode_id[env, p]) == row["id"]
  m = state.max_episodes
  n = len(ref.episodes)
  assert int(state.num_created) == n
  for k in range(max(0, n - m), n):
    ep = ref.episodes[k]
    assert (int(state.ep_env[k % m]), int(state.ep_start[k % m]), int(state.ep_length[k % m])) == (
        ep["env"], ep["start"], ep["length"])
  assert [-1 if o is None else o for o in ref.open] == state.open_episode.tolist()
  held = sum(ref.rows[env][a]["id"] >= 0 for env in range(e) for a in range(t - c, t))
  assert int(replay.num_steps(state)) == held
  assert state.rew_counts.tolist() == ref.rew_counts
  assert state.end_counts.tolist() == ref.end_counts
  # Live episodes, in creation order, through the rank -> slot map the sampler uses.
  live = ref.live()
  assert len(live) >= 3 and live[0] > 0  # some episodes are gone
  assert int(replay.num_episodes(state)) == len(live)
  assert live_slots(state).tolist() == [k % m for k in live]
  assert np.flatnonzero(np.asarray(state.live)).tolist() == sorted(k % m for k in live)
  for k in live:  # partly overwritten episodes keep only their present steps
    lo, hi = ref.sampleable(k)
    assert lo >= t - c and hi <= t - 1


def test_episode_becomes_live_once_its_next_frame_is_stored():
  state = replay.init_replay(1, 4, OBS)
  step = jax.jit(replay.add)
  one = lambda x, dtype: jnp.asarray([x], dtype)
  args = lambda a, end, valid: (jnp.asarray(encode(0, a))[None], one(a, jnp.int32), one(1.0, jnp.float32),
                                one(end, bool), one(False, bool), one(valid, bool))
  state = step(state, *args(0, False, True))
  assert int(replay.num_episodes(state)) == 0 and int(replay.num_steps(state)) == 1
  seg = replay.sample_segments(state, jax.random.key(0), 16, 3, pad_after_end=True)
  assert not seg.mask.any() and not seg.obs.any()  # nothing sampleable: all padding
  state = step(state, *args(1, True, True))  # game over: the next row is the dummy
  assert int(replay.num_episodes(state)) == 1
  state = step(state, *args(2, False, False))
  assert int(replay.num_episodes(state)) == 1 and int(replay.num_steps(state)) == 2
  seg = replay.sample_segments(state, jax.random.key(1), 16, 3, pad_after_end=True)
  seg = jax.tree.map(np.asarray, seg)
  seen = set()
  for b in range(16):  # only steps 0 and 1; the frame after step 1 is the dummy row's (the final frame)
    idx = np.flatnonzero(seg.mask[b])
    frames = [decode(seg.obs[b, i])[1] for i in range(idx[0], idx[-1] + 2)]
    assert frames == list(range(frames[0], frames[0] + len(idx) + 1)) and frames[-1] <= 2
    seen.update(frames[:-1])
  assert seen == {0, 1}
  for _ in range(4):  # the ring overwrites rows 0..3: the episode dies with its last row
    state = step(state, *args(3, False, True))
  assert int(replay.num_episodes(state)) == 1  # the new episode; the old one is gone
  assert int(state.ep_start[int(live_slots(state)[0])]) == 3


# --- Segments ------------------------------------------------------------------------------------


def check_segments(seg, ref, length, pad_after_end):
  """Every segment: one episode, consecutive present steps, exact rows, the next-frame rule, padding."""
  seg = jax.tree.map(np.asarray, seg)
  live = set(ref.live())
  for b in range(seg.mask.shape[0]):
    mask = seg.mask[b]
    idx = np.flatnonzero(mask)
    assert len(idx) > 0
    i0, i1 = idx[0], idx[-1]
    assert (idx == np.arange(i0, i1 + 1)).all()
    envs, steps = zip(*(decode(seg.obs[b, i]) for i in idx))
    env = envs[0]
    assert set(envs) == {env} and list(steps) == list(range(steps[0], steps[0] + len(idx)))
    rows = [ref.rows[env][a] for a in steps]
    ids = {r["id"] for r in rows}
    assert len(ids) == 1 and ids <= live  # one live episode, never a dummy row
    lo, hi = ref.sampleable(ids.pop())
    assert lo <= steps[0] and steps[-1] < hi
    for key in ("act", "rew", "end", "trunc"):
      np.testing.assert_array_equal(getattr(seg, key)[b, idx], [r[key] for r in rows])
      assert not getattr(seg, key)[b, ~mask].any()
    assert decode(seg.obs[b, i1 + 1]) == (env, steps[-1] + 1)  # the frame after the last step
    real_frames = np.zeros(length + 1, bool)
    real_frames[i0:i1 + 2] = True
    assert not seg.obs[b, ~real_frames].any()
    if i0 > 0:
      assert steps[0] == lo  # padding before: the segment starts at the episode's first step
    if i1 < length - 1:
      assert pad_after_end and steps[-1] == hi - 1  # padding after: only reward/end segments
  return seg


@pytest.mark.parametrize("pad_after_end", [False, True])
def test_segments_stay_in_one_episode(pad_after_end):
  e, c, length = 2, 60, 6
  stream = random_stream(np.random.default_rng(2), e, 150, protocol=True)
  state, ref = build(e, c, stream)
  # Dummy rows and life losses (an end followed by a valid row) both occur; the ring has wrapped.
  assert not stream["valid"].all() and (stream["end"] & np.roll(stream["valid"], -1, 0)).any()
  assert int(replay.num_episodes(state)) > 8
  seg = replay.sample_segments(state, jax.random.key(3), 512, length, pad_after_end=pad_after_end)
  seg = check_segments(seg, ref, length, pad_after_end)
  padded_before = (~seg.mask[:, 0]).mean()
  padded_after = (~seg.mask[:, -1]).mean()
  assert padded_before > 0.02
  assert (padded_after > 0.02) if pad_after_end else padded_after == 0


def test_segment_shapes_full_frames():
  state = replay.init_replay(1, 12, (64, 64, 3))
  rng = np.random.default_rng(0)
  step = jax.jit(replay.add)
  for a in range(12):
    frame = rng.integers(1, 256, (1, 64, 64, 3), dtype=np.uint8)
    state = step(state, frame, jnp.array([a]), jnp.array([0.5]), jnp.array([a == 5]), jnp.array([False]),
                 jnp.array([True]))
  seg = replay.sample_segments(state, jax.random.key(0), 5, 7, pad_after_end=False)
  b, t = 5, 7
  spec = replay.Segment(obs=((b, t + 1, 64, 64, 3), jnp.uint8), act=((b, t), jnp.int32), rew=((b, t), jnp.float32),
                        end=((b, t), jnp.bool_), trunc=((b, t), jnp.bool_), mask=((b, t), jnp.bool_))
  assert isinstance(seg, replay.Segment)
  for k, v, (shape, dtype) in zip(seg._fields, seg, spec):
    assert (v.shape, v.dtype) == (shape, dtype), k
  assert seg.obs[:, -1].all()  # the frame after the last step is real (no padding after the end)


# --- Sampling frequencies ------------------------------------------------------------------------


def sampled_steps(state, num, key):
  """(env, step) of `num` single-step segments (length 1: the window is the drawn step itself)."""
  draws = []
  for i in range(num // 4096):
    seg = replay.sample_segments(state, jax.random.fold_in(key, i), 4096, 1, pad_after_end=True)
    assert bool(seg.mask.all())
    draws.append(np.asarray(seg.obs[:, 0]).reshape(4096, -1)[:, :3])
  return [decode(f) for f in np.concatenate(draws)]


def expected_step_probs(ref):
  """DIAMOND's probability of each sampleable (env, step), from the model's live episodes."""
  live = ref.live()
  n, k = len(live), len(WEIGHTS)
  lens = [ref.length(j) for j in live]
  if n < k:
    p_ep = np.array(lens) / sum(lens)
  else:
    sizes = [n // k + (n % k) * (g == k - 1) for g in range(k)]
    p_ep = np.concatenate([[w / s] * s for w, s in zip(WEIGHTS, sizes)])
  probs = {}
  for j, p in zip(live, p_ep):
    lo, hi = ref.sampleable(j)
    for a in range(lo, hi):
      probs[(ref.episodes[j]["env"], a)] = p / (hi - lo)
  return probs, live


def assert_matches(draws, probs, live, ref):
  num = len(draws)
  counts = {}
  for d in draws:
    assert d in probs, d
    counts[d] = counts.get(d, 0) + 1
  # Per-episode frequencies, within 4.5 binomial standard deviations.
  row_ep = {d: ref.rows[d[0]][d[1]]["id"] for d in probs}
  for j in live:
    p = sum(v for d, v in probs.items() if row_ep[d] == j)
    f = sum(v for d, v in counts.items() if row_ep[d] == j) / num
    assert abs(f - p) < 4.5 * np.sqrt(p * (1 - p) / num) + 1e-3, (j, f, p)
  # Steps: chi-square over all sampleable steps.
  exp = np.array([probs[d] * num for d in probs])
  obs = np.array([counts.get(d, 0) for d in probs])
  chi2, dof = ((obs - exp) ** 2 / exp).sum(), len(exp) - 1
  assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)


def test_group_frequencies_match_weights():
  # 2 envs with wrap-around: env 0 plays long episodes while env 1 plays short ones, so fully
  # overwritten episodes of env 1 sit between live ones in creation order.
  e, c, steps = 2, 40, 100
  rng = np.random.default_rng(7)
  stream = random_stream(rng, e, steps, protocol=True)
  stream["end"][:, 0] = np.arange(steps) % 37 == 36
  stream["trunc"][:, 0] = False
  stream["valid"][:, 0] = True
  state, ref = build(e, c, stream)
  live = ref.live()
  n = len(live)
  assert n >= 8 and n % 4 == 3  # group sizes 2, 2, 2, 5: the last group takes the remainder
  assert any(k not in live for k in range(min(live), max(live)))  # dead episodes between live ones
  probs, live = expected_step_probs(ref)
  draws = sampled_steps(state, 4096 * 6, jax.random.key(5))
  assert_matches(draws, probs, live, ref)
  # The four chronological groups themselves.
  rank = {k: r for r, k in enumerate(live)}
  size = n // 4
  groups = np.array([min(rank[ref.rows[d[0]][d[1]]["id"]] // size, 3) for d in draws])
  freq = np.bincount(groups, minlength=4) / len(draws)
  np.testing.assert_allclose(freq, WEIGHTS, atol=0.015)


def test_few_episodes_uniform_over_steps():
  # Env 0: episodes of 2 and 6 steps, then dummy rows; env 1: one running episode (17 sampleable steps).
  steps = 18
  ends = {1, 7}
  stream = {
      "obs": np.stack([[encode(0, a), encode(1, a)] for a in range(steps)]),
      "act": np.zeros((steps, 2), np.int32),
      "rew": np.zeros((steps, 2), np.float32),
      "end": np.array([[a in ends, False] for a in range(steps)]),
      "trunc": np.zeros((steps, 2), bool),
      "valid": np.array([[a <= 7, True] for a in range(steps)]),
  }
  state, ref = build(2, 40, stream)
  assert int(replay.num_episodes(state)) == 3
  probs, live = expected_step_probs(ref)
  np.testing.assert_allclose(sorted(set(probs.values())), [1 / 25])  # uniform over the 25 steps
  draws = sampled_steps(state, 4096 * 3, jax.random.key(6))
  assert_matches(draws, probs, live, ref)


# --- Segments anchored on rewarded steps (wm.rewarded_fraction) --------------------------------------


def sparse_reward_stream(seed, num_envs, steps):
  """The protocol stream with about 1 step in 12 rewarded, as in the denser Atari games."""
  rng = np.random.default_rng(seed)
  stream = random_stream(rng, num_envs, steps, protocol=True)
  stream["rew"] = np.where(rng.random(stream["rew"].shape) < 0.1, stream["rew"], 0.0).astype(np.float32)
  return stream


def rewarded_reference(ref):
  """The sampleable steps (env, absolute step) with a nonzero reward, from the plain-Python model."""
  out = set()
  for k in ref.live():
    lo, hi = ref.sampleable(k)
    env = ref.episodes[k]["env"]
    out |= {(env, a) for a in range(lo, hi) if ref.rows[env][a]["rew"] != 0}
  return out


@pytest.mark.parametrize("max_episodes", [None, 12])
def test_rewarded_segments_end_on_a_rewarded_step_drawn_uniformly_and_leave_the_others_alone(max_episodes):
  e, c, length, last, b, k = 2, 60, 6, 2, 256, 192
  stream = sparse_reward_stream(11, e, 150)
  # The newest row is rewarded: its next frame is not stored yet, so it is not a step to draw.
  stream["valid"][-1, 0], stream["rew"][-1, 0] = True, 1.0
  state, ref = build(e, c, stream, max_episodes)
  targets = rewarded_reference(ref)
  rewarded_rows = {(env, a) for env in range(e) for a in range(150 - c, 150) if ref.rows[env][a]["rew"] != 0
                   and ref.rows[env][a]["id"] >= 0}
  assert (0, 149) in rewarded_rows - targets
  if max_episodes:  # rows still in the ring whose episodes left the table are not drawn either
    assert len(rewarded_rows - targets) > 1
  assert 3 < len(targets) < 40  # the ring has wrapped: older rewarded steps are gone
  key = jax.random.key(12)
  seg = replay.sample_segments(state, key, b, length, pad_after_end=False, rewarded=k, rewarded_last=last)
  plain = replay.sample_segments(state, key, b, length, pad_after_end=False)
  seg = check_segments(seg, ref, length, False)  # one episode, exact rows, as every segment
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x)[k:], np.asarray(y)[k:]), seg, plain)
  tail = seg.rew[:k, -last:] * seg.mask[:k, -last:]
  assert (tail != 0).any(axis=1).all()
  assert (plain.rew[:, -last:] != 0).any(axis=1).mean() < 0.5
  # Uniform over the ring's sampleable rewarded steps: single-step segments are the drawn steps themselves.
  draws = []
  for i in range(6):
    one = replay.sample_segments(state, jax.random.fold_in(key, i), 4096, 1, pad_after_end=False, rewarded=4096)
    draws += [decode(f) for f in np.asarray(one.obs[:, 0]).reshape(4096, -1)[:, :3]]
  assert set(draws) == targets
  counts = np.array([draws.count(d) for d in sorted(targets)])
  exp = len(draws) / len(targets)
  chi2, dof = ((counts - exp) ** 2 / exp).sum(), len(targets) - 1
  assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)


def test_rewarded_segments_fall_back_to_diamonds_draw_without_rewards():
  stream = sparse_reward_stream(13, 2, 80)
  stream["rew"][:] = 0.0
  state, _ = build(2, 60, stream)
  key = jax.random.key(14)
  seg = replay.sample_segments(state, key, 64, 6, pad_after_end=False, rewarded=32, rewarded_last=2)
  jax.tree.map(np.testing.assert_array_equal, seg, replay.sample_segments(state, key, 64, 6, pad_after_end=False))
  with pytest.raises(ValueError):
    replay.sample_segments(state, key, 64, 6, pad_after_end=True, rewarded=32)


# --- jit and scan --------------------------------------------------------------------------------


def test_add_in_scan_equals_python_loop():
  stream = random_stream(np.random.default_rng(7), 3, 30, protocol=False)
  state = replay.init_replay(3, 9, OBS, max_episodes=8)
  scanned = add_all(state, jax.tree.map(jnp.asarray, stream))
  step = jax.jit(replay.add)
  for i in range(30):
    state = step(state, *(jnp.asarray(stream[k][i]) for k in ("obs", "act", "rew", "end", "trunc",
                                                                     "valid")))
  jax.tree.map(np.testing.assert_array_equal, scanned, state)


def test_add_and_sample_inside_scan():
  """Collect-then-sample as the training epoch does it: both inside one jitted scan."""
  e, c, steps, length = 2, 60, 30, 6
  stream = jax.tree.map(jnp.asarray, random_stream(np.random.default_rng(8), e, steps, protocol=True))
  key = jax.random.key(9)

  @functools.partial(jax.jit, static_argnums=2)
  def run(state, stream, pad_after_end):
    def body(s, x):
      s = replay.add(s, x["obs"], x["act"], x["rew"], x["end"], x["trunc"], x["valid"])
      seg = replay.sample_segments(s, jax.random.fold_in(key, s.t), 512, length, weights=WEIGHTS,
                                   pad_after_end=pad_after_end)
      return s, seg
    return jax.lax.scan(body, state, stream)

  state = replay.init_replay(e, c, OBS)
  final, segs = run(state, stream, True)
  # The last step's segments equal a direct call on the final state.
  direct = replay.sample_segments(final, jax.random.fold_in(key, steps), 512, length, pad_after_end=True)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda x: x[-1], segs), direct)
  _, ref = build(e, c, jax.tree.map(np.asarray, stream))
  check_segments(direct, ref, length, True)


def test_bad_weights_rejected():
  state = replay.init_replay(1, 4, OBS)
  with pytest.raises(ValueError):
    replay.sample_segments(state, jax.random.key(0), 2, 2, weights=(0.5, 0.6), pad_after_end=False)

