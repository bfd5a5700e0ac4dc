"""Imagined rollouts: the policy acting inside the world model for H steps, as one `lax.scan`.

The port of DIAMOND's `WorldModelEnv` (src/envs/world_model_env.py) driven by its env loop
(src/coroutines/env_loop.py), in the world model's state space (JEDI latents, or frames for the pixel
baseline). Per rollout:

  1. Start from a real replay segment of `num_cond` steps (K frames + K actions). Encode its frames.
  2. Burn in: the reward/end LSTM on the K - 1 real transitions (z_k, a_k, z_{k+1}) and the policy LSTM on the
     first K - 1 states, as DIAMOND's `make_generator_init` and env loop do after a reset.
  3. For t = 0 .. H-1: the policy samples a_t from the newest state (it replaces the segment's last action),
     the diffusion sampler draws z_{t+1} from the last K states and actions, the reward/end model samples
     r_t in {-1, 0, 1} and end_t from its categorical heads; the conditioning window slides by one.
  4. An imagined episode that ends restarts from its start condition (DIAMOND `reset_dead`), so every step of
     the window belongs to some imagined episode.

Nothing here is differentiated: the trajectory is data. `agent.actor_critic_loss` re-runs the policy over
`trajectory.states` to get differentiable logits and values (same parameters, same LSTM resets), so no gradient
can reach the world model or pass through the sampler (as in DIAMOND).

Departure from DIAMOND: an ended episode restarts from the *same* start segment (with fresh sampling noise)
instead of a newly drawn replay segment, which keeps every shape static inside the scan.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from jedi_jax.nets.actor_critic import ac_initial_state, ac_step
from jedi_jax.replay import Segment
from jedi_jax.types import PyTree

sg = jax.lax.stop_gradient


class WorldModelFns(NamedTuple):
  """The world-model functions imagination and acting use (signatures as `jedi_jax.world_model`).

  Injectable so tests can run a stub model. Hashable: pass it as a static argument of `jax.jit`.
  """
  encode: Callable           # (params, obs_uint8 [..., 64, 64, 3], config, frame_mask [...] | None) -> [..., *S]
  sample_next: Callable      # (params, cond [B, K, *S], cond_actions [B, K], key, config) -> [B, *S]
  rew_end_initial_state: Callable   # (config, batch_size) -> lstm_state
  rew_end_step: Callable     # (params, lstm_state, state [B, *S], action [B], next_state [B, *S], config)
                             #   -> (lstm_state, reward_logits [B, 3], end_logits [B, 2])
  state_shape: Callable      # (config) -> S


def default_world_model() -> WorldModelFns:
  """The real world model, `jedi_jax.world_model` (imported lazily: it imports nothing from here)."""
  from jedi_jax import world_model  # pylint: disable=import-outside-toplevel
  return WorldModelFns(
      encode=world_model.encode,
      sample_next=world_model.sample_next,
      rew_end_initial_state=world_model.rew_end_initial_state,
      rew_end_step=world_model.rew_end_step,
      state_shape=world_model.state_shape,
  )


class Trajectory(flax.struct.PyTreeNode):
  """An imagined rollout, time-major. H = config.ac.horizon, B = batch, S = state shape, L = ac.lstm_dim.

  Step t: the policy sees `states[t]` (after resetting its LSTM to `ac_state0` where `is_first[t]`), takes
  `actions[t]`, and the model returns `rewards[t]`, `ends[t]`; `states[t + 1]` is the next state, or the
  restarted episode's first state where `ends[t]`. `values[H]` is the bootstrap value of the last state.
  """
  states: jax.Array       # [H + 1, B, *S] float32
  actions: jax.Array      # [H, B] int32
  log_probs: jax.Array    # [H, B] float32, log pi(a_t | s_t) at imagination time
  entropies: jax.Array    # [H, B] float32, policy entropy (nats)
  values: jax.Array       # [H + 1, B] float32, V(s_t); the last one is the bootstrap value
  rewards: jax.Array      # [H, B] float32 in {-1, 0, 1}
  ends: jax.Array         # [H, B] bool
  is_first: jax.Array     # [H + 1, B] bool, the policy LSTM is (re)set to ac_state0 before step t
  ac_state0: PyTree       # (h, c) [B, L] each: the policy LSTM state after burn-in on the start segment


class StartCondition(NamedTuple):
  """What an imagined episode (re)starts from. K = num_cond."""
  cond: jax.Array          # [B, K, *S] states of the start frames (padding zeroed)
  cond_actions: jax.Array  # [B, K] int32; the last one is replaced by the policy's action
  rew_end_state: PyTree    # reward/end LSTM state after the K - 1 start transitions
  ac_state: PyTree         # policy LSTM state after the first K - 1 start states


def encode_start(wm_params, start: Segment, config, wm: WorldModelFns) -> tuple[jax.Array, jax.Array]:
  """States [B, K, *S] and actions [B, K] of a start segment (obs [B, K + 1, 64, 64, 3] uint8, act, mask [B, K]).

  Padded frames enter the encoder as zeros in [-1, 1] (DIAMOND's padding), exactly as in world-model training.
  """
  k = config.wm.num_cond
  obs, act, mask = start.obs, start.act, start.mask
  assert obs.shape[1] >= k and act.shape[1] == k and mask.shape[1] == k, (obs.shape, act.shape, mask.shape)
  states = sg(wm.encode(wm_params, obs[:, :k], config, start.frame_mask[:, :k])).astype(jnp.float32)
  return states, jnp.where(mask, act, 0).astype(jnp.int32)


def burn_in(wm_params, ac_params, cond: jax.Array, cond_actions: jax.Array, config,
            wm: WorldModelFns) -> StartCondition:
  """Runs both LSTMs over the start segment (DIAMOND's burn-in after each reset). cond: [B, K, *S].

  The reward/end LSTM sees the K - 1 transitions (z_k, a_k, z_{k+1}); the policy LSTM the states z_0..z_{K-2}
  (z_{K-1} is the state the policy acts on first).
  """
  b = cond_actions.shape[0]

  def step(carry, inputs):
    rew_state, ac_state = carry
    state, action, next_state = inputs
    rew_state, _, _ = wm.rew_end_step(wm_params, rew_state, state, action, next_state, config)
    ac_state, _, _ = ac_step(ac_params, ac_state, state, config)
    return (rew_state, ac_state), None

  time_major = lambda x: jnp.swapaxes(x, 0, 1)
  inputs = (time_major(cond[:, :-1]), time_major(cond_actions[:, :-1]), time_major(cond[:, 1:]))
  carry0 = (wm.rew_end_initial_state(config, b), ac_initial_state(config, b))
  (rew_state, ac_state), _ = jax.lax.scan(step, carry0, inputs)
  return StartCondition(cond, cond_actions, sg(rew_state), sg(ac_state))


def where_batch(flag: jax.Array, a: PyTree, b: PyTree) -> PyTree:
  """Per batch element: a where flag [B] else b (leaves [B, ...])."""
  return jax.tree.map(lambda x, y: jnp.where(flag.reshape(flag.shape + (1,) * (x.ndim - 1)), x, y), a, b)


def log_prob_and_entropy(logits: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """log pi(a) [...] and entropy [...] (nats) of categoricals with logits [..., A], actions [...]."""
  log_pi = jax.nn.log_softmax(logits)
  log_prob = jnp.take_along_axis(log_pi, actions[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)
  return log_prob, entropy


def imagine(wm_params, ac_params, start: Segment, key: jax.Array, config,
            wm: WorldModelFns | None = None) -> Trajectory:
  """H = config.ac.horizon imagined steps from B real replay segments -> `Trajectory` (time-major).

  start: a Segment of T = K = num_cond steps (replay `sample_segments(..., num_cond, pad_after_end=False)`):
    obs [B, K + 1, 64, 64, 3] uint8 (frames 0..K-1 are used), act [B, K] int (act[:, K-1] is replaced by the
    policy's first action), mask [B, K] bool (padding before the episode start).
  wm: the world-model functions; `jedi_jax.world_model` when None.
  Pure and deterministic in `key`; no gradient flows through it. Jit with `config` (and `wm`) static.
  """
  wm = wm or default_world_model()
  wm_params, ac_params = sg(wm_params), sg(ac_params)
  cond, cond_actions = encode_start(wm_params, start, config, wm)
  init = burn_in(wm_params, ac_params, cond, cond_actions, config, wm)
  batch = cond_actions.shape[0]

  def step(carry, t):
    cond, cond_actions, rew_state, ac_state, is_first = carry
    k_act, k_next, k_rew, k_end = jax.random.split(jax.random.fold_in(key, t), 4)
    state = cond[:, -1]
    ac_state, logits, value = ac_step(ac_params, ac_state, state, config)
    action = jax.random.categorical(k_act, logits).astype(jnp.int32)
    log_prob, entropy = log_prob_and_entropy(logits, action)

    cond_actions = cond_actions.at[:, -1].set(action)
    next_state = sg(wm.sample_next(wm_params, cond, cond_actions, k_next, config)).astype(jnp.float32)
    rew_state, rew_logits, end_logits = sg(
        wm.rew_end_step(wm_params, rew_state, state, action, next_state, config))
    reward = jax.random.categorical(k_rew, rew_logits).astype(jnp.float32) - 1.0  # classes -> {-1, 0, 1}
    end = jax.random.categorical(k_end, end_logits) == 1

    cond = jnp.concatenate([cond[:, 1:], next_state[:, None]], axis=1)
    cond_actions = jnp.concatenate([cond_actions[:, 1:], jnp.zeros_like(cond_actions[:, :1])], axis=1)
    # Ended imagined episodes restart from their start condition (DIAMOND WorldModelEnv.reset_dead).
    cond, cond_actions, rew_state, ac_state = where_batch(
        end, (init.cond, init.cond_actions, init.rew_end_state, init.ac_state),
        (cond, cond_actions, rew_state, ac_state))
    out = dict(state=state, action=action, log_prob=log_prob, entropy=entropy, value=value,
               reward=reward, end=end, is_first=is_first)
    return (cond, cond_actions, rew_state, ac_state, end), out

  carry0 = (init.cond, init.cond_actions, init.rew_end_state, init.ac_state, jnp.ones((batch,), bool))
  (cond, _, _, ac_state, is_first), out = jax.lax.scan(step, carry0, jnp.arange(config.ac.horizon))
  # Bootstrap value of the last state; the LSTM state is not advanced (DIAMOND env_loop).
  _, _, value_last = ac_step(ac_params, ac_state, cond[:, -1], config)
  return Trajectory(
      states=jnp.concatenate([out["state"], cond[None, :, -1]], axis=0),
      actions=out["action"],
      log_probs=out["log_prob"],
      entropies=out["entropy"],
      values=jnp.concatenate([out["value"], value_last[None]], axis=0),
      rewards=out["reward"],
      ends=out["end"],
      is_first=jnp.concatenate([out["is_first"], is_first[None]], axis=0),
      ac_state0=init.ac_state,
  )


def policy_over_trajectory(ac_params, trajectory: Trajectory, config) -> tuple[jax.Array, jax.Array]:
  """Re-runs the policy over `trajectory.states` with the trajectory's LSTM resets, differentiably.

  Returns logits [H + 1, B, A] and values [H + 1, B] (equal to the imagination-time ones for the same params).
  """
  def step(ac_state, inputs):
    state, is_first = inputs
    ac_state = where_batch(is_first, trajectory.ac_state0, ac_state)
    ac_state, logits, value = ac_step(ac_params, ac_state, state, config)
    return ac_state, (logits, value)

  _, (logits, values) = jax.lax.scan(step, trajectory.ac_state0, (trajectory.states, trajectory.is_first))
  return logits, values

