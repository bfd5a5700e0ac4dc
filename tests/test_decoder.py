"""The viewing-only decoder: it cannot touch the world model, it learns, and the open-loop rollout is the
autoregressive sampler written as a scan."""

import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax import decoder as dec_lib
from jedi_jax import world_model

from conftest import frozen_tiny_config


def _setup():
  cfg = frozen_tiny_config()
  # Jitted: run op by op, the init and the gradient below compile hundreds of small programs.
  wm_params = jax.jit(world_model.init_world_model, static_argnums=(0, 1))(cfg, 4, jax.random.PRNGKey(0))
  obs = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 7, 64, 64, 3), dtype=np.uint8))
  return cfg, wm_params, obs


def test_decoder_gradient_never_reaches_the_world_model_and_it_learns():
  cfg, wm_params, obs = _setup()
  frames = obs[:1, 0]
  dec_params = dec_lib.init_decoder(jax.random.PRNGKey(1), world_model.state_shape(cfg))
  g_wm = jax.jit(jax.grad(lambda w: dec_lib.decoder_loss(dec_params, w, frames, cfg)))(wm_params)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(g_wm))

  opt = dec_lib.decoder_optimizer(3e-3)
  step = jax.jit(lambda p, o: dec_lib.decoder_update(p, o, wm_params, frames, cfg, opt))
  opt_state = opt.init(dec_params)
  losses = []
  for _ in range(20):
    dec_params, opt_state, loss = step(dec_params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.85 * losses[0]
  img = jax.eval_shape(lambda p, w: dec_lib.decode(p, world_model.encode(w, frames, cfg)), dec_params, wm_params)
  assert img.shape == frames.shape and img.dtype == jnp.uint8


def test_open_loop_rollout_matches_a_python_loop_of_sample_next():
  cfg, wm_params, obs = _setup()
  k = cfg.wm.num_cond
  horizon = obs.shape[1] - k
  actions = jnp.asarray(np.random.default_rng(1).integers(0, 4, (2, obs.shape[1] - 1)), jnp.int32)
  key = jax.random.PRNGKey(3)
  got = dec_lib.open_loop_rollout(wm_params, obs, actions, key, cfg)
  assert got.shape == (2, horizon) + world_model.state_shape(cfg)

  window = jax.jit(world_model.encode, static_argnums=2)(wm_params, obs[:, :k], cfg)
  sample_next = jax.jit(world_model.sample_next, static_argnums=4)
  for t, kt in enumerate(jax.random.split(key, horizon)):
    nxt = sample_next(wm_params, window, actions[:, t:t + k], kt, cfg)
    np.testing.assert_allclose(np.asarray(got[:, t]), np.asarray(nxt), atol=1e-5)
    window = jnp.concatenate([window[:, 1:], nxt[:, None]], axis=1)
