"""The viewing-only decoder: it cannot touch the world model, it learns, and the open-loop rollout is the
autoregressive sampler written as a scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import decoder as dec_lib
from jedi_jax import world_model

from conftest import frozen_tiny_config


def _setup():
  cfg = frozen_tiny_config()
  # Jitted: run op by op, the init and the gradient below compile hundreds of small programs.
  wm_params = jax.jit(world_model.init_world_model, static_argnums=(0, 1))(cfg, 4, jax.random.PRNGKey(0))
  obs = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 7, 64, 64, 3), dtype=np.uint8))
  return cfg, wm_params, obs


@pytest.mark.after_suite
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


@pytest.mark.after_suite  # ~20 s of compiling the pixel sampler
def test_open_loop_frames_of_the_pixel_baseline_show_its_own_frames():
  """`open_loop_frames` for wm.kind=diamond: no decoder; the real frames are consecutive replay frames of one
  episode (frame i is filled with the value i), the encoded view is those frames exactly, and a replay without
  a long enough episode is one clear error."""
  from jedi_jax import replay as replay_lib
  cfg = frozen_tiny_config(**{"wm.kind": "diamond"})
  wm_params = jax.jit(world_model.init_world_model, static_argnums=(0, 1))(cfg, 3, jax.random.PRNGKey(0))
  add = jax.jit(replay_lib.add)

  def replay(episode_len, steps=24):
    r = replay_lib.init_replay(1, 64)
    for i in range(steps):
      r = add(r, jnp.full((1, 64, 64, 3), i, jnp.uint8), jnp.array([i % 3]), jnp.zeros(1),
              jnp.array([i % episode_len == episode_len - 1]), jnp.array([False]), jnp.array([True]))
    return r

  horizon = 3
  out = dec_lib.open_loop_frames(wm_params, replay(24), jax.random.PRNGKey(1), cfg, horizon=horizon, examples=2)
  real = np.asarray(out["real"])
  assert {k: v.shape for k, v in out.items()} == {k: (2, horizon, 64, 64, 3) for k in ("real", "recon", "dream")}
  assert all(v.dtype == np.uint8 for v in out.values())
  assert (np.diff(real.astype(int), axis=1) == 1).all()  # consecutive frames of the episode
  np.testing.assert_array_equal(out["recon"], real)
  try:
    dec_lib.open_loop_frames(wm_params, replay(3), jax.random.PRNGKey(1), cfg, horizon=horizon, examples=2)
  except ValueError as e:
    assert str(e) == f"the replay holds no unpadded segment of {cfg.wm.num_cond + horizon} frames"
  else:
    raise AssertionError("no error for a replay of 3-step episodes")
