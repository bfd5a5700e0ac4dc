"""Data parallelism on 4 fake CPU devices against single-device references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import config as config_lib
from jedi_jax import parallel
from jedi_jax import replay as replay_lib
from jedi_jax import train

from conftest import tiny_config

pytestmark = pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 (fake) devices")


def _filled_state(config, steps=120):
  cfg = config_lib.freeze(config)
  state = train.init_train_state(cfg, 4, jax.random.PRNGKey(0), None, np.zeros((1, 64, 64, 3), np.uint8))
  rng = np.random.default_rng(0)
  r = state.replay
  add = jax.jit(replay_lib.add)
  for i in range(steps):
    r = add(r, jnp.asarray(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)), jnp.array([i % 4]),
            jnp.array([float(i % 7 == 0) - float(i % 11 == 0)]), jnp.array([i % 40 == 39]), jnp.array([False]),
            jnp.array([True]))
  return cfg, state.replace(replay=r)


def _max_rel_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-12))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _reference_local_grads(local_fn, num_shards: int):
  """Single-device reference of `parallel.shard_local_grads`: a Python loop over the shards, each with the
  key folded with its shard index, and the mean of their (grads, metrics)."""
  def wrapped(*args):
    *replicated, key, batch_size, config = args
    outs = [local_fn(*replicated, jax.random.fold_in(key, i), batch_size // num_shards, config)
            for i in range(num_shards)]
    return jax.tree.map(lambda *xs: sum(xs) / num_shards, *outs)
  return wrapped


def test_sharded_actor_critic_step_equals_single_device_reference():
  """Two full actor-critic update steps (sampling, imagination, gradient, AdamW) on the mesh equal the
  single-device reference. (The world-model step goes through the same wrapper; its gradient is checked
  below.)"""
  config = tiny_config()
  config.optim.batch_size = 8  # global batch: 2 per device
  cfg, state = _filled_state(config)
  mesh = parallel.make_mesh(4)
  local = train.actor_critic_local
  sharded = jax.jit(functools.partial(train.actor_critic_step, config=cfg,
                                      local_fn=parallel.shard_local_grads(local, mesh, 2)))
  reference = jax.jit(functools.partial(train.actor_critic_step, config=cfg,
                                        local_fn=_reference_local_grads(local, 4)))
  s_mesh, _ = sharded(parallel.replicate(state, mesh))  # step 0 has lr 0 (linear warm-up from 0)
  s_mesh, m_mesh = sharded(s_mesh)
  s_ref, m_ref = reference(reference(state)[0])
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(s_ref.ac_params), jax.tree.leaves(state.ac_params)))
  assert moved > 0  # the steps did something
  assert _max_rel_diff(s_mesh.ac_params, s_ref.ac_params) < 1e-5
  assert abs(float(m_mesh["loss"]) - float(m_ref["loss"])) < 1e-5 * (1 + abs(float(m_ref["loss"])))
  assert abs(float(m_mesh["grad_norm"]) - float(m_ref["grad_norm"])) < 1e-4 * (1 + float(m_ref["grad_norm"]))


def test_gradients_are_averaged_not_summed():
  """The mesh gradient equals the mean of the per-shard gradients (the shard_map psum trap)."""
  config = tiny_config()
  config.optim.batch_size = 8
  cfg, state = _filled_state(config)
  mesh = parallel.make_mesh(4)
  sharded = jax.jit(lambda p, r, k: parallel.shard_local_grads(train.world_model_local, mesh, 1)(p, r, k, 8, cfg))
  g_mesh, _ = sharded(*parallel.replicate((state.wm_params, state.replay, state.key), mesh))
  shard = jax.jit(lambda i: train.world_model_local(
      state.wm_params, state.replay, jax.random.fold_in(state.key, i), 2, cfg)[0])  # one compile, 4 calls
  shards = [shard(i) for i in range(4)]
  mean = jax.tree.map(lambda *g: sum(g) / 4, *shards)
  total = jax.tree.map(lambda *g: sum(g), *shards)
  assert _max_rel_diff(g_mesh, mean) < 1e-4
  assert _max_rel_diff(g_mesh, total) > 0.5


def test_batch_must_divide_devices():
  mesh = parallel.make_mesh(4)
  with pytest.raises(ValueError, match="multiple of the 4 devices"):
    parallel.per_device_batch(6, mesh)
