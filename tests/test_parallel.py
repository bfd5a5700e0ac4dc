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

from conftest import FEWEST_STEPS, SMALLEST_NETS, tiny_config

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
  """Single-device reference of `parallel.shard_local_grads`: a sequential loop over the shards (`lax.map`,
  one traced body), each with the key folded with its shard index, and the mean of their (grads, metrics)."""
  def wrapped(*args):
    *replicated, key, batch_size, config = args
    outs = jax.lax.map(lambda i: local_fn(*replicated, jax.random.fold_in(key, i), batch_size // num_shards,
                                          config), jnp.arange(num_shards))
    return jax.tree.map(lambda x: x.mean(0), outs)
  return wrapped


@pytest.mark.after_suite
def test_sharded_actor_critic_step_equals_single_device_reference():
  """Two full actor-critic update steps (sampling, imagination, gradient, AdamW) on the mesh equal the
  single-device reference. (The world-model step goes through the same wrapper; its gradient is checked
  below.)"""
  config = tiny_config(**SMALLEST_NETS, **FEWEST_STEPS)
  config.optim.batch_size = 8  # global batch: 2 per device
  cfg, state = _filled_state(config)
  mesh = parallel.make_mesh(4)
  local = train.actor_critic_local
  sharded = jax.jit(functools.partial(train.actor_critic_step, config=cfg,
                                      local_fn=parallel.shard_local_grads(local, mesh)))
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


def _regression_grads(params, data, key, batch_size, config):
  """A local gradient function of the library's signature: `batch_size` rows of `data` drawn with `key`,
  the gradient of their mean squared error under a linear model."""
  del config
  rows = jax.random.randint(key, (batch_size,), 0, data["x"].shape[0])
  x, y = data["x"][rows], data["y"][rows]
  loss, grads = jax.value_and_grad(lambda p: jnp.mean((x @ p["w"] + p["b"] - y) ** 2))(params)
  return grads, {"loss": loss}


def test_gradients_are_averaged_not_summed():
  """The mesh gradient equals the mean of the per-shard gradients, each shard drawing its own rows with the
  key folded with its index (the shard_map psum trap). The world-model and actor-critic gradients go
  through the same wrapper: the step above and the data-parallel run of test_train.py."""
  rng = np.random.default_rng(0)
  data = {"x": jnp.asarray(rng.normal(size=(64, 3)), jnp.float32),
          "y": jnp.asarray(rng.normal(size=(64,)), jnp.float32)}
  params = {"w": jnp.asarray([0.5, -1.0, 2.0]), "b": jnp.asarray(0.3)}
  key = jax.random.PRNGKey(3)
  mesh = parallel.make_mesh(4)
  g_mesh, m_mesh = jax.jit(lambda p, d, k: parallel.shard_local_grads(_regression_grads, mesh)(p, d, k, 8, None))(
      *parallel.replicate((params, data, key), mesh))
  shards = [_regression_grads(params, data, jax.random.fold_in(key, i), 2, None) for i in range(4)]
  mean = jax.tree.map(lambda *g: sum(g) / 4, *shards)
  total = jax.tree.map(lambda *g: sum(g), *shards)
  assert _max_rel_diff((g_mesh, m_mesh), mean) < 1e-5
  assert _max_rel_diff(g_mesh, total[0]) > 0.5
  assert _max_rel_diff(g_mesh, shards[0][0]) > 1e-3  # the shards drew different rows


def test_batch_must_divide_devices():
  mesh = parallel.make_mesh(4)
  with pytest.raises(ValueError, match="multiple of the 4 devices"):
    parallel.per_device_batch(6, mesh)


def test_sharded_collection_is_each_device_collecting_its_own_envs():
  """Data-parallel collection with a pure-JAX env (`parallel.sharded_collect_rows`, 4 devices, 8 Catch envs):
  equal, bit for bit, to 4 one-device collections, device d on envs 2d, 2d+1 with its action keys folded
  with d; the carried key and env-step count are a one-device collection's, the stats the devices' sum."""
  from jedi_jax import envs
  config = config_lib.freeze(tiny_config(**{"game": "Catch", "env.backend": "jax", "env.num_envs": 8,
                                            "schedule.steps_per_epoch": 96, **SMALLEST_NETS, **FEWEST_STEPS}))
  mesh = parallel.make_mesh(4)
  env = envs.make_env("Catch", 8, 3, train=True, backend="jax")
  env_state, _ = env.functional("xla")
  group_step = env.group_step(4)
  state = train.init_train_state(config, env.num_actions, jax.random.PRNGKey(1), None, env_state.obs)
  small = state.replace(replay=None, wm_opt_state=None, ac_opt_state=None)
  steps, eps = 8 * 12, 0.5  # 12 steps per env: a Catch game (10 rows) ends and restarts in each
  sharded = jax.jit(lambda s, e: parallel.sharded_collect_rows(s, e, steps, eps, group_step, config, mesh))(
      parallel.replicate(small, mesh), env_state)

  one_device = jax.jit(lambda s, d: train.collect_rows(s, steps // 4, eps, group_step, config, fold=d))
  groups = []
  for d in range(4):
    part = lambda x: x[2 * d:2 * d + 2]
    s_d = small.replace(obs=part(small.obs), is_first=part(small.is_first),
                        policy_state=jax.tree.map(part, small.policy_state),
                        env_state=jax.tree.map(part, env_state))
    groups.append(one_device(s_d, jnp.int32(d)))
  s_out, e_out, rows, stats = sharded
  cat = lambda xs, axis: np.concatenate([np.asarray(x) for x in xs], axis)
  for field in train.Row._fields:
    np.testing.assert_array_equal(np.asarray(getattr(rows, field)), cat([getattr(g[1], field) for g in groups], 1))
  assert not np.all(np.asarray(rows.act)[:, 0] == np.asarray(rows.act)[:, 2])  # devices draw their own actions
  for a, *bs in zip(jax.tree.leaves(e_out), *(jax.tree.leaves(g[0].env_state) for g in groups)):
    np.testing.assert_array_equal(np.asarray(a), cat(bs, 0))
  np.testing.assert_array_equal(np.asarray(s_out.obs), cat([g[0].obs for g in groups], 0))
  np.testing.assert_array_equal(np.asarray(s_out.key), np.asarray(groups[0][0].key))
  assert int(s_out.env_steps) == steps
  for field in train.CollectStats._fields:
    np.testing.assert_allclose(np.asarray(getattr(stats, field)), sum(np.asarray(getattr(g[2], field)) for g in groups),
                               err_msg=field)
  assert int(stats.games_finished) > 0
  env.close()
