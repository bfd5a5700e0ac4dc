"""EDM diffusion as DIAMOND uses it (DIAMOND src/models/diffusion/denoiser.py, diffusion_sampler.py): scalings, training noise, loss, Karras sigmas, sampler.

Everything here is model-agnostic: the network enters only through a `denoise_fn(x, sigma) -> denoised`
closure. Formulas follow eloialonso/diamond (commit 5bcd159) src/models/diffusion/denoiser.py and
diffusion_sampler.py; the departures from textbook EDM are DIAMOND's and are marked where they occur.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> jax.Array:
  """Karras et al. noise levels, decreasing, with a final 0 appended (DIAMOND build_sigmas).

  Returns:
    [num_steps + 1] float32: (sigma_max^(1/rho) + l (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for
    l = linspace(0, 1, num_steps), then 0.
  """
  min_inv_rho = sigma_min ** (1.0 / rho)
  max_inv_rho = sigma_max ** (1.0 / rho)
  ramp = np.linspace(0.0, 1.0, num_steps)
  sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
  return jnp.asarray(np.concatenate([sigmas, [0.0]]), jnp.float32)


def edm_scalings(sigma: jax.Array, sigma_data: float = 0.5, sigma_offset_noise: float = 0.3):
  """EDM preconditioning (c_in, c_out, c_skip, c_noise), each shaped like `sigma`.

  DIAMOND (denoiser.py compute_conditioners) first *replaces* sigma by sqrt(sigma^2 + sigma_offset^2)
  to account for the offset noise added in training; every scaling, c_noise included, uses that value.
  """
  sigma = jnp.sqrt(sigma**2 + sigma_offset_noise**2)
  c_in = 1.0 / jnp.sqrt(sigma**2 + sigma_data**2)
  c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
  c_out = sigma * jnp.sqrt(c_skip)
  c_noise = jnp.log(sigma) / 4.0
  return c_in, c_out, c_skip, c_noise


def training_sigma_from_normal(eps: jax.Array, loc: float, scale: float, sigma_min: float,
                               sigma_max: float) -> jax.Array:
  """Training noise levels from standard normals eps [B]: sigma = exp(loc + scale eps), i.e. ln sigma ~
  N(loc, scale^2), clipped (not resampled) to [sigma_min, sigma_max] (DIAMOND). Returns [B]."""
  return jnp.clip(jnp.exp(loc + scale * eps), sigma_min, sigma_max)


def offset_noise_shape(shape) -> tuple:
  """[B, ..., C] -> [B, 1, ..., 1, C]: one offset per sample and channel."""
  return (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)


def add_noise_from_normals(clean: jax.Array, sigma: jax.Array, sigma_offset_noise: float,
                           offset_eps: jax.Array, noise_eps: jax.Array) -> jax.Array:
  """Noises `clean` [B, ..., C] at per-sample `sigma` [B] (noise_eps [B, ..., C] standard normals), plus
  DIAMOND's offset noise sigma_offset_noise * offset_eps, offset_eps [B, 1, ..., 1, C]: one value per sample
  and channel, shared over all spatial positions (DIAMOND denoiser.py apply_noise)."""
  return clean + sigma_offset_noise * offset_eps + noise_eps * _expand(sigma, clean.ndim)


def denoising_target(clean: jax.Array, noisy: jax.Array, c_skip: jax.Array, c_out: jax.Array) -> jax.Array:
  """The network's regression target (clean - c_skip noisy) / c_out; c_* are [B]."""
  return (clean - _expand(c_skip, clean.ndim) * noisy) / _expand(c_out, clean.ndim)


def denoising_loss(model_output: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Plain MSE over the samples where `mask` [B] is True (no EDM loss weighting, as DIAMOND).

  Equals torch's F.mse_loss(output[mask], target[mask]); 0 when no sample is valid.
  """
  sq = jnp.mean(jnp.square(model_output - target).reshape(model_output.shape[0], -1), axis=-1)
  mask = mask.astype(sq.dtype)
  return jnp.sum(sq * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def quantize_pixels(x: jax.Array) -> jax.Array:
  """Truncates a [-1, 1] frame to 256 levels: floor((clip(x, -1, 1) + 1) / 2 * 255) / 255 * 2 - 1.

  DIAMOND (denoiser.py wrap_model_output) casts to uint8, i.e. truncates rather than rounds.
  """
  return jnp.floor((jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0 * 255.0) / 255.0 * 2.0 - 1.0


def sample(denoise_fn: Callable[[jax.Array, jax.Array], jax.Array], key: jax.Array, shape, sigmas: jax.Array,
           *, order: int = 1, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
           s_noise: float = 1.0, unroll: bool = True) -> jax.Array:
  """DIAMOND's Euler/Heun sampler (diffusion_sampler.py DiffusionSampler.sample) as a lax.fori_loop.

  Args:
    denoise_fn: (x [*shape], sigma scalar) -> denoised estimate [*shape].
    key: PRNG key (initial noise and churn noise).
    shape: shape of the sample, batch first.
    sigmas: [N + 1] decreasing noise levels ending with 0 (`karras_sigmas`).
    order: 1 Euler, 2 Heun (the last step, to sigma 0, is always Euler).
    s_churn, s_tmin, s_tmax, s_noise: stochastic sampling (EDM's S_churn etc.).
    unroll: unroll the (few, static) steps: lets XLA fuse across steps and makes its cost analysis count
      every step (a rolled loop body is counted once).
  Returns:
    The final sample [*shape].
  """
  num_steps = sigmas.shape[0] - 1
  k_init, k_churn = jax.random.split(key)
  # The initial noise is N(0, 1), *not* scaled by sigma_max: DIAMOND's deliberate choice (diamond#40).
  x = jax.random.normal(k_init, shape)
  gamma_max = min(s_churn / num_steps, 2**0.5 - 1)

  def body(i, x):
    sigma, next_sigma = sigmas[i], sigmas[i + 1]
    if s_churn > 0:
      gamma = jnp.where((s_tmin <= sigma) & (sigma <= s_tmax), gamma_max, 0.0)
      sigma_hat = sigma * (gamma + 1)
      eps = jax.random.normal(jax.random.fold_in(k_churn, i), shape) * s_noise
      x = x + eps * jnp.sqrt(sigma_hat**2 - sigma**2)
    else:
      sigma_hat = sigma
    # DIAMOND evaluates the denoiser at sigma (not sigma_hat) even after churn.
    denoised = denoise_fn(x, sigma)
    d = (x - denoised) / sigma_hat
    dt = next_sigma - sigma_hat
    x_euler = x + d * dt
    if order == 1:
      return x_euler

    def heun(_):
      denoised_2 = denoise_fn(x_euler, next_sigma)
      d_2 = (x_euler - denoised_2) / next_sigma
      return x + (d + d_2) / 2 * dt

    return jax.lax.cond(next_sigma == 0, lambda _: x_euler, heun, None)

  return jax.lax.fori_loop(0, num_steps, body, x, unroll=unroll)


def _expand(v: jax.Array, ndim: int) -> jax.Array:
  """[B] -> [B, 1, ..., 1] with `ndim` dims."""
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))
