"""The inner network F of the EDM denoiser (DIAMOND src/models/diffusion/inner_model.py), NHWC.

One module serves both world models:
  * JEDI's latent denoiser D_theta: 8x8x16 latents, a 1-level U-Net of 160 channels (no down/upsampling).
  * DIAMOND's pixel denoiser: 64x64x3 frames, a 4-level U-Net of 64 channels.
The conditioning vector is MLP(Fourier(c_noise) + concat of the num_cond past action embeddings), fed to
every ResBlock through AdaGroupNorm. The EDM preconditioning around F lives in `jedi_jax/world_model.py`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jedi_jax.nets import blocks


class DenoiserNet(nn.Module):
  """F(c_in x, c_noise, cond / sigma_data, actions).

  Attributes:
    out_channels: channels of the predicted state (16 latent, 3 RGB).
    channels, depths: U-Net levels (one level = no downsampling).
    cond_channels: width of the conditioning vector (divisible by num_cond and by 2).
    num_cond: number of conditioning states and actions.
    num_actions: size of the action embedding table.
  """
  out_channels: int
  channels: Sequence[int]
  depths: Sequence[int]
  cond_channels: int
  num_cond: int
  num_actions: int
  dtype: str = blocks.FLOAT32  # compute dtype of the convolutions and matmuls (blocks.py)
  remat: bool = False          # each U-Net ResBlock rematerialised (blocks.maybe_remat; wm.remat)

  @nn.compact
  def __call__(self, noisy_scaled: jax.Array, c_noise: jax.Array, cond_scaled: jax.Array,
               actions: jax.Array) -> jax.Array:
    """Args: noisy_scaled [B, H, W, C], c_noise [B], cond_scaled [B, num_cond, H, W, C], actions [B, num_cond].

    Returns: the network output F [B, H, W, C] (zero at init: the output conv is zero-initialised).
    """
    b, t, h, w, c = cond_scaled.shape
    assert t == self.num_cond and self.cond_channels % self.num_cond == 0
    act_emb = nn.Embed(self.num_actions, self.cond_channels // self.num_cond, embedding_init=blocks.embed_init,
                       name="act_emb")(actions)
    cond = blocks.FourierFeatures(self.cond_channels, name="noise_emb")(c_noise) + act_emb.reshape(b, -1)
    dt = self.dtype
    cond = blocks.Dense(self.cond_channels, name="cond_proj_0", dtype=dt)(cond)
    cond = blocks.Dense(self.cond_channels, name="cond_proj_1", dtype=dt)(nn.silu(cond))
    # Past states stacked on channels, time-major (DIAMOND: b t c h w -> b (t c) h w), then the noisy one.
    stacked = jnp.transpose(cond_scaled, (0, 2, 3, 1, 4)).reshape(b, h, w, t * c)
    x = blocks.Conv3x3(self.channels[0], name="conv_in", dtype=dt)(jnp.concatenate([stacked, noisy_scaled], axis=-1))
    x = blocks.UNet(self.channels, self.depths, name="unet", dtype=dt, remat=self.remat)(x, cond)
    x = nn.silu(blocks.GroupNorm(name="norm_out")(x))
    return blocks.Conv3x3(self.out_channels, zero_init=True, name="conv_out", dtype=dt)(x)
