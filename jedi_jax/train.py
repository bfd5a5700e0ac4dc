"""The training state and the scanned epoch.

One `TrainState` pytree holds everything that changes during a run (params, optimiser states, replay, env
handle, policy LSTM state, RNG key, counters). The phases of an epoch are top-level pure functions:

  collect             `steps_per_epoch` env steps with the current policy (the env step inside the scan)
  update_world_model  `n` updates of encoder + denoiser + reward/end (one joint loss, arXiv 2505.19698)
  update_actor_critic `n` actor-critic updates in imagination (DIAMOND's actor-critic)

and `run_epochs` scans whole epochs (collect, then the updates) so that a host call runs K epochs in one
compiled program. The host loop (`jedi_jax.loop`) only calls these, logs and checkpoints.

The schedule is DIAMOND's (`src/trainer.py`): an initial collection with the untrained policy (uniform
logits = random) until the replay holds enough non-majority reward classes, then epochs of 100 env steps +
400/400 updates (10k/5k in the first epoch), and 50 final update-only epochs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jedi_jax import agent
from jedi_jax import config as config_lib
from jedi_jax import replay as replay_lib
from jedi_jax import world_model
from jedi_jax.types import PyTree

EnvStepFn = Callable[[PyTree, jax.Array], tuple[PyTree, Any]]


class TrainState(flax.struct.PyTreeNode):
  """Everything a run carries from one epoch to the next. E = number of train envs."""
  wm_params: PyTree
  wm_opt_state: PyTree
  ac_params: PyTree
  ac_opt_state: PyTree
  replay: replay_lib.ReplayState
  env_state: PyTree            # the envs' `EnvState`; checkpointed apart, and only when pure-JAX (envs.is_pure)
  obs: jax.Array               # [E, 64, 64, 3] uint8, the frame the next action is taken on
  is_first: jax.Array          # [E] bool, the next step starts a (training) episode: reset the policy LSTM
  policy_state: PyTree         # actor-critic LSTM state for the E envs
  key: jax.Array               # PRNG key, split at every use
  env_steps: jax.Array         # int32, agent steps collected so far
  epoch: jax.Array             # int32, completed epochs (0 during the initial collection)
  wm_updates: jax.Array        # int32
  ac_updates: jax.Array        # int32


class CollectStats(NamedTuple):
  """Summed over a collect phase; returns are raw game scores of finished (full) games."""
  games_finished: jax.Array
  games_return_sum: jax.Array
  games_length_sum: jax.Array
  reward_sum: jax.Array
  life_losses: jax.Array
  reward_pos: jax.Array        # steps with reward > 0 (auto-reset steps excluded)
  reward_neg: jax.Array        # steps with reward < 0


class CallMetrics(NamedTuple):
  """The metrics of one compiled call, typed by how they reduce (docs/metrics.md).

  `wm`, `ac`: means over the updates of an epoch, then over the call's epochs (the world-model probe's
  figures are in `wm`); `collect`: the collection statistics summed over the call. Leaves are scalars, or
  [K] for K packed seeds. They become `wm/...`, `ac/...` and `collect/...` keys only where the JSONL row is
  written (`jedi_jax.loop`).
  """
  wm: dict
  ac: dict
  collect: CollectStats


def mean_over_epochs(sums: CallMetrics, num_epochs) -> CallMetrics:
  """Per-call figures from per-epoch sums: update means averaged over the epochs, collection kept summed."""
  n = jnp.maximum(num_epochs, 1)
  mean = lambda d: jax.tree.map(lambda x: x / n, d)
  return sums._replace(wm=mean(sums.wm), ac=mean(sums.ac))


def init_train_state(config, num_actions: int, key: jax.Array, env_state: PyTree, obs: jax.Array) -> TrainState:
  """Fresh params, optimiser states and an empty replay. `obs`: [E, 64, 64, 3] uint8 from the env reset."""
  wm_params, wm_opt_state, ac_params, ac_opt_state, k_run = _init_learners(config, num_actions, key)
  num_envs = obs.shape[0]
  return TrainState(
      wm_params=wm_params,
      wm_opt_state=wm_opt_state,
      ac_params=ac_params,
      ac_opt_state=ac_opt_state,
      replay=replay_lib.init_replay(num_envs, config.replay.capacity),
      env_state=env_state,
      obs=jnp.asarray(obs, jnp.uint8),
      is_first=jnp.ones((num_envs,), bool),
      policy_state=agent.ac_initial_state(config, num_envs),
      key=k_run,
      env_steps=jnp.zeros((), jnp.int32),
      epoch=jnp.zeros((), jnp.int32),
      wm_updates=jnp.zeros((), jnp.int32),
      ac_updates=jnp.zeros((), jnp.int32),
  )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_learners(config, num_actions: int, key: jax.Array):
  """Params and optimiser states of both learners, and the run's key: one compiled program (run op by op,
  the initialisers compile ~130 small programs, ~10 s on a CPU)."""
  k_wm, k_ac, k_run = jax.random.split(key, 3)
  wm_params = world_model.init_world_model(config, num_actions, k_wm)
  ac_params = agent.init_actor_critic(config, num_actions, k_ac)
  return (wm_params, world_model.world_model_optimizer(config).init(wm_params),
          ac_params, agent.actor_critic_optimizer(config).init(ac_params), k_run)


def _next_key(state: TrainState) -> tuple[TrainState, jax.Array]:
  key, sub = jax.random.split(state.key)
  return state.replace(key=key), sub


# ----------------------------------------------------------------------------------------------
# Collection: policy -> env step -> replay, one vector step at a time.
# The three parts are separate functions so that many-seed training can vmap the first and last
# around a single env step on the pooled envs (envpool's step cannot be vmapped).
# ----------------------------------------------------------------------------------------------

def choose_actions(state: TrainState, key: jax.Array, epsilon: float, config) -> tuple[TrainState, jax.Array]:
  """Samples actions [E] for the current frames and advances the policy LSTM."""
  policy_state, actions = agent.act(
      state.ac_params, state.wm_params, state.policy_state, state.obs, state.is_first, key, epsilon, config)
  return state.replace(policy_state=policy_state), actions


class Row(NamedTuple):
  """One replay row per env: the frame before the action, the action and what it produced. [E, ...]"""
  obs: jax.Array
  act: jax.Array
  rew: jax.Array
  end: jax.Array
  trunc: jax.Array
  valid: jax.Array


def transition(state: TrainState, actions: jax.Array, out) -> tuple[TrainState, Row, CollectStats]:
  """Turns an env step into a replay row and moves the state to the next frame (replay untouched).

  `out` is the env's StepOutput. The auto-reset dummy transition (`out.is_reset`) becomes an invalid
  row: never sampled as a training step (envpool#194), but its frame is the final frame of the game.
  """
  row = Row(state.obs, actions, out.reward, out.terminated, out.truncated, ~out.is_reset)
  game_done = (out.game_over | out.truncated) & ~out.is_reset
  stats = CollectStats(
      games_finished=game_done.sum().astype(jnp.int32),
      games_return_sum=jnp.where(game_done, out.episode_return, 0.0).sum(),
      games_length_sum=jnp.where(game_done, out.episode_length, 0).sum().astype(jnp.int32),
      reward_sum=jnp.where(out.is_reset, 0.0, out.reward).sum(),
      life_losses=(out.terminated & ~out.game_over & ~out.is_reset).sum().astype(jnp.int32),
      reward_pos=((out.reward > 0) & ~out.is_reset).sum().astype(jnp.int32),
      reward_neg=((out.reward < 0) & ~out.is_reset).sum().astype(jnp.int32),
  )
  state = state.replace(
      obs=out.obs,
      is_first=out.terminated | out.truncated | out.is_reset,
      env_steps=state.env_steps + actions.shape[0],
  )
  return state, row, stats


def add_row(replay: replay_lib.ReplayState, row: Row) -> replay_lib.ReplayState:
  return replay_lib.add(replay, row.obs, row.act, row.rew, row.end, row.trunc, row.valid)


def add_rows(replay: replay_lib.ReplayState, rows: Row, num_rows=None) -> replay_lib.ReplayState:
  """Appends time-major rows [T, E, ...] in order: all T, or the first `num_rows` (may be traced)."""
  num_rows = rows.obs.shape[0] if num_rows is None else num_rows
  return jax.lax.fori_loop(0, num_rows, lambda i, r: add_row(r, jax.tree.map(lambda x: x[i], rows)), replay)


def record_step(state: TrainState, actions: jax.Array, out) -> tuple[TrainState, CollectStats]:
  """`transition` plus writing the row into the replay."""
  state, row, stats = transition(state, actions, out)
  return state.replace(replay=add_row(state.replay, row)), stats


def zero_collect_stats() -> CollectStats:
  return CollectStats(*(jnp.zeros((), d) for d in (jnp.int32, jnp.float32, jnp.int32, jnp.float32, jnp.int32,
                                                   jnp.int32, jnp.int32)))


def collect_rows(state: TrainState, num_steps: int, epsilon: float, env_step: EnvStepFn, config,
                 fold: jax.Array | None = None) -> tuple[TrainState, Row, CollectStats]:
  """Like `collect` but returns the rows ([T, E, ...], T = num_steps / E, static) instead of writing them:
  the data-parallel epoch collects and then appends the rows on the mesh. `fold` (a device index) is folded
  into each step's action key, leaving the carried key as it would be without it."""
  def one_step(state, _):
    state, key = _next_key(state)
    key = key if fold is None else jax.random.fold_in(key, fold)
    state, actions = choose_actions(state, key, epsilon, config)
    env_state, out = env_step(state.env_state, actions)
    state, row, stats = transition(state.replace(env_state=env_state), actions, out)
    return state, (row, stats)

  state, (rows, stats) = jax.lax.scan(one_step, state, None, length=num_steps // state.obs.shape[0])
  return state, rows, jax.tree.map(jnp.sum, stats)


def collect(state: TrainState, num_steps, epsilon: float, env_step: EnvStepFn, config
            ) -> tuple[TrainState, CollectStats]:
  """`num_steps` agent steps in total (num_steps / E vector steps) with the current policy.

  `num_steps` may be traced (0 for update-only epochs): the loop is a `fori_loop` with a dynamic trip
  count, so one compiled program serves every phase of the schedule.
  """
  num_envs = state.obs.shape[0]

  def one_step(_, carry):
    state, stats = carry
    state, key = _next_key(state)
    state, actions = choose_actions(state, key, epsilon, config)
    env_state, out = env_step(state.env_state, actions)
    state, step_stats = record_step(state.replace(env_state=env_state), actions, out)
    return state, jax.tree.map(jnp.add, stats, step_stats)

  return jax.lax.fori_loop(0, num_steps // num_envs, one_step, (state, zero_collect_stats()))


# ----------------------------------------------------------------------------------------------
# Updates
# ----------------------------------------------------------------------------------------------

def sample_world_model_batch(replay: replay_lib.ReplayState, key: jax.Array, batch_size: int, config
                             ) -> world_model.WorldModelBatch:
  """The two segment batches of one world-model update (layout: `jedi_jax.world_model`).

  As DIAMOND's trainer, the dynamics and the reward/end segments are drawn independently; with
  `wm.share_encoder_pass` only the reward/end segment is drawn and the dynamics window is taken inside it
  (`world_model.shared_dynamics_start`): the two losses then see the same episodes and overlapping steps of
  each sample (docs/benchmarks.md, "Sharing one encoder pass").
  """
  k_dyn, k_rew = jax.random.split(key)
  weights = tuple(config.replay.sample_weights)
  t_dyn = config.wm.num_cond + config.wm.num_predictions
  rew_end = replay_lib.sample_segments(replay, k_rew, batch_size, config.ac.horizon + config.wm.num_cond,
                                       weights=weights, pad_after_end=True)
  if config_lib.added_field(config, "wm", "share_encoder_pass"):
    start = world_model.shared_dynamics_start(rew_end.mask, t_dyn, k_dyn)
    return world_model.WorldModelBatch(dynamics=world_model.segment_window(rew_end, start, t_dyn),
                                       rew_end=rew_end, dynamics_start=start)
  # wm.rewarded_fraction: that share of the segments holds a rewarded step among the predicted ones (the last
  # num_predictions steps; world_model.world_model_loss).
  rewarded = int(round(config_lib.added_field(config, "wm", "rewarded_fraction") * batch_size))
  dynamics = replay_lib.sample_segments(replay, k_dyn, batch_size, t_dyn, weights=weights, pad_after_end=False,
                                        rewarded=rewarded, rewarded_last=config.wm.num_predictions)
  return world_model.WorldModelBatch(dynamics=dynamics, rew_end=rew_end)


def sample_imagination_starts(replay: replay_lib.ReplayState, key: jax.Array, batch_size: int, config
                              ) -> replay_lib.Segment:
  """Real segments of `num_cond` steps that imagination starts from (burn-in context)."""
  return replay_lib.sample_segments(
      replay, key, batch_size, config.wm.num_cond,
      weights=tuple(config.replay.sample_weights), pad_after_end=False)


def world_model_grads(wm_params: PyTree, batch: world_model.WorldModelBatch, key: jax.Array, config
                      ) -> tuple[PyTree, dict]:
  """Gradient of the world-model loss and its metrics."""
  (loss, metrics), grads = jax.value_and_grad(world_model.world_model_loss, has_aux=True)(
      wm_params, batch, key, config)
  return grads, dict(metrics, loss=loss)


def world_model_local(wm_params: PyTree, replay: replay_lib.ReplayState, key: jax.Array, batch_size: int,
                      config) -> tuple[PyTree, dict]:
  """Samples a batch and returns the world-model gradient: the per-device unit of data parallelism."""
  k_batch, k_loss = jax.random.split(key)
  batch = sample_world_model_batch(replay, k_batch, batch_size, config)
  return world_model_grads(wm_params, batch, k_loss, config)


def actor_critic_local(ac_params: PyTree, wm_params: PyTree, replay: replay_lib.ReplayState,
                       ac_updates: jax.Array, key: jax.Array, batch_size: int, config) -> tuple[PyTree, dict]:
  """Samples start segments, imagines, and returns the actor-critic gradient (per-device unit). `ac_updates`
  (updates made so far) sets the entropy weight (`agent.entropy_weight`)."""
  k_batch, k_loss = jax.random.split(key)
  start = sample_imagination_starts(replay, k_batch, batch_size, config)
  (loss, metrics), grads = jax.value_and_grad(agent.actor_critic_loss_fn, has_aux=True)(
      ac_params, wm_params, start, k_loss, config, None, ac_updates)
  return grads, dict(metrics, loss=loss)


def _apply(tx: optax.GradientTransformation, params, opt_state, grads):
  updates, opt_state = tx.update(grads, opt_state, params)
  metrics = {"grad_norm": optax.tree.norm(grads)}
  return optax.apply_updates(params, updates), opt_state, metrics


def world_model_step(state: TrainState, config, local_fn: Callable = world_model_local
                     ) -> tuple[TrainState, dict]:
  """One world-model update: sample segments, gradient, AdamW step.

  `local_fn(wm_params, replay, key, batch_size, config) -> (grads, metrics)`; the data-parallel version
  (`jedi_jax.parallel`) shards it over devices.
  """
  state, key = _next_key(state)
  grads, metrics = local_fn(state.wm_params, state.replay, key, config.optim.batch_size, config)
  params, opt_state, m = _apply(world_model.world_model_optimizer(config), state.wm_params, state.wm_opt_state, grads)
  state = state.replace(wm_params=params, wm_opt_state=opt_state, wm_updates=state.wm_updates + 1)
  return state, dict(metrics, **m)


def actor_critic_step(state: TrainState, config, local_fn: Callable = actor_critic_local
                      ) -> tuple[TrainState, dict]:
  """One actor-critic update in imagination, starting from real replay segments."""
  state, key = _next_key(state)
  grads, metrics = local_fn(state.ac_params, state.wm_params, state.replay, state.ac_updates, key,
                            config.optim.batch_size, config)
  params, opt_state, m = _apply(agent.actor_critic_optimizer(config), state.ac_params, state.ac_opt_state, grads)
  state = state.replace(ac_params=params, ac_opt_state=opt_state, ac_updates=state.ac_updates + 1)
  return state, dict(metrics, **m)


def loop_sum(step_fn: Callable, state, num_steps) -> tuple[Any, dict]:
  """Runs `state, metrics = step_fn(state)` `num_steps` times (may be traced) in one compiled loop; returns
  the final state and the sum of each metric over the steps (zeros when 0 steps).

  `step_fn` is traced once: the shapes of its metrics (the loop's initial sums) come from the same trace
  as the loop body (`jax.jit` caches it), not from a second trace of the whole step.
  """
  step_fn = jax.jit(step_fn)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(step_fn, state)[1])

  def body(_, carry):
    state, sums = carry
    state, metrics = step_fn(state)
    return state, jax.tree.map(jnp.add, sums, metrics)

  return jax.lax.fori_loop(0, num_steps, body, (state, zeros))


def _loop_mean(step_fn: Callable, state: TrainState, num_updates) -> tuple[TrainState, dict]:
  """Runs `num_updates` (may be traced) steps; returns the mean of each metric (zeros when 0 updates)."""
  state, sums = loop_sum(step_fn, state, num_updates)
  return state, jax.tree.map(lambda x: x / jnp.maximum(num_updates, 1), sums)


def update_world_model(state: TrainState, num_updates, config, **kw) -> tuple[TrainState, dict]:
  return _loop_mean(lambda s: world_model_step(s, config, **kw), state, num_updates)


def update_actor_critic(state: TrainState, num_updates, config, **kw) -> tuple[TrainState, dict]:
  return _loop_mean(lambda s: actor_critic_step(s, config, **kw), state, num_updates)


# ----------------------------------------------------------------------------------------------
# Epochs
# ----------------------------------------------------------------------------------------------

class EpochPlan(NamedTuple):
  """What one call runs; traced int32 scalars, so the schedule's phases share one compiled program."""
  num_epochs: jax.Array     # epochs in this call
  collect_steps: jax.Array  # agent steps collected per epoch (0: the final update-only epochs)
  wm_updates: jax.Array     # world-model updates per epoch
  ac_updates: jax.Array     # actor-critic updates per epoch


def make_plan(num_epochs: int, collect_steps: int, wm_updates: int, ac_updates: int) -> EpochPlan:
  return EpochPlan(*(jnp.asarray(x, jnp.int32) for x in (num_epochs, collect_steps, wm_updates, ac_updates)))


# Stream of the world-model probe: folded into the training key, never split from it, so the probe draws
# fresh randomness each epoch without changing any other random number of the run.
_PROBE_STREAM = 0x9E37


def probe_world_model(state: TrainState, config) -> dict:
  """Diagnostics of the world model on `run.probe_batch_size` real segments (world_model.probe_world_model).

  Changes nothing in `state`: runs with and without the probe give identical results.
  """
  if not config.run.probe_batch_size:
    return {}
  k_batch, k_probe = jax.random.split(jax.random.fold_in(state.key, _PROBE_STREAM))
  segment = replay_lib.sample_segments(
      state.replay, k_batch, config.run.probe_batch_size, config.wm.num_cond,
      weights=tuple(config.replay.sample_weights), pad_after_end=False)
  return world_model.probe_world_model(state.wm_params, segment, k_probe, config)


def update_phase(state: TrainState, plan: EpochPlan, config, *, wm_update: Callable = update_world_model,
                 ac_update: Callable = update_actor_critic) -> tuple[TrainState, CallMetrics]:
  """The updates of one epoch (world model, then actor-critic), the world-model probe, and the epoch count.

  Returns per-update means of both learners (the probe's figures with the world model's); no collection.
  """
  state, wm_m = wm_update(state, plan.wm_updates, config)
  state, ac_m = ac_update(state, plan.ac_updates, config)
  wm_m = dict(wm_m, **probe_world_model(state, config))
  state = state.replace(epoch=state.epoch + 1)
  return state, CallMetrics(wm=wm_m, ac=ac_m, collect=zero_collect_stats())


def run_epoch(state: TrainState, plan: EpochPlan, config, env_step: EnvStepFn, *,
              wm_update: Callable = update_world_model, ac_update: Callable = update_actor_critic
              ) -> tuple[TrainState, CallMetrics]:
  """One epoch: collect `plan.collect_steps` env steps, then the world-model and actor-critic updates."""
  state, stats = collect(state, plan.collect_steps, config.ac.epsilon_collect, env_step, config)
  state, metrics = update_phase(state, plan, config, wm_update=wm_update, ac_update=ac_update)
  return state, metrics._replace(collect=stats)


def run_epochs(state: TrainState, plan: EpochPlan, config, env_step: EnvStepFn, **kw
               ) -> tuple[TrainState, CallMetrics]:
  """`plan.num_epochs` epochs in one compiled loop (`CallMetrics`: update means, collection sums)."""
  state, sums = loop_sum(lambda s: run_epoch(s, plan, config, env_step, **kw), state, plan.num_epochs)
  return state, mean_over_epochs(sums, plan.num_epochs)


def initial_collect_chunk(state: TrainState, config, env_step: EnvStepFn) -> tuple[TrainState, CollectStats]:
  """One chunk (steps_per_epoch steps) of the initial collection, with the untrained policy."""
  return collect(state, config.schedule.steps_per_epoch, config.ac.epsilon_collect, env_step, config)


def minority_reward_count(replay: replay_lib.ReplayState) -> jax.Array:
  """Transitions of the non-majority reward classes (DIAMOND's initial-collection stopping rule)."""
  counts = replay.rew_counts
  return counts.sum() - counts.max()


# ----------------------------------------------------------------------------------------------
# Many seeds in one program on envpool: the per-seed state is vmapped; the env step is not (envpool's call
# cannot be batched), so one pool of K x E envs is stepped between a vmapped policy and a vmapped replay write.
# (A pure-JAX env is vmapped with the state: `loop.Programs` vmaps the one-seed programs whole.)
# ----------------------------------------------------------------------------------------------

def collect_many(states: TrainState, env_state: PyTree, num_steps, epsilon: float, env_step: EnvStepFn,
                 config) -> tuple[TrainState, PyTree, CollectStats]:
  """`collect` for K stacked seeds ([K, ...] leaves, `env_state` of the pooled K*E envs, outside the
  stacked states). Seed k owns envs k*E .. k*E+E-1 of the pool. Stats are per seed ([K])."""
  k, e = states.obs.shape[:2]
  choose = jax.vmap(lambda s, key: choose_actions(s, key, epsilon, config))

  def one_step(_, carry):
    states, env_state, stats = carry
    states, keys = jax.vmap(_next_key)(states)
    states, actions = choose(states, keys)
    env_state, out = env_step(env_state, actions.reshape(k * e))
    out = jax.tree.map(lambda x: x.reshape((k, e) + x.shape[1:]), out)
    states, step_stats = jax.vmap(record_step)(states, actions, out)
    return states, env_state, jax.tree.map(jnp.add, stats, step_stats)

  zero = jax.tree.map(lambda x: jnp.zeros((k,), x.dtype), zero_collect_stats())
  return jax.lax.fori_loop(0, num_steps // e, one_step, (states, env_state, zero))


def initial_collect_chunk_many(states: TrainState, env_state: PyTree, config, env_step: EnvStepFn
                               ) -> tuple[TrainState, PyTree, CollectStats]:
  return collect_many(
      states, env_state, config.schedule.steps_per_epoch, config.ac.epsilon_collect, env_step, config)


def run_epochs_many(states: TrainState, env_state: PyTree, plan: EpochPlan, config, env_step: EnvStepFn
                    ) -> tuple[TrainState, PyTree, CallMetrics]:
  """`run_epochs` for K stacked seeds; metrics have a leading seed axis [K]."""
  updates = jax.vmap(lambda s: update_phase(s, plan, config))

  def epoch(carry):
    states, env_state = carry
    states, env_state, stats = collect_many(
        states, env_state, plan.collect_steps, config.ac.epsilon_collect, env_step, config)
    states, metrics = updates(states)
    return (states, env_state), metrics._replace(collect=stats)

  (states, env_state), sums = loop_sum(epoch, (states, env_state), plan.num_epochs)
  return states, env_state, mean_over_epochs(sums, plan.num_epochs)
