"""A pixel decoder for *viewing* JEDI latents, trained after the fact on stop-gradient latents.

JEDI has no decoder: its world model never leaves latent space. To look at what it imagines, this module
fits a small convolutional decoder `[8, 8, C] -> 64x64x3` to frames from a trained run's replay, with the
encoder frozen (its latents pass through `stop_gradient` and the world-model params are never updated), so
it cannot change training. It then decodes open-loop latent rollouts next to the real frames
(`experiments/imagination_strip.py`).

  dec_params = init_decoder(key, latent_shape)
  loss = decoder_loss(dec_params, wm_params, obs, config)     # MSE in [-1, 1] pixel space
  frames = decode(dec_params, latents)                         # uint8 [..., 64, 64, 3]
  latents = open_loop_rollout(wm_params, obs, actions, key, config)
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jedi_jax import world_model
from jedi_jax.nets import blocks
from jedi_jax.types import PyTree



class Decoder(nn.Module):
  """latents [N, 8, 8, C] -> frames [N, 64, 64, 3] in [-1, 1]: three (upsample, residual block) stages."""
  channels: Sequence[int] = (64, 32, 16, 16)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    x = blocks.Conv3x3(self.channels[0], name="conv_in")(z)
    x = blocks.PlainResBlock(self.channels[0], name="block_0")(x)
    for i, c in enumerate(self.channels[1:], start=1):
      x = blocks.Upsample(name=f"up_{i}")(x)
      x = blocks.PlainResBlock(c, name=f"block_{i}")(x)
    x = nn.silu(blocks.GroupNorm(name="norm_out")(x))
    return jnp.tanh(blocks.Conv3x3(3, name="conv_out")(x))


def init_decoder(key: jax.Array, latent_shape: Sequence[int]) -> PyTree:
  return Decoder().init(key, jnp.zeros((1,) + tuple(latent_shape)))["params"]


def decode_float(dec_params, latents: jax.Array) -> jax.Array:
  """latents [..., 8, 8, C] -> frames [..., 64, 64, 3] float in [-1, 1]."""
  lead = latents.shape[:-3]
  x = Decoder().apply({"params": dec_params}, latents.reshape((-1,) + latents.shape[-3:]))
  return x.reshape(lead + x.shape[1:])


def decode(dec_params, latents: jax.Array) -> jax.Array:
  """latents [..., 8, 8, C] -> uint8 frames [..., 64, 64, 3]."""
  x = decode_float(dec_params, latents)
  return jnp.clip(jnp.round((x + 1) * 127.5), 0, 255).astype(jnp.uint8)


def decoder_loss(dec_params, wm_params, obs: jax.Array, config) -> jax.Array:
  """Pixel MSE of decode(stop_gradient(encode(obs))) against obs in [-1, 1]; obs uint8 [N, 64, 64, 3]."""
  z = jax.lax.stop_gradient(world_model.encode(wm_params, obs, config))
  target = world_model.normalize_frames(obs)
  return jnp.mean(jnp.square(decode_float(dec_params, z) - target))


def decoder_optimizer(lr: float = 1e-3) -> optax.GradientTransformation:
  return optax.adam(lr)


def decoder_update(dec_params, opt_state, wm_params, obs: jax.Array, config, optimizer):
  """One Adam step on the decoder only -> (dec_params, opt_state, loss)."""
  loss, grads = jax.value_and_grad(decoder_loss)(dec_params, wm_params, obs, config)
  updates, opt_state = optimizer.update(grads, opt_state, dec_params)
  return optax.apply_updates(dec_params, updates), opt_state, loss


def open_loop_rollout(wm_params, obs: jax.Array, actions: jax.Array, key: jax.Array, config) -> jax.Array:
  """Imagines latents from the first `num_cond` real frames, driven by the recorded actions.

  obs [B, K + H, 64, 64, 3] uint8 (only the first K = wm.num_cond frames are used), actions [B, K + H - 1]
  int (the actions taken after each frame). Returns imagined latents [B, H, *S] for frames K .. K + H - 1,
  each sampled by `world_model.sample_next` (config.sampler) from the previous K states, own predictions
  included: the same open-loop sampling as imagination, with the real actions in place of the policy's.
  """
  k = config.wm.num_cond
  horizon = obs.shape[1] - k
  window = world_model.encode(wm_params, obs[:, :k], config)

  def step(window, inputs):
    t, key = inputs
    cond_actions = jax.lax.dynamic_slice_in_dim(actions, t, k, axis=1)
    nxt = world_model.sample_next(wm_params, window, cond_actions, key, config)
    return jnp.concatenate([window[:, 1:], nxt[:, None]], axis=1), nxt

  _, latents = jax.lax.scan(step, window, (jnp.arange(horizon), jax.random.split(key, horizon)))
  return jnp.swapaxes(latents, 0, 1)


def fit_decoder(wm_params, replay, key: jax.Array, num_steps: int, batch_size: int, config, log=print,
                chunk: int = 250) -> PyTree:
  """A viewing decoder fitted for `num_steps` Adam steps on single replay frames (encoder frozen); returns its
  params. `num_steps` = 0 gives the untrained decoder (for tests)."""
  from jedi_jax import replay as replay_lib  # pylint: disable=import-outside-toplevel
  optimizer = decoder_optimizer()
  key, k_init = jax.random.split(key)
  dec_params = init_decoder(k_init, world_model.state_shape(config))
  opt_state = optimizer.init(dec_params)
  chunk = max(1, min(chunk, num_steps))

  @jax.jit
  def train_chunk(dec_params, opt_state, wm_params, key):
    def one(carry, k):
      p, o = carry
      seg = replay_lib.sample_segments(replay, k, batch_size, 1, weights=(1.0,), pad_after_end=False)
      p, o, loss = decoder_update(p, o, wm_params, seg.obs[:, 0], config, optimizer)
      return (p, o), loss
    (dec_params, opt_state), losses = jax.lax.scan(one, (dec_params, opt_state), jax.random.split(key, chunk))
    return dec_params, opt_state, losses.mean()

  for done in range(0, num_steps, chunk):
    key, k = jax.random.split(key)
    dec_params, opt_state, loss = train_chunk(dec_params, opt_state, wm_params, k)
    log(f"viewing decoder step {done + chunk}: pixel MSE {float(loss):.4f}")
  return dec_params


def pixel_frames(states: jax.Array) -> jax.Array:
  """The pixel baseline's states (frames in [-1, 1]) -> uint8 frames: its own view, no decoder needed."""
  return jnp.clip(jnp.round((states + 1) * 127.5), 0, 255).astype(jnp.uint8)


