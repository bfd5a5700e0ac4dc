"""jedi_jax/dream.py: stepping the world model one action at a time is `imagine`'s rollout, step for step."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import dream

from test_imagination import STUB_WM, _imagine, ac_config, init_ac_params, make_start, stub_params


@functools.partial(jax.jit, static_argnames=("config",))
def _play(wm_params, ac_params, start, key, forced, use_policy, config):
  """`config.ac.horizon` dream steps: the policy's action where `use_policy[t, b]`, else `forced[t, b]`."""
  d = dream.start(wm_params, ac_params, start, config, STUB_WM)

  def one(d, inputs):
    t, action, policy = inputs
    d, out = dream.step(wm_params, ac_params, d, action, t, key, config, policy, STUB_WM)
    return d, (out, d.cond[:, -1])
  _, (out, shown) = jax.lax.scan(one, d, (jnp.arange(config.ac.horizon), forced, use_policy))
  return out, shown


@pytest.mark.after_suite
def test_play_is_imagine_step_for_step_and_keys_drive_the_model():
  """With the policy choosing, a played rollout is imagine's trajectory (states, actions, rewards, ends and
  the restarts after ends: p(end) = 0.5 here). With keyboard actions instead, the stub world model rewards
  action 1 (+1) and nothing else. One compiled program serves both (the actions are inputs)."""
  # test_imagination's configuration and start (so `_imagine` is the program its tests compile).
  config = ac_config(7)
  wm_params, ac_params = stub_params(end_logit=0.0), init_ac_params(config)
  start, key = make_start(jax.random.key(1), 3), jax.random.key(3)
  traj = _imagine(wm_params, ac_params, start, key, config, STUB_WM)
  h = config.ac.horizon
  out, shown = _play(wm_params, ac_params, start, key, jnp.zeros((h, 3), jnp.int32), jnp.ones((h, 3), bool),
                     config)
  assert 0 < int(traj.ends.sum()) < traj.ends.size  # restarts happen, and not at every step
  np.testing.assert_array_equal(out.action, traj.actions)
  np.testing.assert_array_equal(out.reward, traj.rewards)
  np.testing.assert_array_equal(out.end, traj.ends)
  np.testing.assert_allclose(shown, traj.states[1:], atol=1e-6)

  forced = jnp.tile(jnp.array([1, 0, 2, 1, 1, 0, 2], jnp.int32)[:, None], (1, 3))
  out, shown = _play(wm_params, ac_params, start, key, forced, jnp.zeros((h, 3), bool), config)
  np.testing.assert_array_equal(out.action, forced)
  np.testing.assert_array_equal(out.reward, np.where(forced == 1, 1.0, 0.0))
  t, b = np.nonzero(np.asarray(out.end))  # after an end, the start segment's last state is shown again
  np.testing.assert_allclose(np.asarray(shown)[t, b], np.asarray(traj.states)[0, b], atol=1e-6)
