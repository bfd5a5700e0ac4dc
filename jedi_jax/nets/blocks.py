"""DIAMOND's building blocks (eloialonso/diamond src/models/blocks.py) in Flax linen, NHWC.

Shared by the encoder, the latent and pixel denoisers, the reward/termination model and the actor-critic.
Porting choices kept from DIAMOND (JEDI, arXiv 2505.19698):
  * GroupNorm uses max(1, C // 32) groups and eps 1e-5 (Flax's default of 32 groups differs).
  * AdaGroupNorm: an affine-free GroupNorm whose scale/shift come from a Linear of the conditioning vector.
  * The second conv of every ResBlock and the output convs are zero-initialised.
  * Fourier features of the noise level use a fixed random projection that is *not* a parameter.
  * The LSTM cell has forget-gate bias 1, Xavier input weights and orthogonal recurrent weights
    (DIAMOND src/utils.py init_lstm); its state is carried explicitly.
Weights default to PyTorch's default init (uniform, variance 1 / (3 fan_in); embeddings N(0, 1)); biases
start at zero. Every module's `dtype` is the compute dtype of its convolutions and matmuls (`precision.py`:
"bfloat16" casts their operands only; params and everything else stay float32).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax.nets import precision
from jedi_jax.nets.precision import FLOAT32

GN_GROUP_SIZE = 32   # DIAMOND blocks.py
GN_EPS = 1e-5
ATTN_HEAD_DIM = 8

# PyTorch's default for nn.Linear / nn.Conv2d weights: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
zeros_init = nn.initializers.zeros
# PyTorch's nn.Embedding: N(0, 1) (Flax's default scales by 1 / sqrt(num_embeddings)).
embed_init = nn.initializers.normal(stddev=1.0)

def maybe_remat(module_cls, remat: bool):
  """`module_cls`, or with `remat` its rematerialised form (Flax's `nn.remat`: `jax.checkpoint` around each
  call, same parameters): the backward pass keeps only the block's inputs and recomputes its insides, one
  block at a time (`wm.remat`). One checkpoint around a whole network would recompute every block's
  insides before the backward pass starts, holding them all at once: no memory saved (docs/benchmarks.md)."""
  return nn.remat(module_cls) if remat else module_cls


def num_groups(channels: int) -> int:
  """DIAMOND's GroupNorm group count."""
  return max(1, channels // GN_GROUP_SIZE)


def Conv3x3(features: int, *, zero_init: bool = False, name: Optional[str] = None, dtype: str = FLOAT32) -> nn.Conv:
  """3x3 conv, stride 1, zero padding 1 (same spatial size)."""
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)),
                 kernel_init=zeros_init if zero_init else torch_default_init, name=name,
                 conv_general_dilated=precision.conv_hook(dtype))


def PatchConv(features: int, patch: int, *, name: Optional[str] = None, dtype: str = FLOAT32) -> nn.Conv:
  """patch x patch conv with stride patch, no padding: [B, H, W, C] -> [B, H / patch, W / patch, features]."""
  return nn.Conv(features, (patch, patch), strides=(patch, patch), padding="VALID",
                 kernel_init=torch_default_init, name=name, conv_general_dilated=precision.conv_hook(dtype))


def Conv1x1(features: int, *, name: Optional[str] = None, dtype: str = FLOAT32) -> nn.Conv:
  """1x1 conv (channel projection)."""
  return nn.Conv(features, (1, 1), padding="VALID", kernel_init=torch_default_init, name=name,
                 conv_general_dilated=precision.conv_hook(dtype))


def Dense(features: int, *, use_bias: bool = True, name: Optional[str] = None, dtype: str = FLOAT32) -> nn.Dense:
  """Linear layer with PyTorch's default weight init."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=torch_default_init, name=name,
                  dot_general=precision.dot_general_hook(dtype))


class GroupNorm(nn.Module):
  """GroupNorm with DIAMOND's max(1, C // 32) groups. x: [..., H, W, C]."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.GroupNorm(num_groups=num_groups(x.shape[-1]), epsilon=GN_EPS, name="norm")(x)


class AdaGroupNorm(nn.Module):
  """Conditional GroupNorm: x * (1 + scale(cond)) + shift(cond).

  x: [B, H, W, C]; cond: [B, D].
  """
  dtype: str = FLOAT32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    c = x.shape[-1]
    x = nn.GroupNorm(num_groups=num_groups(c), epsilon=GN_EPS, use_bias=False, use_scale=False,
                     name="norm")(x)
    scale, shift = jnp.split(Dense(2 * c, name="linear", dtype=self.dtype)(cond), 2, axis=-1)
    return x * (1 + scale[:, None, None, :]) + shift[:, None, None, :]


