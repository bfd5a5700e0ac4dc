"""The actor-critic agent: lambda-returns, DIAMOND's imagination loss, its optimiser, and acting.

Ports DIAMOND's `ActorCritic.forward` and `compute_lambda_returns` (src/models/actor_critic.py) and its
collection loop (src/coroutines/env_loop.py) to pure functions. The network lives in
`jedi_jax/nets/actor_critic.py`, the imagined rollout in `jedi_jax/imagination.py`.

Loss (DIAMOND src/models/actor_critic.py), over the H x B imagined steps, each term a mean:
  G       = lambda-returns of the sampled rewards, ends and values (no gradient)
  actions = -log pi(a_t | s_t) * stop_gradient(G_t - V(s_t))        REINFORCE with a value baseline
  values  = value_weight * (V(s_t) - G_t)^2
  entropy = -entropy_weight * H[pi(. | s_t)]

The entropy weight is DIAMOND's constant by default; `ac.entropy_decay_updates > 0` anneals it linearly from
`ac.entropy_weight` to `ac.entropy_weight_final` over that many actor-critic updates (`entropy_weight`).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import optax

from jedi_jax import config as config_lib
from jedi_jax import optim
from jedi_jax.imagination import (Trajectory, WorldModelFns, default_world_model, imagine, log_prob_and_entropy,
                                  policy_over_trajectory, where_batch)
from jedi_jax.nets.actor_critic import ac_initial_state, ac_step, init_actor_critic_params, num_actions_of
from jedi_jax.replay import Segment
from jedi_jax.types import PyTree

sg = jax.lax.stop_gradient

__all__ = ["init_actor_critic", "ac_initial_state", "ac_step", "actor_critic_optimizer", "lambda_returns",
           "entropy_weight", "actor_critic_loss", "actor_critic_loss_fn", "act", "imagine", "Trajectory", "WorldModelFns"]


def init_actor_critic(config, num_actions: int, key: jax.Array, wm: WorldModelFns | None = None) -> PyTree:
  """Actor-critic parameters for inputs of the world model's state shape (`wm.state_shape(config)`)."""
  wm = wm or default_world_model()
  return init_actor_critic_params(config, num_actions, tuple(wm.state_shape(config)), key)


def lambda_returns(rewards: jax.Array, values: jax.Array, dones: jax.Array, gamma: float, lam: float
                   ) -> jax.Array:
  """TD(lambda) returns, time-major. rewards, dones: [T, B]; values: [T + 1, B] (bootstrap last) -> [T, B].

  G_T = V_T;  G_t = r_t + gamma (1 - d_t) ((1 - lam) V_{t+1} + lam G_{t+1}).
  With truncation only at the end of the window this equals DIAMOND's `compute_lambda_returns`.
  """
  chex.assert_equal_shape([rewards, dones])
  chex.assert_shape(values, (rewards.shape[0] + 1, *rewards.shape[1:]))
  not_done = 1.0 - dones.astype(values.dtype)

  def step(next_return, inputs):
    reward, nd, next_value = inputs
    g = reward + gamma * nd * ((1.0 - lam) * next_value + lam * next_return)
    return g, g

  _, returns = jax.lax.scan(step, values[-1], (rewards.astype(values.dtype), not_done, values[1:]), reverse=True)
  return returns


def entropy_weight(config, ac_updates: jax.Array | int) -> jax.Array:
  """The entropy weight of actor-critic update number `ac_updates` (from 0).

  `ac.entropy_weight` while `ac.entropy_decay_updates` is 0 (DIAMOND: a constant 0.001); otherwise linear
  from `ac.entropy_weight` at update 0 to `ac.entropy_weight_final` at update `ac.entropy_decay_updates`,
  constant after. A high early weight keeps the policy from collapsing while the world model still ignores
  the action; a low late one lets it become sharp (docs/results.md, "Catch").
  """
  ac = config.ac
  start = jnp.float32(ac.entropy_weight)
  decay = config_lib.added_field(config, "ac", "entropy_decay_updates")
  if decay <= 0:
    return start
  final = jnp.float32(config_lib.added_field(config, "ac", "entropy_weight_final"))
  frac = jnp.minimum(jnp.asarray(ac_updates, jnp.float32) / decay, 1.0)
  return start + frac * (final - start)