def open_loop_frames(wm_params, replay, key: jax.Array, config, *, horizon: int, examples: int,
                     decoder_steps: int = 3000, batch_size: int = 32, log=print) -> dict:
  """Real frames next to imagined ones, from `examples` unpadded replay segments imagined open loop for
  `horizon` steps with the recorded actions (`open_loop_rollout`), as uint8 [E, horizon, 64, 64, 3]:

    real    the recorded frames;
    recon   the encoder's latents of those frames, viewed (JEDI: the viewing decoder's own error; the pixel
            baseline: the frames themselves);
    dream   the imagined states, viewed (JEDI: through a viewing decoder fitted here for `decoder_steps`
            steps; the pixel baseline: its own frames).

  Raises ValueError when the replay holds no unpadded segment of `num_cond + horizon` frames."""
  from jedi_jax import replay as replay_lib  # pylint: disable=import-outside-toplevel
  k_fit, k_seg, k_roll = jax.random.split(key, 3)
  if config.wm.kind == "jedi":
    dec_params = fit_decoder(wm_params, replay, k_fit, decoder_steps, batch_size, config, log=log)
    view = jax.jit(lambda s: decode(dec_params, s))
  else:
    view = jax.jit(pixel_frames)
  k = config.wm.num_cond
  seg = replay_lib.sample_segments(replay, k_seg, 64, k + horizon - 1, weights=tuple(config.replay.sample_weights),
                                   pad_after_end=False)
  full = jnp.nonzero(seg.mask.all(axis=1))[0][:examples]
  if len(full) == 0:
    raise ValueError(f"the replay holds no unpadded segment of {k + horizon} frames")
  obs, act = seg.obs[full], seg.act[full]
  imagined = jax.jit(lambda o, a, r: open_loop_rollout(wm_params, o, a, r, config))(obs, act, k_roll)
  real = obs[:, k:]
  return {"real": real, "recon": view(world_model.encode(wm_params, real, config)), "dream": view(imagined)}
