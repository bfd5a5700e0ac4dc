"""Data parallelism over a device mesh, multi-host start-up, and many seeds in one program.

Data parallel: a 1-D `jax.sharding.Mesh` over all devices (axis "data"). Params, optimiser states and the
replay are replicated; each device samples its own part of the global batch from its replay copy with the
step key folded with its device index, computes its gradient, and the gradients are averaged. We use
`jax.shard_map` (explicit per-device code) rather than jit with sharding annotations because the per-device
sampling *is* the batch sharding: nothing needs to be partitioned by the compiler, and the collective is one
visible mean.

Trap (measured on this stack; BUILD_NOTES.md): with shard_map's varying-axes checking on (the default), `jax.grad` of a
device-local loss with respect to a replicated parameter already sums the gradient over devices (the
transpose of the implicit `pvary` is a `psum`), so a further `pmean` is a no-op and the gradient is N x too
large. We turn the checker off (`check_vma=False`: our scans carry zero-initialised LSTM states that it
rejects), which makes the gradient device-local, and average it with one `pmean`;
`tests/test_parallel.py` compares against a single-device computation and against the summed gradient.

A data-parallel epoch runs as two calls: collection, then the sharded updates, which first append the
collected rows to the replicated replay. Where the collection runs depends on the env:
  * a pure-JAX env (`envs.is_pure`) whose E envs split evenly over the D devices: inside `shard_map`, each
    device steps its own E / D envs with its own part of the acting state (`sharded_collect_rows`), and
    draws its actions with the step key folded with its index;
  * envpool (and a pure-JAX env with E not a multiple of D, or several processes): on device 0
    (`train.collect_rows`). envpool's XLA call inside `shard_map` or a partitioned jit would step every env
    once per device.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jedi_jax import logs
from jedi_jax import train

AXIS = "data"


def initialize_multihost(coordinator_address: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None) -> None:
  """`jax.distributed.initialize` with the given coordinator ("HOST:PORT"), process count and index; those left
  None are auto-detected (TPU VM, SLURM, Open MPI). Call before any other JAX call. Each process then runs its
  own envs; process 0 writes metrics and results. On CPU the processes' collectives go through gloo (jax
  0.10.2's default `jax_cpu_collectives_implementation`)."""
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def is_main_process() -> bool:
  return jax.process_index() == 0


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (0: all, across every host)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f"parallel.num_devices={num_devices} but only {len(devices)} devices are visible")
    devices = devices[:num_devices]
  return Mesh(np.array(devices), (AXIS,))


def per_device_batch(global_batch: int, mesh: Mesh) -> int:
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f"optim.batch_size={global_batch} (the global batch) must be a multiple of the "
                     f"{n} devices of the mesh")
  return global_batch // n


def replicate(tree, mesh: Mesh):
  """Puts every leaf on every device of the mesh. With several processes every process must hold the same
  value; each contributes its own copy (`device_put` refuses a committed one-device array for a mesh that spans
  processes)."""
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) and x.sharding == sharding
                      else jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def local(tree):
  """This process's copy of every leaf replicated over a mesh that spans processes (what the host reads, and
  what acts on one device); other leaves unchanged."""
  return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) and not x.is_fully_addressable
                      else x, tree)


def shard_local_grads(local_fn: Callable, mesh: Mesh) -> Callable:
  """Wraps a per-device gradient function for the mesh.

  `local_fn(*params_args, replay, key, batch_size, config) -> (grads, metrics)` computes the gradient of
  the mean loss over `batch_size` examples. The wrapper has the same signature with `batch_size` the
  *global* batch: each device runs `local_fn` on `batch_size / num_devices` examples with key
  `fold_in(key, device_index)`; grads and metrics are averaged over devices and come back replicated.
  """
  def wrapped(*args):
    *replicated, key, batch_size, config = args
    local_batch = per_device_batch(batch_size, mesh)

    def per_device(replicated, key):
      key = jax.random.fold_in(key, jax.lax.axis_index(AXIS))
      grads, metrics = local_fn(*replicated, key, local_batch, config)
      return jax.lax.pmean((grads, metrics), AXIS)

    # check_vma=False: the library's scans start from unvarying zero carries (LSTM states) that become
    # device-varying, which the varying-axes checker rejects. Without it, the gradient of a replicated
    # param is the device-local one, and the explicit pmean averages it (tests/test_parallel.py).
    return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P()), out_specs=(P(), P()),
                         check_vma=False)(tuple(replicated), key)

  return wrapped


