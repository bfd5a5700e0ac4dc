"""Playing inside the world model one action at a time (experiments/play.py): `imagine`'s step, unrolled.

`imagination.imagine` rolls the policy through the world model for H steps inside one `lax.scan`. Playing
needs the same step with the action chosen outside (a keyboard, or the policy), one call per frame:

  dream = start(wm_params, ac_params, segment, config)              # a real replay segment of num_cond steps
  dream, out = step(wm_params, ac_params, dream, action, t, key, config)   # out: state, reward, end, action

Step t uses exactly `imagine`'s keys (`fold_in(key, t)` split into act / next / reward / end) and its rules:
the policy LSTM reads the newest state, the diffusion sampler draws the next state from the last K states and
actions, the reward/end model samples r in {-1, 0, 1} and the end flag, the window slides, and an ended
episode restarts from the start condition (DIAMOND's WorldModelEnv.reset_dead). With `use_policy` the action
is the policy's sample, so a played rollout equals `imagine`'s trajectory (tests/test_dream.py).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jedi_jax import imagination
from jedi_jax.nets.actor_critic import ac_step
from jedi_jax.replay import Segment
from jedi_jax.types import PyTree

sg = jax.lax.stop_gradient


class Dream(NamedTuple):
  """The world model's state while playing (batch B, usually 1). K = num_cond, S = state shape."""
  start: imagination.StartCondition   # what an end (or R in play.py) restarts from
  cond: jax.Array                     # [B, K, *S] the last K states; cond[:, -1] is the one shown
  cond_actions: jax.Array             # [B, K] int32
  rew_state: PyTree                   # reward/end LSTM state
  ac_state: PyTree                    # policy LSTM state


class StepOut(NamedTuple):
  action: jax.Array      # [B] int32, the action taken (the given one, or the policy's)
  state: jax.Array       # [B, *S] the state the action led to (an end's last state, before the restart)
  reward: jax.Array      # [B] float32 in {-1, 0, 1}
  end: jax.Array         # [B] bool; the next shown state is then the start condition's


def start(wm_params, ac_params, segment: Segment, config, wm: imagination.WorldModelFns | None = None) -> Dream:
  """Encodes a real segment (obs [B, K + 1, 64, 64, 3] uint8, act [B, K], mask [B, K]) and burns in both LSTMs."""
  wm = wm or imagination.default_world_model()
  cond, cond_actions = imagination.encode_start(sg(wm_params), segment, config, wm)
  init = imagination.burn_in(sg(wm_params), sg(ac_params), cond, cond_actions, config, wm)
  return Dream(init, init.cond, init.cond_actions, init.rew_end_state, init.ac_state)


def step(wm_params, ac_params, dream: Dream, action: jax.Array, t: jax.Array, key: jax.Array, config,
         use_policy: jax.Array | bool = False, wm: imagination.WorldModelFns | None = None) -> tuple[Dream, StepOut]:
  """One step of `imagination.imagine` (step index `t`, its `key`) with `action` [B] int, or the policy's
  action where `use_policy` ([B] or scalar bool)."""
  wm = wm or imagination.default_world_model()
  wm_params, ac_params = sg(wm_params), sg(ac_params)
  k_act, k_next, k_rew, k_end = jax.random.split(jax.random.fold_in(key, t), 4)
  state = dream.cond[:, -1]
  ac_state, logits, _ = ac_step(ac_params, dream.ac_state, state, config)
  sampled = jax.random.categorical(k_act, logits).astype(jnp.int32)
  action = jnp.where(use_policy, sampled, jnp.asarray(action, jnp.int32))

  cond_actions = dream.cond_actions.at[:, -1].set(action)
  next_state = sg(wm.sample_next(wm_params, dream.cond, cond_actions, k_next, config)).astype(jnp.float32)
  rew_state, rew_logits, end_logits = sg(wm.rew_end_step(wm_params, dream.rew_state, state, action, next_state,
                                                         config))
  reward = jax.random.categorical(k_rew, rew_logits).astype(jnp.float32) - 1.0  # classes -> {-1, 0, 1}
  end = jax.random.categorical(k_end, end_logits) == 1

  cond = jnp.concatenate([dream.cond[:, 1:], next_state[:, None]], axis=1)
  cond_actions = jnp.concatenate([cond_actions[:, 1:], jnp.zeros_like(cond_actions[:, :1])], axis=1)
  init = dream.start
  cond, cond_actions, rew_state, ac_state = imagination.where_batch(
      end, (init.cond, init.cond_actions, init.rew_end_state, init.ac_state),
      (cond, cond_actions, rew_state, ac_state))
  return Dream(init, cond, cond_actions, rew_state, ac_state), StepOut(action, next_state, reward, end)


def restart(dream: Dream) -> Dream:
  """Back to the start condition (R in play.py)."""
  init = dream.start
  return Dream(init, init.cond, init.cond_actions, init.rew_end_state, init.ac_state)
