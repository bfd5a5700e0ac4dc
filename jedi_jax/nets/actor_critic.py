"""DIAMOND's actor-critic network (eloialonso/diamond src/models/actor_critic.py) in Flax linen, NHWC.

A small CNN of SmallResBlocks with 2x2 max-pooling, flattened into an LSTM cell, then two linear heads:
policy logits over the game's minimal action set and a scalar value. The LSTM state is carried explicitly.
Porting choices kept from DIAMOND: forget-gate bias 1 (blocks.LSTMCell, DIAMOND `init_lstm`) and
zero-initialised actor and critic heads (weights and biases), so the initial policy is uniform and the
initial value is 0.

Two input kinds, chosen by `config.wm.kind` (`world_model.ModelKind.actor_critic_sizes`):
  * "jedi":    encoder latents [B, 8, 8, 16] -> CNN `ac.latent_channels`/`ac.latent_down`.
  * "diamond": frames in [-1, 1], [B, 64, 64, 3] -> DIAMOND's CNN `ac.pixel_channels`/`ac.pixel_down`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jedi_jax import config as config_lib
from jedi_jax import world_model
from jedi_jax.nets import precision
from jedi_jax.nets.blocks import FLOAT32, Conv3x3, LSTMCell, LSTMState, SmallResBlock, lstm_zero_state


class ActorCritic(nn.Module):
  """CNN -> LSTM -> (policy logits, value).

  __call__(lstm_state=(h, c) [B, L] each, x [B, H, W, C]) -> (lstm_state, logits [B, A], value [B]).
  """
  num_actions: int
  channels: Sequence[int]
  down: Sequence[bool]
  lstm_dim: int
  dtype: str = FLOAT32  # compute dtype of the convolutions and matmuls (blocks.py)

  @nn.compact
  def __call__(self, lstm_state: LSTMState, x: jax.Array):
    assert len(self.channels) == len(self.down)
    dt = self.dtype
    x = Conv3x3(self.channels[0], name="conv_in", dtype=dt)(x)
    for i, (c, d) in enumerate(zip(self.channels, self.down)):
      x = SmallResBlock(c, name=f"blocks_{i}", dtype=dt)(x)
      if d:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    lstm_state, h = LSTMCell(self.lstm_dim, name="lstm", dtype=dt)(lstm_state, x)
    zeros, dot = nn.initializers.zeros, precision.dot_general_hook(dt)
    logits = nn.Dense(self.num_actions, kernel_init=zeros, bias_init=zeros, name="actor_linear", dot_general=dot)(h)
    value = nn.Dense(1, kernel_init=zeros, bias_init=zeros, name="critic_linear", dot_general=dot)(h)[:, 0]
    return lstm_state, logits, value


def actor_critic_module(config, num_actions: int) -> ActorCritic:
  """The network for `config.wm.kind`: latent CNN for "jedi", DIAMOND's pixel CNN for "diamond"."""
  ac = config.ac
  channels, down = world_model.model_kind(config).actor_critic_sizes(ac)
  return ActorCritic(num_actions=num_actions, channels=tuple(channels), down=tuple(bool(d) for d in down),
                     lstm_dim=ac.lstm_dim, dtype=config_lib.compute_dtype(config))


def init_actor_critic_params(config, num_actions: int, state_shape: Sequence[int], key: jax.Array):
  """Parameters (the "params" collection) for inputs of shape [B, *state_shape]."""
  module = actor_critic_module(config, num_actions)
  x = jnp.zeros((1, *state_shape), jnp.float32)
  return module.init(key, ac_initial_state(config, 1), x)["params"]


def ac_initial_state(config, batch_size: int) -> LSTMState:
  """Zero LSTM state (h, c), each [B, ac.lstm_dim] (DIAMOND starts and resets episodes from zeros)."""
  return lstm_zero_state(batch_size, config.ac.lstm_dim)


def num_actions_of(ac_params) -> int:
  """Size of the action set the parameters were built for."""
  return ac_params["actor_linear"]["kernel"].shape[-1]


def ac_step(ac_params, lstm_state: LSTMState, state: jax.Array, config):
  """One policy/value step. state: [B, *S] -> (lstm_state, logits [B, A], value [B])."""
  module = actor_critic_module(config, num_actions_of(ac_params))
  return module.apply({"params": ac_params}, lstm_state, state)
