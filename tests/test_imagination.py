"""Tests of the imagined rollout (jedi_jax/imagination.py), on a stub world model and on the real one."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import agent
from jedi_jax import imagination
from jedi_jax.replay import Segment

from conftest import frozen_tiny_config

STUB_SHAPE = (4, 4, 2)
REWARDED_ACTION = 1
NUM_ACTIONS = 3


# --- A stub world model with the signatures of imagination.WorldModelFns -------------------------------
# Every output depends on the params, so a missing stop_gradient would show up as a non-zero gradient.

def stub_params(end_logit: float = -2.0):
  return {"w": jnp.ones(()), "end_logit": jnp.asarray(end_logit)}


def stub_encode(params, obs, config, frame_mask=None):
  """Subsampled frame in [-1, 1]; padded frames (frame_mask False) are 0, as the real encoder's input."""
  del config
  x = obs[..., ::16, ::16, :2].astype(jnp.float32) / 255.0 * 2 - 1
  if frame_mask is not None:
    x = jnp.where(frame_mask[..., None, None, None], x, 0.0)
  return x * params["w"]


def stub_sample_next(params, cond, cond_actions, key, config):
  del config
  noise = jax.random.normal(key, cond.shape[:1] + cond.shape[2:])
  shift = 0.05 * cond_actions[:, -1].astype(jnp.float32)[:, None, None, None]
  return 0.9 * cond[:, -1] * params["w"] + 0.1 * noise + shift


def stub_rew_end_initial_state(config, batch_size):
  del config
  return jnp.zeros((batch_size, 2))


def stub_rew_end_step(params, lstm_state, state, action, next_state, config):
  """Reward +1 (class 2) for REWARDED_ACTION, 0 (class 1) otherwise; end with p = sigmoid(end_logit)."""
  del config
  lstm_state = 0.5 * lstm_state + jnp.mean(next_state - state, axis=(1, 2, 3))[:, None] * params["w"]
  good = (action == REWARDED_ACTION)[:, None]
  reward_logits = jnp.where(good, jnp.array([0.0, 0.0, 20.0]), jnp.array([0.0, 20.0, 0.0])) * params["w"]
  end_logits = jnp.stack([jnp.zeros_like(action, jnp.float32),
                          jnp.full(action.shape, 1.0) * params["end_logit"]], axis=-1)
  return lstm_state, reward_logits, end_logits


STUB_WM = imagination.WorldModelFns(
    encode=stub_encode, sample_next=stub_sample_next, rew_end_initial_state=stub_rew_end_initial_state,
    rew_end_step=stub_rew_end_step, state_shape=lambda config: STUB_SHAPE)


def ac_config(horizon: int = 5, kind: str = "jedi", **ac_overrides):
  """`conftest.tiny_config` with imagination `horizon`, of `kind`, frozen; `ac_overrides` patch config.ac."""
  return frozen_tiny_config(**{"ac.horizon": horizon, "wm.kind": kind},
                            **{f"ac.{k}": v for k, v in ac_overrides.items()})


def make_start(key, batch_size: int, num_cond: int = 4, num_actions: int = NUM_ACTIONS, pad_first: bool = True):
  """A Segment of T = num_cond steps; the first segment is padded at its first step when pad_first."""
  k_obs, k_act = jax.random.split(key)
  obs = jax.random.randint(k_obs, (batch_size, num_cond + 1, 64, 64, 3), 0, 256).astype(jnp.uint8)
  act = jax.random.randint(k_act, (batch_size, num_cond), 0, num_actions).astype(jnp.int32)
  mask = jnp.ones((batch_size, num_cond), bool)
  if pad_first:
    mask = mask.at[0, 0].set(False)
    obs = obs.at[0, 0].set(0)
    act = act.at[0, 0].set(0)
  return Segment(obs=obs, act=act, rew=jnp.zeros((batch_size, num_cond)), end=jnp.zeros((batch_size, num_cond), bool),
                 trunc=jnp.zeros((batch_size, num_cond), bool), mask=mask)


@functools.partial(jax.jit, static_argnames=("config", "wm"))
def _imagine(wm_params, ac_params, start, key, config, wm):
  return imagination.imagine(wm_params, ac_params, start, key, config, wm)


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames=("wm",))
def _init_actor_critic(config, num_actions, key, wm=None):
  return agent.init_actor_critic(config, num_actions, key, wm=wm)


def init_ac_params(config, seed=0, num_actions=NUM_ACTIONS, wm=STUB_WM):
  """Fresh (mutable) actor-critic params; jitted init (eager Flax init is slow on a busy CPU)."""
  return jax.tree.map(lambda x: x, _init_actor_critic(config, num_actions, jax.random.key(seed), wm=wm))



@pytest.mark.parametrize("batch_size,horizon", [(1, 3), (3, 7)])
def test_imagine_shapes(batch_size, horizon):
  config = ac_config(horizon)
  traj = _imagine(stub_params(), init_ac_params(config), make_start(jax.random.key(1), batch_size),
                  jax.random.key(2), config, STUB_WM)
  h, b = horizon, batch_size
  assert traj.states.shape == (h + 1, b, *STUB_SHAPE) and traj.states.dtype == jnp.float32
  assert traj.actions.shape == (h, b) and traj.actions.dtype == jnp.int32
  for name in ("log_probs", "entropies", "rewards", "ends"):
    assert getattr(traj, name).shape == (h, b), name
  assert traj.values.shape == (h + 1, b) and traj.is_first.shape == (h + 1, b)
  assert traj.ends.dtype == jnp.bool_
  assert all(x.shape == (b, config.ac.lstm_dim) for x in traj.ac_state0)
  assert set(np.unique(np.asarray(traj.rewards))) <= {-1.0, 0.0, 1.0}
  assert np.all((traj.actions >= 0) & (traj.actions < NUM_ACTIONS))
  # The first step starts an episode; every end restarts one.
  np.testing.assert_array_equal(traj.is_first[0], True)
  np.testing.assert_array_equal(traj.is_first[1:], traj.ends)
  # Zero-initialised heads: uniform policy, zero values.
  np.testing.assert_allclose(traj.log_probs, -np.log(NUM_ACTIONS), atol=1e-6)
  np.testing.assert_allclose(traj.values, 0.0, atol=1e-6)


