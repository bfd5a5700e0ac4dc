"""Tests of the actor-critic agent (jedi_jax/agent.py, jedi_jax/nets/actor_critic.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jedi_jax import agent
from jedi_jax import config as config_lib
from jedi_jax import imagination
from test_imagination import (NUM_ACTIONS, REWARDED_ACTION, STUB_SHAPE, STUB_WM, init_ac_params, make_start,
                              stub_params, ac_config)
from test_optim import decay_mask


# --- lambda-returns ---------------------------------------------------------------------------------

def lambda_returns_loop(rewards, values, dones, gamma, lam):
  """The recursion, written out: G_T = V_T, G_t = r_t + gamma (1 - d_t) ((1 - lam) V_{t+1} + lam G_{t+1})."""
  t_len = rewards.shape[0]
  returns = np.zeros_like(rewards)
  next_return = values[t_len]
  for t in reversed(range(t_len)):
    returns[t] = rewards[t] + gamma * (1 - dones[t]) * ((1 - lam) * values[t + 1] + lam * next_return)
    next_return = returns[t]
  return returns


def diamond_lambda_returns(rew, end, trunc, val_bootstrap, gamma, lam):
  """numpy transcription of DIAMOND's compute_lambda_returns (batch-major, val_bootstrap[:, t] = V_{t+1})."""
  end_or_trunc = np.clip(end + trunc, 0, 1)
  out = np.sign(rew) + (1 - end) * gamma * ((1 - trunc) * (1 - lam) + trunc) * val_bootstrap
  last = val_bootstrap[:, -1]
  for t in reversed(range(rew.shape[1])):
    out[:, t] += (1 - end_or_trunc[:, t]) * gamma * lam * last
    last = out[:, t]
  return out


def _random_rollout(seed, t_len=9, batch=5):
  rng = np.random.default_rng(seed)
  rewards = rng.choice([-1.0, 0.0, 1.0], size=(t_len, batch)).astype(np.float32)
  values = rng.normal(size=(t_len + 1, batch)).astype(np.float32)
  dones = rng.random((t_len, batch)) < 0.25
  dones[t_len // 2, 0] = True   # at least one end in the middle
  return rewards, values, dones


@pytest.mark.parametrize("gamma,lam", [(0.985, 0.95), (0.9, 0.0), (0.99, 1.0)])
def test_lambda_returns_match_the_recursion(gamma, lam):
  rewards, values, dones = _random_rollout(0)
  got = agent.lambda_returns(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones), gamma, lam)
  want = lambda_returns_loop(rewards, values, dones.astype(np.float32), gamma, lam)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lambda_returns_match_diamond():
  rewards, values, dones = _random_rollout(1)
  got = agent.lambda_returns(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones), 0.985, 0.95)
  # DIAMOND: batch-major, values shifted to the bootstrap convention, the window truncated at its last step.
  trunc = np.zeros_like(dones.T, np.float32)
  trunc[:, -1] = 1 - dones.T[:, -1]
  want = diamond_lambda_returns(rewards.T, dones.T.astype(np.float32), trunc, values[1:].T, 0.985, 0.95)
  np.testing.assert_allclose(got, want.T, rtol=1e-5, atol=1e-5)


# --- Loss and gradients -----------------------------------------------------------------------------

def _ac_params(config, seed=0, random_heads=False):
  params = init_ac_params(config, seed)
  if random_heads:
    k1, k2 = jax.random.split(jax.random.key(seed + 1))
    params["actor_linear"]["kernel"] = jax.random.normal(k1, params["actor_linear"]["kernel"].shape)
    params["critic_linear"]["kernel"] = jax.random.normal(k2, params["critic_linear"]["kernel"].shape)
  return params