class SelfAttention2d(nn.Module):
  """Multi-head self-attention over the H*W positions, residual, zero-initialised output projection.

  x: [B, H, W, C] -> [B, H, W, C]. Heads: max(1, C // 8) (DIAMOND). As in DIAMOND, the residual is
  added to the *normalised* input.
  """
  head_dim: int = ATTN_HEAD_DIM
  dtype: str = FLOAT32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    n_head = max(1, c // self.head_dim)
    x = GroupNorm(name="norm")(x)
    qkv = Conv1x1(3 * c, name="qkv_proj", dtype=self.dtype)(x).reshape(b, h * w, 3, n_head, c // n_head)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]   # [B, HW, heads, d]
    att = precision.einsum("bqhd,bkhd->bhqk", q, k, self.dtype) / math.sqrt(c // n_head)
    y = precision.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(att, axis=-1), v, self.dtype).reshape(b, h, w, c)
    out = nn.Conv(c, (1, 1), kernel_init=zeros_init, name="out_proj",
                  conv_general_dilated=precision.conv_hook(self.dtype))(y)
    return x + out


class FourierFeatures(nn.Module):
  """cos/sin(2 pi * c_noise * W) with a fixed random W ~ N(0, 1) of shape [1, D / 2].

  W is a compile-time constant drawn from `seed` (DIAMOND registers it as a non-trained buffer): it is not
  in any variable collection, so no optimizer can update it. c_noise: [B] -> [B, D].
  """
  features: int
  seed: int = 0

  @nn.compact
  def __call__(self, c_noise: jax.Array) -> jax.Array:
    assert self.features % 2 == 0 and c_noise.ndim == 1
    weight = np.random.default_rng(self.seed).standard_normal((1, self.features // 2)).astype(np.float32)
    f = 2 * math.pi * c_noise[:, None] * jnp.asarray(weight)
    return jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)


class Downsample(nn.Module):
  """3x3 conv, stride 2, padding 1, orthogonal init: [B, H, W, C] -> [B, H/2, W/2, C]."""
  dtype: str = FLOAT32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Conv(x.shape[-1], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                   kernel_init=nn.initializers.orthogonal(), name="conv",
                   conv_general_dilated=precision.conv_hook(self.dtype))(x)


class Upsample(nn.Module):
  """Nearest-neighbour x2 then a 3x3 conv: [B, H, W, C] -> [B, 2H, 2W, C]."""
  dtype: str = FLOAT32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return Conv3x3(x.shape[-1], name="conv", dtype=self.dtype)(x)


class SmallResBlock(nn.Module):
  """Unconditioned residual block: skip(x) + conv3x3(silu(GN(x))) (DIAMOND's actor-critic block)."""
  out_channels: int
  dtype: str = FLOAT32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    skip = (x if x.shape[-1] == self.out_channels
            else Conv1x1(self.out_channels, name="skip_projection", dtype=self.dtype)(x))
    y = Conv3x3(self.out_channels, name="conv", dtype=self.dtype)(nn.silu(GroupNorm(name="norm")(x)))
    return skip + y


class ResBlock(nn.Module):
  """Residual block conditioned through AdaGroupNorm; second conv zero-initialised; optional attention.

  x: [B, H, W, Cin], cond: [B, D] -> [B, H, W, out_channels].
  """
  out_channels: int
  attn: bool = False
  dtype: str = FLOAT32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    dt = self.dtype
    r = x if x.shape[-1] == self.out_channels else Conv1x1(self.out_channels, name="proj", dtype=dt)(x)
    x = Conv3x3(self.out_channels, name="conv1", dtype=dt)(nn.silu(AdaGroupNorm(name="norm1", dtype=dt)(x, cond)))
    x = Conv3x3(self.out_channels, zero_init=True, name="conv2", dtype=dt)(
        nn.silu(AdaGroupNorm(name="norm2", dtype=dt)(x, cond)))
    x = x + r
    if self.attn:
      x = SelfAttention2d(name="attn", dtype=dt)(x)
    return x


class PlainResBlock(nn.Module):
  """ResBlock without conditioning (GroupNorm in place of AdaGroupNorm); second conv zero-initialised.

  x: [B, H, W, Cin] -> [B, H, W, out_channels]. Used by the JEDI encoder.
  """
  out_channels: int
  dtype: str = FLOAT32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dt = self.dtype
    r = x if x.shape[-1] == self.out_channels else Conv1x1(self.out_channels, name="proj", dtype=dt)(x)
    x = Conv3x3(self.out_channels, name="conv1", dtype=dt)(nn.silu(GroupNorm(name="norm1")(x)))
    x = Conv3x3(self.out_channels, zero_init=True, name="conv2", dtype=dt)(nn.silu(GroupNorm(name="norm2")(x)))
    return x + r


class ResBlocks(nn.Module):
  """A sequence of ResBlocks; optionally concatenates a skip tensor before each block (U-Net decoder).

  Returns (x, outputs of every block). `remat`: each block rematerialised (`maybe_remat`).
  """
  out_channels: Sequence[int]
  attn: bool = False
  dtype: str = FLOAT32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, to_cat: Optional[Sequence[jax.Array]] = None):
    outputs = []
    for i, c in enumerate(self.out_channels):
      if to_cat is not None:
        x = jnp.concatenate([x, to_cat[i]], axis=-1)
      x = maybe_remat(ResBlock, self.remat)(c, self.attn, name=f"resblocks_{i}", dtype=self.dtype)(x, cond)
      outputs.append(x)
    return x, outputs


class UNet(nn.Module):
  """DIAMOND's U-Net: per level ResBlocks (+Downsample), 2 attention mid blocks, mirrored decoder with skips.

  With a single level there is no down/upsampling (JEDI's 1-level latent U-Net). x: [B, H, W, channels[0]]
  -> [B, H, W, channels[0]]. H and W are zero-padded up to a multiple of 2^(levels - 1), then cropped.
  """
  channels: Sequence[int]
  depths: Sequence[int]
  attn_depths: Optional[Sequence[bool]] = None
  dtype: str = FLOAT32
  remat: bool = False   # each ResBlock rematerialised (`maybe_remat`)

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    assert len(self.channels) == len(self.depths)
    attn_depths = self.attn_depths or (False,) * len(self.channels)
    _, h, w, _ = x.shape
    n = len(self.channels) - 1
    pad_h, pad_w = math.ceil(h / 2**n) * 2**n - h, math.ceil(w / 2**n) * 2**n - w
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))

    d_outputs = []
    for i, (c, d) in enumerate(zip(self.channels, self.depths)):
      x_down = x if i == 0 else Downsample(name=f"downsamples_{i}", dtype=self.dtype)(x)
      x, outs = ResBlocks([c] * d, attn_depths[i], name=f"d_blocks_{i}", dtype=self.dtype,
                         remat=self.remat)(x_down, cond)
      d_outputs.append((x_down, *outs))

    x, _ = ResBlocks([self.channels[-1]] * 2, True, name="mid_blocks", dtype=self.dtype,
                    remat=self.remat)(x, cond)

    for j, i in enumerate(reversed(range(len(self.channels)))):
      c1, c2 = self.channels[max(0, i - 1)], self.channels[i]
      x_up = x if j == 0 else Upsample(name=f"upsamples_{j}", dtype=self.dtype)(x)
      skip = d_outputs[i][::-1]
      x, _ = ResBlocks([c2] * self.depths[i] + [c1], attn_depths[i], name=f"u_blocks_{j}", dtype=self.dtype,
                      remat=self.remat)(
          x_up, cond, skip)

    return x[:, :h, :w]