def test_imagine_is_deterministic_in_key():
  config = ac_config(7)
  wm_params, ac_params, start = stub_params(), init_ac_params(config), make_start(jax.random.key(1), 3)
  a = _imagine(wm_params, ac_params, start, jax.random.key(7), config, STUB_WM)
  b = _imagine(wm_params, ac_params, start, jax.random.key(7), config, STUB_WM)
  c = _imagine(wm_params, ac_params, start, jax.random.key(8), config, STUB_WM)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a.states, c.states)
  assert not np.array_equal(a.actions, c.actions)


def test_rewards_follow_the_model_and_ends_restart_from_the_start():
  config = ac_config(7)
  wm_params = stub_params(end_logit=0.0)   # p(end) = 0.5: many restarts
  start = make_start(jax.random.key(1), 3)
  traj = _imagine(wm_params, init_ac_params(config), start, jax.random.key(3), config, STUB_WM)
  np.testing.assert_array_equal(traj.rewards, np.where(traj.actions == REWARDED_ACTION, 1.0, 0.0))
  ends = np.asarray(traj.ends)
  assert 0 < ends.sum() < ends.size
  t, b = np.nonzero(ends)
  np.testing.assert_array_equal(np.asarray(traj.states)[t + 1, b], np.asarray(traj.states)[0, b])


def test_start_encoding_masks_padding_and_burns_in():
  config = ac_config(7)
  start = make_start(jax.random.key(1), 3)
  cond, cond_actions = imagination.encode_start(stub_params(), start, config, STUB_WM)
  assert cond.shape == (3, 4, *STUB_SHAPE) and cond_actions.shape == (3, 4)
  np.testing.assert_array_equal(cond[0, 0], 0.0)
  np.testing.assert_allclose(cond[1], stub_encode(stub_params(), start.obs[1, :4], config), atol=1e-6)
  # The trajectory's first state is the newest start state.
  traj = _imagine(stub_params(), init_ac_params(config), start, jax.random.key(2), config, STUB_WM)
  np.testing.assert_allclose(traj.states[0], cond[:, -1], atol=1e-6)
  # Burn-in moved the policy LSTM off zero.
  assert np.abs(np.asarray(traj.ac_state0[1])).sum() > 0


def test_policy_recomputation_matches_imagination():
  config = ac_config(7)
  ac_params = init_ac_params(config)
  # Non-zero heads so that logits and values depend on the LSTM state.
  keys = jax.random.split(jax.random.key(5), 2)
  ac_params["actor_linear"]["kernel"] = jax.random.normal(keys[0], ac_params["actor_linear"]["kernel"].shape)
  ac_params["critic_linear"]["kernel"] = jax.random.normal(keys[1], ac_params["critic_linear"]["kernel"].shape)
  traj = _imagine(stub_params(end_logit=0.0), ac_params, make_start(jax.random.key(1), 3), jax.random.key(4),
                  config, STUB_WM)
  logits, values = imagination.policy_over_trajectory(ac_params, traj, config)
  log_prob, entropy = imagination.log_prob_and_entropy(logits[:-1], traj.actions)
  np.testing.assert_allclose(values, traj.values, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(log_prob, traj.log_probs, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(entropy, traj.entropies, rtol=1e-5, atol=1e-5)


# --- With the real world model (debug config) -----------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["jedi", pytest.param("diamond", marks=pytest.mark.after_suite)])
def test_imagine_with_real_world_model(kind):
  """imagine + loss on the real debug-size world model: shapes, and no gradient into the world model."""
  world_model = pytest.importorskip("jedi_jax.world_model")
  config = ac_config(horizon=3, kind=kind)
  num_actions = 4
  # Random parameters of the right shapes: compiling the real init costs more than the test itself.
  shapes = jax.eval_shape(functools.partial(world_model.init_world_model, config, num_actions), jax.random.key(0))
  rng = np.random.default_rng(0)
  wm_params = jax.tree.map(lambda x: jnp.asarray(0.1 * rng.standard_normal(x.shape), x.dtype), shapes)
  ac_params = init_ac_params(config, seed=1, num_actions=num_actions, wm=None)
  start = make_start(jax.random.key(2), 2, num_actions=num_actions)
  s = tuple(world_model.state_shape(config))
  assert s == ((8, 8, config.wm.encoder_channels[-1]) if kind == "jedi" else (64, 64, 3))

  def loss(ac_params, wm_params):
    traj = imagination.imagine(wm_params, ac_params, start, jax.random.key(3), config)
    return agent.actor_critic_loss(ac_params, traj, config)[0], traj

  (_, traj), (g_ac, g_wm) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(ac_params, wm_params)
  assert traj.states.shape == (4, 2, *s) and traj.actions.shape == (3, 2) and traj.values.shape == (4, 2)
  assert np.all(np.isfinite(traj.states))
  assert set(np.unique(np.asarray(traj.rewards))) <= {-1.0, 0.0, 1.0}
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g_wm))
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g_ac))