# ------------------------------------------------------------------------------------------------
# The data-parallel epoch: collect on device 0, update on the mesh.
# ------------------------------------------------------------------------------------------------

def dp_update_epochs(state: train.TrainState, rows: train.Row, plan: train.EpochPlan, config, mesh: Mesh
                     ) -> tuple[train.TrainState, train.CallMetrics]:
  """Appends the collected rows to the (replicated) replay, then one epoch's updates on the mesh. `rows` has
  one epoch's shape [steps_per_epoch / E, E, ...] in every epoch, so that one program serves them all; the
  first `plan.collect_steps / E` are real (none in the final update-only epochs)."""
  num_rows = plan.collect_steps // rows.obs.shape[1]
  state = state.replace(replay=train.add_rows(state.replay, rows, num_rows))
  wm_local = shard_local_grads(train.world_model_local, mesh)
  ac_local = shard_local_grads(train.actor_critic_local, mesh)
  return train.update_phase(
      state, plan, config,
      wm_update=lambda s, n, c: train.update_world_model(s, n, c, local_fn=wm_local),
      ac_update=lambda s, n, c: train.update_actor_critic(s, n, c, local_fn=ac_local))


def _acting_specs(state: train.TrainState) -> train.TrainState:
  """Partition specs of an acting state (a TrainState without replay, optimiser or env states): each env's
  frame, first flag and policy LSTM state split over the devices by env; params, key and counters
  replicated."""
  specs = jax.tree.map(lambda _: P(), state)
  return specs.replace(obs=P(AXIS), is_first=P(AXIS), policy_state=jax.tree.map(lambda _: P(AXIS), state.policy_state))


def sharded_collect_rows(state: train.TrainState, env_state, num_steps: int, epsilon: float, env_step: Callable,
                         config, mesh: Mesh):
  """`train.collect_rows` with every device stepping its own envs (a pure-JAX env).

  Args:
    state: the acting state (`replay`, optimiser and env states None), E envs.
    env_state: the E envs' `EnvState` (leaves [E, ...]); device d steps envs d*E/D .. (d+1)*E/D - 1.
    num_steps: agent steps in all (num_steps / E vector steps, as in `collect_rows`).
    env_step: the step of one group of E / D envs (`AtariBatchEnv.group_step(D)`).

  Returns:
    (state, env_state, rows [T, E, ...] split over the devices by env, the collection stats summed over the
    devices). The carried key and the env-step count are those of a one-device collection.
  """
  num_devices = mesh.devices.size
  specs, env_specs = _acting_specs(state), jax.tree.map(lambda _: P(AXIS), env_state)

  def per_device(state, env_state):
    steps_before = state.env_steps
    state, rows, stats = train.collect_rows(state.replace(env_state=env_state), num_steps // num_devices, epsilon,
                                            env_step, config, fold=jax.lax.axis_index(AXIS))
    state = state.replace(env_steps=steps_before + jax.lax.psum(state.env_steps - steps_before, AXIS))
    return state.replace(env_state=None), state.env_state, rows, jax.lax.psum(stats, AXIS)

  return jax.shard_map(per_device, mesh=mesh, in_specs=(specs, env_specs),
                       out_specs=(specs, env_specs, P(None, AXIS), P()), check_vma=False)(state, env_state)