LSTMState = tuple  # (h [B, H], c [B, H])


def lstm_zero_state(batch_size: int, features: int, dtype=None) -> LSTMState:
  """Zero (h, c) for an LSTMCell of `features` units; `dtype` None: JAX's default float (float32, or float64
  under `jax.enable_x64`, as the float64 gradient checks of tests/test_world_model.py use)."""
  z = jnp.zeros((batch_size, features), dtype)
  return (z, z)


class LSTMCell(nn.Module):
  """PyTorch-ordered (i, f, g, o) LSTM cell with DIAMOND's init_lstm initialisation.

  Input weights Xavier-uniform, recurrent weights orthogonal, bias zero except the forget gate (1).
  (PyTorch keeps two bias vectors that sum; one suffices here.)
  __call__(state=(h, c) [B, H] each, x [B, D]) -> (new_state, h [B, H]). For a sequence, compute
  `input_gates` for all steps at once and scan `step_from_gates`: only h @ W_hh stays inside the loop.
  """
  features: int
  dtype: str = FLOAT32

  def setup(self):
    hidden = self.features

    def bias_init(key, shape, dtype=jnp.float32):
      del key
      return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)   # forget gate (DIAMOND init_lstm)

    dot = precision.dot_general_hook(self.dtype)
    self.ih = nn.Dense(4 * hidden, kernel_init=nn.initializers.xavier_uniform(), bias_init=bias_init, dot_general=dot)
    self.hh = nn.Dense(4 * hidden, use_bias=False, kernel_init=nn.initializers.orthogonal(), dot_general=dot)

  def input_gates(self, x: jax.Array) -> jax.Array:
    """x [..., D] -> the input's contribution to the gates [..., 4H] (bias included)."""
    return self.ih(x)

  def step_from_gates(self, state: LSTMState, gates_x: jax.Array):
    """One step given precomputed input gates [B, 4H] -> (new_state, h [B, H])."""
    h, c = state
    i, f, g, o = jnp.split(gates_x + self.hh(h), 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h

  def __call__(self, state: LSTMState, x: jax.Array):
    return self.step_from_gates(state, self.input_gates(x))