def actor_critic_loss(ac_params, trajectory: Trajectory, config, ac_updates: jax.Array | int = 0
                      ) -> tuple[jax.Array, dict]:
  """DIAMOND's actor-critic loss on an imagined trajectory -> (loss, metrics).

  Logits and values are recomputed from `trajectory.states` (differentiable in ac_params; the rollout itself
  is data). The returns and the baseline in the advantage carry no gradient; the value regression does.
  `ac_updates` (the number of actor-critic updates made so far) sets the entropy weight (`entropy_weight`).
  """
  ac = config.ac
  logits, values = policy_over_trajectory(ac_params, trajectory, config)   # [H + 1, B, A], [H + 1, B]
  returns = sg(lambda_returns(trajectory.rewards, values, trajectory.ends, ac.gamma, ac.lam))  # [H, B]
  values = values[:-1]
  log_prob, entropy = log_prob_and_entropy(logits[:-1], trajectory.actions)
  entropy = entropy.mean()

  loss_actions = jnp.mean(-log_prob * sg(returns - values))
  loss_values = ac.value_weight * jnp.mean(jnp.square(values - returns))
  weight = entropy_weight(config, ac_updates)
  loss_entropy = -weight * entropy
  loss = loss_actions + loss_values + loss_entropy
  metrics = {
      "policy_entropy": entropy / math.log(2),   # bits, as DIAMOND logs it
      "loss_actions": loss_actions,
      "loss_values": loss_values,
      "loss_entropy": loss_entropy,
      "entropy_weight": weight,
      "loss_total": loss,
      "imagined_reward": trajectory.rewards.mean(),
      # Compare with collect/reward_rate_{pos,neg}: an agent cannot learn from rewards it never imagines.
      "imagined_reward_rate_pos": (trajectory.rewards > 0).astype(jnp.float32).mean(),
      "imagined_reward_rate_neg": (trajectory.rewards < 0).astype(jnp.float32).mean(),
      # The first imagined step starts from real states: near the real rates there and ~0 later says that the
      # imagined states drift away from what the reward model fires on; ~0 there too, that one sampled step
      # (or the policy's choice) already misses the rewarding event.
      "imagined_reward_rate_first_pos": (trajectory.rewards[0] > 0).astype(jnp.float32).mean(),
      "imagined_reward_rate_first_neg": (trajectory.rewards[0] < 0).astype(jnp.float32).mean(),
      "imagined_end_rate": trajectory.ends.astype(jnp.float32).mean(),
      "lambda_return": returns.mean(),
      "value": values.mean(),
  }
  return loss, metrics


def actor_critic_loss_fn(ac_params, wm_params, start: Segment, key: jax.Array, config,
                         wm: WorldModelFns | None = None, ac_updates: jax.Array | int = 0
                         ) -> tuple[jax.Array, dict]:
  """imagine + actor_critic_loss: differentiable in ac_params only (the world model is a constant)."""
  trajectory = imagine(wm_params, ac_params, start, key, config, wm)
  return actor_critic_loss(ac_params, trajectory, config, ac_updates)


def actor_critic_optimizer(config) -> optax.GradientTransformation:
  """Grad-norm clip, then AdamW with a linear warm-up from 0 (DIAMOND `get_lr_sched`) and constant lr after
  (`jedi_jax.optim`); the lr is optim.lr x ac.lr_scale."""
  o = config.optim
  lr = o.lr * config_lib.added_field(config, "ac", "lr_scale")
  return optim.adamw_group(optim.warmup_schedule(lr, o.warmup_steps), max_grad_norm=o.max_grad_norm_other,
                           weight_decay=o.weight_decay_ac, eps=o.eps)


def act(ac_params, wm_params, lstm_state, obs: jax.Array, is_first: jax.Array, key: jax.Array,
        epsilon: float | jax.Array, config, wm: WorldModelFns | None = None) -> tuple[PyTree, jax.Array]:
  """One policy step in the real envs. obs: [N, 64, 64, 3] uint8, is_first: [N] bool -> (lstm_state, action [N]).

  The LSTM state is zeroed where an episode starts (DIAMOND resets hx, cx on death), the encoder state of the
  frame goes through the policy, and the sampled action is replaced by a uniform one with probability
  `epsilon` (0.01 while collecting, 0 at test). Unlike DIAMOND, which draws one coin for all envs, each env
  draws its own.
  """
  wm = wm or default_world_model()
  n = obs.shape[0]
  chex.assert_shape(is_first, (n,))
  state = sg(wm.encode(wm_params, obs, config)).astype(jnp.float32)
  lstm_state = where_batch(is_first, ac_initial_state(config, n), lstm_state)
  lstm_state, logits, _ = ac_step(ac_params, lstm_state, state, config)
  k_policy, k_coin, k_random = jax.random.split(key, 3)
  action = jax.random.categorical(k_policy, logits)
  random_action = jax.random.randint(k_random, (n,), 0, num_actions_of(ac_params))
  explore = jax.random.uniform(k_coin, (n,)) < epsilon
  return lstm_state, jnp.where(explore, random_action, action).astype(jnp.int32)
