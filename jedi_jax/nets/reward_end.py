"""Reward/termination model R_psi (DIAMOND src/models/rew_end_model.py), usable on latents or pixels.

A transition (s_t, a_t, s_{t+1}) goes through an action-conditioned CNN on concat(s_t, s_{t+1}), is
flattened, fed to an LSTM (512) whose state is carried explicitly, and a head Linear -> SiLU -> Linear(5, no
bias) gives 3 reward logits (sign of reward: -1, 0, 1) and 2 end logits.

Downsampling: DIAMOND's CNN has 4 stages with a stride-2 Downsample before stages 2-4 (64 -> 8 on pixels),
so the LSTM sees 32 x 8 x 8 = 2048 features. JEDI's latents are already 8x8, so here the CNN downsamples only
while the map is larger than 8x8 (`num_down` = log2(H / 8): 3 on pixels, 0 on latents). This keeps DIAMOND's
LSTM input size and its exact pixel architecture, and costs little on latents (8x8 maps).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jedi_jax.nets import blocks


class RewEndModel(nn.Module):
  """Attributes: channels/depths of the CNN stages, cond_channels (action embedding), lstm_dim,
  num_actions, num_down (stride-2 downsamples, applied before the last `num_down` stages), sees_next (the
  CNN's input is concat(s_t, s_{t+1}) as in DIAMOND, or s_t alone: `next_state` is then ignored)."""
  channels: Sequence[int]
  depths: Sequence[int]
  cond_channels: int
  lstm_dim: int
  num_actions: int
  num_down: int
  sees_next: bool = True     # False: the CNN sees s_t alone (config wm.rew_end_next_state)
  remat: bool = False        # each ResBlock rematerialised (blocks.maybe_remat; wm.remat)
  dtype: str = blocks.FLOAT32  # compute dtype of the convolutions and matmuls (blocks.py)

  def setup(self):
    assert len(self.channels) == len(self.depths) and self.num_down < len(self.channels)
    self.act_emb = nn.Embed(self.num_actions, self.cond_channels, embedding_init=blocks.embed_init)
    dt = self.dtype
    self.conv_in = blocks.Conv3x3(self.channels[0], dtype=dt)
    n = len(self.channels)
    self.stages = [blocks.ResBlocks([c] * d, dtype=dt, remat=self.remat) for c, d in zip(self.channels, self.depths)]
    self.downsamples = [blocks.Downsample(dtype=dt) if i >= n - self.num_down else None for i in range(n)]
    self.final_blocks = blocks.ResBlocks([self.channels[-1]] * 2, attn=True, dtype=dt, remat=self.remat)
    self.lstm = blocks.LSTMCell(self.lstm_dim, dtype=dt)
    self.head_hidden = blocks.Dense(self.lstm_dim, dtype=dt)
    self.head_out = blocks.Dense(3 + 2, use_bias=False, dtype=dt)

  def features(self, state: jax.Array, action: jax.Array, next_state: jax.Array) -> jax.Array:
    """state, next_state [N, H, W, C], action [N] int -> flat CNN features [N, F]."""
    cond = self.act_emb(action)
    x = self.conv_in(jnp.concatenate([state, next_state], axis=-1) if self.sees_next else state)
    for stage, down in zip(self.stages, self.downsamples):
      if down is not None:
        x = down(x)
      x, _ = stage(x, cond)
    x, _ = self.final_blocks(x, cond)
    return x.reshape(x.shape[0], -1)

  def input_gates(self, feats: jax.Array) -> jax.Array:
    """feats [..., F] -> LSTM input gates [..., 4 lstm_dim] (batched over a whole sequence in training)."""
    return self.lstm.input_gates(feats)

  def lstm_step(self, lstm_state, gates_x: jax.Array):
    """One LSTM step from precomputed input gates [B, 4 lstm_dim] -> (lstm_state, h [B, lstm_dim])."""
    return self.lstm.step_from_gates(lstm_state, gates_x)

  def head(self, h: jax.Array):
    """h [..., lstm_dim] -> (reward_logits [..., 3], end_logits [..., 2])."""
    logits = self.head_out(nn.silu(self.head_hidden(h)))
    return logits[..., :3], logits[..., 3:]

  def __call__(self, lstm_state, state, action, next_state):
    """One transition step (imagination; also initialises every parameter)
    -> (lstm_state, reward_logits [B, 3], end_logits [B, 2])."""
    lstm_state, h = self.lstm(lstm_state, self.features(state, action, next_state))
    return (lstm_state,) + self.head(h)