class DataParallelEpoch:
  """Host-side driver of data-parallel epochs: a single-device collect program and a mesh update program,
  each compiled once (on first use, reported through `log` like the loop's other programs).

  `state` lives replicated on the mesh without its env handle. With `group_step` (a pure-JAX env, one group
  of envs per device) the collect program is `sharded_collect_rows` on the mesh; otherwise it gets device-0
  copies of what acting needs. Its rows then move to the mesh.
  """

  def __init__(self, config, mesh: Mesh, env_step: Callable, log=print, group_step: Callable | None = None):
    self.mesh = mesh
    self.device0 = next(d for d in mesh.devices.flat if d.process_index == jax.process_index())  # collects
    self.log = log
    self.compile_seconds = 0.0   # spent in the last call
    self.sharded = group_step is not None
    steps, epsilon = config.schedule.steps_per_epoch, config.ac.epsilon_collect
    if self.sharded:
      log(f"data-parallel collection: each of the {mesh.devices.size} devices steps its own "
          f"{config.env.num_envs // mesh.devices.size} envs (shard_map)")
      collect = lambda small, env_state: sharded_collect_rows(
          small, env_state, steps, epsilon, group_step, config, mesh)
    else:
      log("data-parallel collection: on device 0 (the env step cannot enter the mesh)")

      def collect(small, env_state):
        small, rows, stats = train.collect_rows(small.replace(env_state=env_state), steps, epsilon, env_step, config)
        return small.replace(env_state=None), small.env_state, rows, stats

    self._fns = {"collect_rows": jax.jit(collect),
                 "update": jax.jit(functools.partial(dp_update_epochs, config=config, mesh=mesh), donate_argnums=0)}
    self._compiled = {}

  def jitted(self, name: str):
    """The program `name` ("collect_rows" or "update") as a `jax.jit` object (experiments/aot_check.py)."""
    return self._fns[name]

  def _call(self, name: str, *args):
    if name not in self._compiled:
      self._compiled[name], seconds = logs.compile_and_report(name, self._fns[name], args, self.log)
      self.compile_seconds += seconds
    return self._compiled[name](*args)

  def __call__(self, state: train.TrainState, env_state, plan: train.EpochPlan, collect: bool):
    """Runs one epoch; returns (state, env_state, metrics, seconds in collect, seconds in update), compiles
    excluded (`compile_seconds`)."""
    self.compile_seconds = 0.0
    t0 = time.time()
    small = state.replace(replay=None, wm_opt_state=None, ac_opt_state=None, env_state=None)
    if self.sharded:  # each device's envs on that device (a fresh or restored env state lives on device 0)
      env_state = jax.device_put(env_state, NamedSharding(self.mesh, P(AXIS)))
    else:
      small = jax.device_put(local(small), self.device0)
    if collect:
      small, env_state, rows, stats = self._call("collect_rows", small, env_state)
      if jax.process_count() > 1:
        # Every process steps its own envs, but the replay is replicated: all processes take process 0's
        # rows and acting state, so the replicas stay identical (the other processes' env data is unused).
        from jax.experimental import multihost_utils
        rows, stats, shared = multihost_utils.broadcast_one_to_all(
            (rows, stats, (small.obs, small.is_first, small.policy_state, small.key, small.env_steps)))
        small = small.replace(obs=shared[0], is_first=shared[1], policy_state=shared[2], key=shared[3],
                              env_steps=shared[4])
      state = state.replace(
          obs=replicate(small.obs, self.mesh), is_first=replicate(small.is_first, self.mesh),
          policy_state=replicate(small.policy_state, self.mesh), key=replicate(small.key, self.mesh),
          env_steps=replicate(small.env_steps, self.mesh))
    else:  # zero rows of the collect call's shape: the update program is the same (none is appended)
      _, _, rows, stats = jax.eval_shape(self._fns["collect_rows"], small, env_state)
      rows, stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (rows, stats))
    rows = replicate(rows, self.mesh)
    jax.block_until_ready(rows)
    t1, collect_compile = time.time(), self.compile_seconds
    state, metrics = self._call("update", state, rows, plan)
    jax.block_until_ready(state.wm_params)
    t2 = time.time()
    return (state, env_state, metrics._replace(collect=stats), t1 - t0 - collect_compile,
            t2 - t1 - (self.compile_seconds - collect_compile))
