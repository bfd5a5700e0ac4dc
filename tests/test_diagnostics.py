"""Tests of the learning diagnostics (jedi_jax/diagnostics.py, world_model.probe_world_model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import diagnostics
from jedi_jax import diffusion
from jedi_jax import replay as replay_lib
from jedi_jax import world_model as wm
from test_world_model import NUM_ACTIONS, make_segment, wm_config


def _slow_counts(logits, labels, mask, num_classes):
  """Per class: (targets, hits, predictions) over the valid entries, by a Python loop."""
  out = np.zeros((num_classes, 3))
  for lg, lb, m in zip(logits.reshape(-1, num_classes), labels.reshape(-1), mask.reshape(-1)):
    if not m:
      continue
    pred = int(np.argmax(lg))
    out[lb, 0] += 1
    out[lb, 1] += pred == lb
    out[pred, 2] += 1
  return out


def test_classification_counts_match_a_python_loop():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 7, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (4, 7))
  mask = rng.random((4, 7)) < 0.7
  got = diagnostics.classification_counts(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), "rew",
                                          diagnostics.REWARD_CLASSES)
  want = _slow_counts(logits, labels, mask, 3)
  for c, name in enumerate(diagnostics.REWARD_CLASSES):
    assert [float(got[f"rew_{k}_{name}"]) for k in ("count", "hits", "predicted")] == list(want[c]), name
  binary = diagnostics.classification_counts(jnp.asarray(logits[..., :2]), jnp.asarray(labels % 2),
                                             jnp.asarray(mask), "end", (None, ""))
  assert sorted(binary) == ["end_count", "end_hits", "end_predicted"]
  assert float(binary["end_count"]) == _slow_counts(logits[..., :2], labels % 2, mask, 2)[1, 0]


def test_rates_from_counts_skip_absent_classes():
  row = {"wm/rew_count_pos": 0.0, "wm/rew_hits_pos": 0.0, "wm/rew_predicted_pos": 2.0,
         "wm/rew_count_neg": 4.0, "wm/rew_hits_neg": 1.0, "wm/rew_predicted_neg": 0.0,
         "wm/end_count": 2.0, "wm/end_hits": 1.0, "wm/end_predicted": 4.0, "wm/loss": 0.3}
  out = diagnostics.rates_from_counts(row)
  assert out == {"wm/rew_count_pos": 0.0, "wm/rew_count_neg": 4.0, "wm/end_count": 2.0, "wm/loss": 0.3,
                 "wm/rew_precision_pos": 0.0, "wm/rew_recall_neg": 0.25, "wm/end_recall": 0.5,
                 "wm/end_precision": 0.25}
  assert all(np.isfinite(v) for v in out.values())


def test_collapse_warning():
  assert diagnostics.collapse_warning({"wm/latent_std": 0.5}) is None
  assert diagnostics.collapse_warning({}) is None
  line = diagnostics.collapse_warning({"wm/latent_std": 0.01})
  assert "collapse" in line and "\n" not in line


def test_world_model_loss_reports_class_counts():
  config = wm_config("jedi")
  params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  n, p, h = config.wm.num_cond, config.wm.num_predictions, config.ac.horizon
  batch = wm.WorldModelBatch(dynamics=make_segment(rng, 2, n + p), rew_end=make_segment(rng, 2, h + n, pad_after=3))
  _, metrics = jax.jit(wm.world_model_loss, static_argnums=3)(params, batch, jax.random.PRNGKey(0), config)
  valid = float(np.sum(np.asarray(batch.rew_end.mask)))
  assert sum(float(metrics[f"rew_count_{c}"]) for c in diagnostics.REWARD_CLASSES) == valid
  assert sum(float(metrics[f"rew_predicted_{c}"]) for c in diagnostics.REWARD_CLASSES) == valid
  assert float(metrics["end_count"]) == float(np.sum(np.asarray(batch.rew_end.end) & np.asarray(batch.rew_end.mask)))


class _ActionDenoiserNet:
  """A denoiser whose exact prediction is `scale` * (last action + 1) everywhere: D(x; sigma) = that target."""

  def __init__(self, config, scale):
    self.config, self.scale = config, scale

  def apply(self, variables, x_in, c_noise, cond, cond_actions):
    del variables, cond
    c_in, c_out, c_skip, _ = diffusion.edm_scalings(jnp.exp(4.0 * c_noise), self.config.wm.sigma_data, 0.0)
    x = x_in / c_in[:, None, None, None]
    target = self.scale * (cond_actions[:, -1].astype(jnp.float32) + 1.0)[:, None, None, None] * jnp.ones_like(x)
    return (target - c_skip[:, None, None, None] * x) / c_out[:, None, None, None]


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_probe_action_sensitivity(monkeypatch, scale):
  """Samples that ignore the action give sensitivity 0; samples that depend on it give the expected ratio."""
  config = wm_config("jedi")
  params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
  monkeypatch.setattr(wm, "_denoiser_net", lambda c, n: _ActionDenoiserNet(c, scale))
  segment = make_segment(np.random.default_rng(0), 3, config.wm.num_cond)
  # A fresh function per stub: jax.jit caches traces per function, and the stub is a trace-time global.
  probe = jax.jit(lambda p, s, k: wm.probe_world_model(p, s, k, config))(params, segment, jax.random.PRNGKey(1))
  assert all(np.isfinite(float(v)) for v in probe.values())
  if scale == 0.0:
    assert float(probe["action_sensitivity"]) < 1e-6
    assert float(probe["sampled_latent_std"]) < 1e-6
    assert float(probe["action_sensitivity_reward"]) < 1e-6
  else:
    # RMS over the batch of scale * |a - a'|, over the encoder latents' spread.
    k = config.wm.num_cond
    cond = wm.encode(params, segment.obs[:, :k], config, segment.frame_mask[:, :k])
    spread = float(jnp.std(cond))
    ratio = float(probe["action_sensitivity"]) * spread / scale
    assert 1.0 - 1e-5 <= ratio <= NUM_ACTIONS - 1 + 1e-5   # float rounding of the two spreads
    # The stub's sample is scale * (a + 1) everywhere, for the taken and for the other action: the gain from
    # the encoded true next state, computed here in numpy with the probe's own choice of a'.
    true_next = np.asarray(wm.encode(params, segment.obs, config, segment.frame_mask)[:, k], np.float64)
    taken = np.asarray(segment.act[:, -1], np.int64)
    key_alt = jax.random.split(jax.random.PRNGKey(1))[0]
    alt = (taken + np.asarray(jax.random.randint(key_alt, (len(taken),), 1, NUM_ACTIONS))) % NUM_ACTIONS
    err = lambda a: np.mean(np.square(scale * (a[:, None] + 1.0) - true_next.reshape(len(a), -1)), axis=1)
    w = np.asarray(segment.mask[:, -1], np.float64)
    want = np.sqrt(np.sum(w * err(alt)) / np.sum(w * err(taken))) - 1.0
    np.testing.assert_allclose(float(probe["action_error_gain"]), want, rtol=1e-4, atol=1e-6)
  if scale == 0.0:
    assert abs(float(probe["action_error_gain"])) < 1e-6
  for key in ("sampled_latent_std", "sample_error", "action_sensitivity", "action_sensitivity_reward",
              "action_error_gain",
              "sampled_saturated_frac", "latent_saturated_frac"):
    assert key in probe


def test_reward_probe_picks_whole_windows_of_one_episode():
  """diagnostics.transition_rows / gather_windows (experiments/reward_probe.py): a transition qualifies when it has the asked reward sign, its K - 1 steps
  before and the frame after it are in its episode (also across the ring's wrap-around), and gather returns
  the frames of steps i - K + 1 .. i + 1 with the actions of steps i - K + 1 .. i."""
  import types
  # One env, capacity 8, 11 rows written: slots hold absolute steps 3..10 (slot = step % 8).
  steps = np.arange(3, 11)
  episode = {3: 0, 4: 0, 5: 1, 6: 1, 7: 1, 8: 1, 9: 2, 10: 2}
  reward = {3: 1, 4: 1, 5: 1, 6: 1, 7: -1, 8: 1, 9: 1, 10: 1}
  slot_ep, slot_rew, slot_obs, slot_act = (np.zeros((1, 8), np.int32), np.zeros((1, 8), np.float32),
                                           np.zeros((1, 8, 1, 1, 1), np.uint8), np.zeros((1, 8), np.int32))
  for s in steps:
    slot_ep[0, s % 8], slot_rew[0, s % 8], slot_obs[0, s % 8], slot_act[0, s % 8] = episode[s], reward[s], s, 100 + s
  replay = types.SimpleNamespace(rew=slot_rew, episode_id=slot_ep, t=11, obs=slot_obs, act=slot_act)
  rng = np.random.default_rng(0)
  # K = 2: step i needs i - 1, i and i + 1 in one episode. Step 3: no step 2 in the ring; 4: 5 is another
  # episode; 6: yes; 7: reward -1; 8: 9 is another episode; 10: no next frame written.
  assert diagnostics.transition_rows(replay, 2, 10, rng, sign=1) == [(0, 6)]
  assert diagnostics.transition_rows(replay, 2, 10, rng, sign=-1) == [(0, 7)]
  assert sorted(diagnostics.transition_rows(replay, 1, 10, rng, sign=1)) == [(0, 3), (0, 5), (0, 6), (0, 9)]
  assert len(diagnostics.transition_rows(replay, 1, 2, rng, sign=1)) == 2
  obs, act = diagnostics.gather_windows(replay, [(0, 7)], 2)
  assert obs.reshape(-1).tolist() == [6, 7, 8] and act.tolist() == [[106, 107]]


def _information_by_counting(pairs):
  """I(a; r) in bits from a list of (a, r) pairs, with dicts and math.log2 only."""
  import collections
  import math
  n = len(pairs)
  joint = collections.Counter(pairs)
  pa = collections.Counter(a for a, _ in pairs)
  pr = collections.Counter(r for _, r in pairs)
  return sum(c / n * math.log2((c / n) / (pa[a] / n * pr[r] / n)) for (a, r), c in joint.items())


def test_action_reward_information_finds_the_lag_of_a_planted_effect():
  """experiments/reward_density.py --max_lag: a reward paid two steps after action 2 (and a -1 at random)
  carries information at lag 2 only, equal to a plain count's; independent lags stay near the chance value."""
  rng = np.random.default_rng(0)
  t, e, num_actions = 4000, 4, 5
  actions = rng.integers(0, num_actions, size=(t, e))
  signs = np.zeros((t, e), np.int64)
  signs[2:] = np.where(actions[:-2] == 2, 1, 0)
  signs[rng.random((t, e)) < 0.05] = -1
  table = diagnostics.action_reward_information(actions, signs, num_actions, max_lag=3)
  assert [row["lag"] for row in table] == [0, 1, 2, 3]
  pairs = [(int(a), int(r)) for a, r in zip(actions[:-2].ravel(), signs[2:].ravel())]
  np.testing.assert_allclose(table[2]["bits"], _information_by_counting(pairs), rtol=1e-9)
  assert table[2]["bits"] > 0.3
  for lag in (0, 1, 3):
    assert table[lag]["bits"] < 3 * table[lag]["bias_bits"]
  np.testing.assert_allclose(table[2]["positive_rate"][2], np.mean(signs[2:][actions[:-2] == 2] == 1))
  assert table[2]["positive_rate"][0] == 0.0


def test_action_history_counts_the_replay_in_step_order_across_the_ring():
  """experiments/action_history.py: per window of env steps, each action's share of the training steps, the
  entropy of that share and the reward/end rates, oldest rows first once the ring has wrapped, auto-reset rows
  left out; checked against a plain count of the steps written."""
  num_envs, capacity, num_actions, steps = 2, 7, 3, 11
  rng = np.random.default_rng(1)
  replay = replay_lib.init_replay(num_envs, capacity, obs_shape=(2, 2, 3))
  written = []                                    # (absolute row, env, action, reward, end, valid)
  for t in range(steps):
    act = rng.integers(0, num_actions, num_envs)
    rew = rng.choice([-1.0, 0.0, 1.0], num_envs)
    end = rng.random(num_envs) < 0.2
    valid = np.array([t != 5, True])              # env 0's row 5 is an auto-reset row
    replay = replay_lib.add(replay, np.zeros((num_envs, 2, 2, 3), np.uint8), act, rew, end,
                            np.zeros(num_envs, bool), valid)
    written += [(t, e, act[e], rew[e], end[e], valid[e]) for e in range(num_envs)]
  table = diagnostics.action_history(replay, num_actions, window=6)   # 3 rows of each env per window
  held = [w for w in written if w[0] >= steps - capacity]               # the ring keeps rows 4..10
  assert [(w["first_step"], w["last_step"]) for w in table] == [(8, 14), (14, 20), (20, 22)]
  for w, lo in zip(table, (4, 7, 10)):
    rows = [h for h in held if lo <= h[0] < lo + 3 and h[5]]
    assert w["steps"] == len(rows)
    share = np.bincount([h[2] for h in rows], minlength=num_actions) / len(rows)
    np.testing.assert_allclose(w["action_fraction"], share)
    nz = share[share > 0]
    np.testing.assert_allclose(w["action_entropy_bits"], -np.sum(nz * np.log2(nz)))
    np.testing.assert_allclose(w["reward_rate_pos"], np.mean([h[3] > 0 for h in rows]))
    np.testing.assert_allclose(w["reward_rate_neg"], np.mean([h[3] < 0 for h in rows]))
    np.testing.assert_allclose(w["end_rate"], np.mean([h[4] for h in rows]))


def _jitter(tree, seed, scale):
  """Every parameter moved by scale * N(0, 1): layers that start at zero (heads, action conditioning) vary."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(n, x.shape) for x, n in zip(leaves, keys)])


def test_action_probe_matches_a_step_by_step_loop():
  """diagnostics.make_action_probe (experiments/action_probe.py) against the same quantities computed one
  step and one action at a time: the burn-in of both LSTMs on the K - 1 first transitions, the policy at the
  last state, and per action the sampled next state (same noise), the reward/end model and the critic."""
  from jedi_jax.nets.actor_critic import ac_initial_state, ac_step, init_actor_critic_params
  config = wm_config("jedi")
  k, b = config.wm.num_cond, 3
  # Several layers start at zero (the actor and critic heads, the action conditioning): move every parameter
  # so that the policy, the values and the models' use of the action vary.
  params = _jitter(wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0)), 4, 0.05)
  ac = _jitter(init_actor_critic_params(config, NUM_ACTIONS, wm.state_shape(config), jax.random.PRNGKey(1)), 2, 0.3)
  rng = np.random.default_rng(0)
  obs = rng.integers(0, 256, (b, k + 1, 64, 64, 3)).astype(np.uint8)
  act = rng.integers(0, NUM_ACTIONS, (b, k)).astype(np.int32)
  key = jax.random.PRNGKey(3)
  out = diagnostics.make_action_probe(config)((params, ac), obs, act, key)

  states = wm.encode(params, obs[:, :k], config).astype(jnp.float32)
  rew_state, ac_state = wm.rew_end_initial_state(config, b), ac_initial_state(config, b)
  for j in range(k - 1):
    rew_state, _, _ = wm.rew_end_step(params, rew_state, states[:, j], act[:, j], states[:, j + 1], config)
    ac_state, _, _ = ac_step(ac, ac_state, states[:, j], config)
  ac_state, logits, _ = ac_step(ac, ac_state, states[:, -1], config)
  np.testing.assert_allclose(out["policy"], jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)
  for a in range(NUM_ACTIONS):
    actions = act.copy()
    actions[:, -1] = a
    next_state = wm.sample_next(params, states, actions, key, config)
    _, rew_logits, end_logits = wm.rew_end_step(params, rew_state, states[:, -1], actions[:, -1], next_state,
                                                config)
    _, _, value = ac_step(ac, ac_state, next_state, config)
    p_rew, p_end = np.asarray(jax.nn.softmax(rew_logits)), np.asarray(jax.nn.softmax(end_logits))[:, 1]
    want = p_rew[:, 2] - p_rew[:, 0] + config.ac.gamma * (1 - p_end) * np.asarray(value)
    np.testing.assert_allclose(out["q"][:, a], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["reward_pos"][:, a], p_rew[:, 2], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["reward_neg"][:, a], p_rew[:, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["end"][:, a], p_end, rtol=1e-4, atol=1e-6)
  assert np.min(np.ptp(np.asarray(out["q"]), axis=1)) > 1e-4   # the actions are told apart


def test_summarize_action_probe():
  """Advantages are q minus the policy's mean q at the same state; "best" counts each state's argmax."""
  out = {"q": np.array([[1.0, 0.0], [0.0, 2.0]]), "policy": np.array([[0.5, 0.5], [1.0, 0.0]]),
         "reward_pos": np.zeros((2, 2)), "reward_neg": np.zeros((2, 2)), "end": np.zeros((2, 2))}
  table = diagnostics.summarize_action_probe(out)
  np.testing.assert_allclose(table["advantage"], [0.25, 0.75])     # states: (0.5, -0.5) and (0, 2)
  np.testing.assert_allclose(table["advantage_se"], [0.25, 1.25])   # std (ddof 1) / sqrt(2)
  np.testing.assert_allclose(table["best"], [0.5, 0.5])
  np.testing.assert_allclose(table["q"], [0.5, 1.0])
  np.testing.assert_allclose(table["policy"], [0.75, 0.25])


def test_fixed_action_rollout_matches_a_step_by_step_loop():
  """diagnostics.make_fixed_action_rollout (experiments/action_effect.py): the context's last action replaced,
  then the action held, the window sliding by one sampled state per step, noise fold_in(key, h)."""
  config = wm_config("jedi")
  k, b, horizon = config.wm.num_cond, 2, 3
  params = _jitter(wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0)), 4, 0.05)
  rng = np.random.default_rng(0)
  obs = rng.integers(0, 256, (b, k, 64, 64, 3)).astype(np.uint8)
  act = rng.integers(0, NUM_ACTIONS, (b, k)).astype(np.int32)
  cond = wm.encode(params, obs, config).astype(jnp.float32)
  key = jax.random.PRNGKey(5)
  rollout = diagnostics.make_fixed_action_rollout(config, horizon)
  got = {a: np.asarray(rollout(params, cond, act, a, key)) for a in (0, 1)}
  for a in (0, 1):
    window, actions = cond, np.array(act)
    actions[:, -1] = a
    for h in range(horizon):
      nxt = wm.sample_next(params, window, jnp.asarray(actions), jax.random.fold_in(key, h), config)
      np.testing.assert_allclose(got[a][:, h], nxt, rtol=1e-4, atol=1e-5)
      window = jnp.concatenate([window[:, 1:], nxt[:, None]], axis=1)
      actions = np.concatenate([actions[:, 1:], np.full((b, 1), a, np.int32)], axis=1)
  assert np.abs(got[0] - got[1]).max() > 1e-4      # the actions are told apart


def test_action_spread_and_cross_action_gain():
  """Pairwise RMS between branches, and the gain: 0 when the model ignores the action, above 0 when its
  branches differ as the real ones do, below 0 when they differ the other way round."""
  real = np.zeros((3, 2, 2, 4))
  real[1] += 1.0
  real[2] += 3.0                                   # per-action offsets 0, 1, 3: pairs differ by 1, 3, 2
  np.testing.assert_allclose(diagnostics.action_spread(real, 2.0), [np.sqrt(14 / 3) / 2] * 2)
  assert np.allclose(diagnostics.action_spread(np.ones((3, 2, 2, 4)), 1.0), 0.0)
  blind = np.broadcast_to(real.mean(axis=0), real.shape)
  np.testing.assert_allclose(diagnostics.cross_action_gain(blind, real), 0.0, atol=1e-12)
  good = real + 0.1
  # same-action error 0.1; cross errors |offset difference + 0.1|, over the 6 ordered pairs
  cross = np.mean([(d + 0.1) ** 2 for d in (-1, -3, 1, -2, 3, 2)])
  np.testing.assert_allclose(diagnostics.cross_action_gain(good, real), np.sqrt(cross / 0.01) - 1.0)
  assert (diagnostics.cross_action_gain(real[::-1], real) < 0).all()
