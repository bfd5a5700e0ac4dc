"""JEDI's frame encoder E_phi: a 64x64x3 frame -> a latent [8, 8, 16] (JEDI, arXiv 2505.19698).

A stem, then stages of unconditioned ResBlocks (DIAMOND's block design, GroupNorm with max(1, C // 32)
groups), a stride-2 Downsample after each stage flagged in `down`, then GroupNorm -> SiLU -> 3x3 conv to the
latent channels. The clamp C(z) = 3 tanh(z / 3) is applied by the world model (a config switch).

The stem is the paper's 3x3 conv at full resolution (`patch` 1), or, for the CPU testbeds, a `patch` x
`patch` conv with stride `patch` (non-overlapping patches, as in ViT's patch embedding) that cuts the
encoder's cost by about patch^2: the full-resolution stages are what dominates a CPU world-model update.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from jedi_jax.nets import blocks


class Encoder(nn.Module):
  """frames [N, 64, 64, 3] float in [-1, 1] -> latents [N, 8, 8, channels[-1]] (unclamped).

  With the paper's channels (32, 32, 32, 16), depths (2, 2, 2, 2), down (1, 1, 1, 0) and patch 1:
  64 -> 32 -> 16 -> 8. The output side is 64 / patch / 2^sum(down).
  """
  channels: Sequence[int]
  depths: Sequence[int]
  down: Sequence[int]
  patch: int = 1
  dtype: str = blocks.FLOAT32  # compute dtype of the convolutions (blocks.py)
  remat: bool = False          # each ResBlock rematerialised (blocks.maybe_remat; wm.remat)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    assert len(self.channels) == len(self.depths) == len(self.down)
    dt = self.dtype
    if self.patch == 1:
      x = blocks.Conv3x3(self.channels[0], name="conv_in", dtype=dt)(x)
    else:
      x = blocks.PatchConv(self.channels[0], self.patch, name="conv_in", dtype=dt)(x)
    for i, (c, d, down) in enumerate(zip(self.channels, self.depths, self.down)):
      for j in range(d):
        x = blocks.maybe_remat(blocks.PlainResBlock, self.remat)(c, name=f"stage_{i}_block_{j}", dtype=dt)(x)
      if down:
        x = blocks.Downsample(name=f"stage_{i}_down", dtype=dt)(x)
    x = nn.silu(blocks.GroupNorm(name="norm_out")(x))
    return blocks.Conv3x3(self.channels[-1], name="conv_out", dtype=dt)(x)