def test_no_gradient_reaches_the_world_model():
  config = ac_config(7)
  ac_params = _ac_params(config, random_heads=True)
  wm_params = stub_params(end_logit=0.0)
  start = make_start(jax.random.key(1), 3)
  loss_fn = functools.partial(agent.actor_critic_loss_fn, start=start, key=jax.random.key(2), config=config,
                              wm=STUB_WM)
  (loss, metrics), (g_ac, g_wm) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(
      ac_params, wm_params)
  assert np.isfinite(loss) and all(np.isfinite(v) for v in metrics.values())
  for leaf in jax.tree.leaves(g_wm):
    np.testing.assert_array_equal(leaf, 0.0)
  # Every actor-critic parameter tensor gets a gradient (heads made non-zero so the trunk is reached).
  for path, leaf in jax.tree_util.tree_leaves_with_path(g_ac):
    assert np.abs(np.asarray(leaf)).sum() > 0, jax.tree_util.keystr(path)


def test_loss_terms_follow_diamond():
  """Recompute DIAMOND's loss terms from the trajectory by hand."""
  config = ac_config(7)
  ac_params = _ac_params(config, random_heads=True)
  traj = jax.jit(imagination.imagine, static_argnames=("config", "wm"))(
      stub_params(end_logit=0.0), ac_params, make_start(jax.random.key(1), 3), jax.random.key(2), config, STUB_WM)
  loss, m = agent.actor_critic_loss(ac_params, traj, config)
  ac = config.ac
  values = np.asarray(traj.values)
  returns = lambda_returns_loop(np.asarray(traj.rewards), values, np.asarray(traj.ends, np.float32), ac.gamma,
                                ac.lam)
  adv = returns - values[:-1]
  want_actions = np.mean(-np.asarray(traj.log_probs) * adv)
  want_values = ac.value_weight * np.mean(adv ** 2)
  want_entropy = -ac.entropy_weight * np.mean(np.asarray(traj.entropies))
  np.testing.assert_allclose(m["loss_actions"], want_actions, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(m["loss_values"], want_values, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(m["loss_entropy"], want_entropy, rtol=1e-4, atol=1e-8)
  np.testing.assert_allclose(loss, want_actions + want_values + want_entropy, rtol=1e-4, atol=1e-6)
  # The reward-rate diagnostics, on rewards of both signs whose first step differs from the rest.
  rewards = np.random.default_rng(0).integers(-1, 2, np.shape(traj.rewards)).astype(np.float32)   # [H, B]
  rewards[0] = [1, 1, -1]
  _, m = agent.actor_critic_loss(ac_params, traj.replace(rewards=jnp.asarray(rewards)), config)
  for sign, name in ((1, "pos"), (-1, "neg")):
    np.testing.assert_allclose(m[f"imagined_reward_rate_{name}"], np.mean(rewards * sign > 0), rtol=1e-6)
    np.testing.assert_allclose(m[f"imagined_reward_rate_first_{name}"], np.mean(rewards[0] * sign > 0), rtol=1e-6)


@pytest.mark.slow
def test_policy_learns_the_rewarded_action():
  """Reward +1 only for REWARDED_ACTION (stub world model): a few hundred updates make the policy prefer it."""
  c = config_lib.debug()
  c.ac.horizon = 5
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 10
  config = config_lib.freeze(c)
  tx = agent.actor_critic_optimizer(config)
  ac_params = _ac_params(config)
  wm_params = stub_params(end_logit=-2.0)
  start = make_start(jax.random.key(1), 8)

  def prob_rewarded(params, key):
    traj = imagination.imagine(wm_params, params, start, key, config, STUB_WM)
    logits, _ = imagination.policy_over_trajectory(params, traj, config)
    return jax.nn.softmax(logits)[..., REWARDED_ACTION].mean()

  @jax.jit
  def train(params, key):
    def update(carry, i):
      params, opt_state = carry
      grads, metrics = jax.grad(agent.actor_critic_loss_fn, has_aux=True)(
          params, wm_params, start, jax.random.fold_in(key, i), config, STUB_WM)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), metrics["imagined_reward"]
    (params, _), rewards = jax.lax.scan(update, (params, tx.init(params)), jnp.arange(300))
    return params, rewards

  before = prob_rewarded(ac_params, jax.random.key(5))
  ac_params, rewards = train(ac_params, jax.random.key(3))
  after = prob_rewarded(ac_params, jax.random.key(5))
  np.testing.assert_allclose(before, 1 / NUM_ACTIONS, atol=1e-6)
  assert after > 0.9, (before, after)
  assert rewards[-20:].mean() > rewards[:20].mean() + 0.3


def test_optimizer_warms_up_from_zero_and_skips_decay_of_biases():
  config = ac_config()
  tx = agent.actor_critic_optimizer(config)
  params = _ac_params(config)
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  updates, state = update(grads, state, params)   # step 0: lr 0 (DIAMOND's LambdaLR starts at 0)
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
  updates, state = update(grads, state, params)   # step 1: lr / warmup_steps
  lr1 = config.optim.lr / config.optim.warmup_steps
  np.testing.assert_allclose(updates["actor_linear"]["bias"], -lr1, rtol=1e-3)
  mask = decay_mask(params)
  assert mask["lstm"]["ih"]["kernel"] and mask["conv_in"]["kernel"]
  assert not mask["lstm"]["ih"]["bias"] and not mask["blocks_0"]["norm"]["norm"]["scale"]


def test_optimizer_lr_is_optim_lr_times_ac_lr_scale():
  """ac.lr_scale multiplies the actor-critic's lr (the world model keeps optim.lr); 0 or less is refused."""
  c = config_lib.debug()
  c.ac.lr_scale = 0.25
  config = config_lib.freeze(c)
  tx = agent.actor_critic_optimizer(config)
  params = _ac_params(config)
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  _, state = update(grads, state, params)
  updates, _ = update(grads, state, params)
  lr1 = 0.25 * config.optim.lr / config.optim.warmup_steps
  np.testing.assert_allclose(updates["actor_linear"]["bias"], -lr1, rtol=1e-3)
  c.ac.lr_scale = 0.0
  with pytest.raises(ValueError, match=r"^ac.lr_scale must be > 0, got 0.0$"):
    config_lib.validate(c)


# --- Network -----------------------------------------------------------------------------------------

def test_network_init_follows_diamond():
  config = ac_config()
  params = _ac_params(config)
  for head in ("actor_linear", "critic_linear"):
    for leaf in jax.tree.leaves(params[head]):
      np.testing.assert_array_equal(leaf, 0.0)
  bias = np.asarray(params["lstm"]["ih"]["bias"])
  h = config.ac.lstm_dim
  np.testing.assert_array_equal(bias[h:2 * h], 1.0)   # forget gate
  np.testing.assert_array_equal(np.delete(bias, np.s_[h:2 * h]), 0.0)
  state, logits, value = agent.ac_step(params, agent.ac_initial_state(config, 2), jnp.ones((2, *STUB_SHAPE)),
                                       config)
  assert logits.shape == (2, NUM_ACTIONS) and value.shape == (2,)
  assert all(x.shape == (2, config.ac.lstm_dim) for x in state)


@pytest.mark.parametrize("kind,low,high", [("jedi", 2.0e6, 2.2e6), ("diamond", 3.1e6, 3.4e6)])
def test_parameter_count_at_paper_size(kind, low, high):
  c = config_lib.atari100k()
  c.wm.kind = kind
  config = config_lib.freeze(c)
  shapes = jax.eval_shape(functools.partial(agent.init_actor_critic, config, 18), jax.random.key(0))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert low < n < high, n


# --- Acting in the real environment -----------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("config",))
def _act(ac_params, lstm_state, obs, is_first, key, epsilon, config):
  return agent.act(ac_params, stub_params(), lstm_state, obs, is_first, key, epsilon, config, wm=STUB_WM)


def _biased_policy(config):
  params = _ac_params(config)
  params["actor_linear"]["bias"] = jnp.array([20.0] + [-20.0] * (NUM_ACTIONS - 1))
  return params


def test_act_epsilon_one_is_uniform_and_zero_follows_the_policy():
  config = ac_config()
  params = _biased_policy(config)
  n = 2000
  obs = jax.random.randint(jax.random.key(0), (n, 64, 64, 3), 0, 256).astype(jnp.uint8)
  state = agent.ac_initial_state(config, n)
  is_first = jnp.ones((n,), bool)
  _, greedy = _act(params, state, obs, is_first, jax.random.key(1), 0.0, config)
  np.testing.assert_array_equal(greedy, 0)
  _, uniform = _act(params, state, obs, is_first, jax.random.key(2), 1.0, config)
  counts = np.bincount(np.asarray(uniform), minlength=NUM_ACTIONS)
  expected = n / NUM_ACTIONS
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
  _, some = _act(params, state, obs, is_first, jax.random.key(3), 0.3, config)
  frac_random = np.mean(np.asarray(some) != 0) * NUM_ACTIONS / (NUM_ACTIONS - 1)
  assert abs(frac_random - 0.3) < 0.05, frac_random


def test_act_resets_the_lstm_where_an_episode_starts():
  config = ac_config()
  params = _ac_params(config)
  n = 4
  obs = jax.random.randint(jax.random.key(0), (n, 64, 64, 3), 0, 256).astype(jnp.uint8)
  k1, k2 = jax.random.split(jax.random.key(1))
  lstm_state = (jax.random.normal(k1, (n, config.ac.lstm_dim)), jax.random.normal(k2, (n, config.ac.lstm_dim)))
  is_first = jnp.array([True, False, True, False])
  new_state, _ = _act(params, lstm_state, obs, is_first, jax.random.key(2), 0.0, config)
  x = STUB_WM.encode(stub_params(), obs, config)
  from_zero, _, _ = agent.ac_step(params, agent.ac_initial_state(config, n), x, config)
  carried, _, _ = agent.ac_step(params, lstm_state, x, config)
  for got, zero, kept in zip(new_state, from_zero, carried):
    np.testing.assert_allclose(got[0], zero[0], atol=1e-5)
    np.testing.assert_allclose(got[2], zero[2], atol=1e-5)
    np.testing.assert_allclose(got[1], kept[1], atol=1e-5)
    np.testing.assert_allclose(got[3], kept[3], atol=1e-5)
    assert not np.allclose(got[1], zero[1])


def test_entropy_weight_schedule():
  """Constant (DIAMOND) by default; with a decay, linear from entropy_weight to entropy_weight_final, then flat;
  and the loss's entropy term uses the weight of the update it is given."""
  c = ac_config(7)
  assert float(agent.entropy_weight(c, 0)) == float(agent.entropy_weight(c, 10_000)) == pytest.approx(
      c.ac.entropy_weight)
  m = config_lib.to_config_dict(c)
  m.ac.entropy_weight, m.ac.entropy_weight_final, m.ac.entropy_decay_updates = 0.03, 0.006, 400
  d = config_lib.freeze(m)
  got = [float(agent.entropy_weight(d, u)) for u in (0, 100, 200, 400, 1_000)]
  np.testing.assert_allclose(got, [0.03, 0.024, 0.018, 0.006, 0.006], rtol=1e-6)
  ac_params = _ac_params(d, random_heads=True)
  traj = jax.jit(imagination.imagine, static_argnames=("config", "wm"))(
      stub_params(end_logit=0.0), ac_params, make_start(jax.random.key(1), 3), jax.random.key(2), d, STUB_WM)
  _, m100 = agent.actor_critic_loss(ac_params, traj, d, 100)
  np.testing.assert_allclose(m100["loss_entropy"], -0.024 * np.mean(np.asarray(traj.entropies)), rtol=1e-4)
  assert float(m100["entropy_weight"]) == pytest.approx(0.024)
