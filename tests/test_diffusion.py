"""Tests of jedi_jax/diffusion.py against DIAMOND's formulas, written out independently in numpy.

References (eloialonso/diamond, commit 5bcd159):
  * src/models/diffusion/diffusion_sampler.py: build_sigmas, DiffusionSampler.sample
  * src/models/diffusion/denoiser.py: compute_conditioners, apply_noise, setup_training (sample_sigma),
    wrap_model_output
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import diffusion


def _diamond_build_sigmas(num_steps, sigma_min, sigma_max, rho):
  # diffusion_sampler.py build_sigmas.
  min_inv_rho = sigma_min ** (1 / rho)
  max_inv_rho = sigma_max ** (1 / rho)
  ramp = np.linspace(0, 1, num_steps)
  sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
  return np.concatenate([sigmas, np.zeros(1)])


def _diamond_conditioners(sigma, sigma_data, sigma_offset_noise):
  # denoiser.py compute_conditioners: sigma is inflated by the offset noise first.
  sigma = np.sqrt(sigma**2 + sigma_offset_noise**2)
  c_in = 1 / np.sqrt(sigma**2 + sigma_data**2)
  c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
  c_out = sigma * np.sqrt(c_skip)
  c_noise = np.log(sigma) / 4
  return c_in, c_out, c_skip, c_noise


@pytest.mark.parametrize("num_steps,sigma_min,sigma_max,rho", [(3, 2e-3, 5.0, 7), (10, 2e-3, 20.0, 7),
                                                               (1, 2e-3, 5.0, 7), (5, 0.01, 1.0, 3)])
def test_karras_sigmas_match_diamond(num_steps, sigma_min, sigma_max, rho):
  got = np.asarray(diffusion.karras_sigmas(num_steps, sigma_min, sigma_max, rho))
  want = _diamond_build_sigmas(num_steps, sigma_min, sigma_max, rho)
  assert got.shape == (num_steps + 1,)
  assert got[-1] == 0.0 and got[0] == pytest.approx(sigma_max, rel=1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.all(np.diff(got) < 0)


def test_karras_sigmas_paper_values():
  # The sampler of the paper: 3 steps, sigma_min 2e-3, sigma_max 5, rho 7 (DIAMOND src/models/diffusion/denoiser.py, diffusion_sampler.py). Middle value by
  # hand: ((5^(1/7) + 0.002^(1/7)) / 2)^7 = 0.28308.
  got = np.asarray(diffusion.karras_sigmas(3, 2e-3, 5.0, 7.0))
  np.testing.assert_allclose(got, [5.0, 0.2830819, 0.002, 0.0], rtol=1e-5)


@pytest.mark.parametrize("sigma_data,sigma_offset", [(0.5, 0.3), (0.5, 0.0), (1.0, 0.1)])
def test_edm_scalings_match_diamond(sigma_data, sigma_offset):
  sigma = np.array([2e-3, 0.05, 0.3, 0.67, 1.0, 5.0, 20.0], np.float32)
  got = diffusion.edm_scalings(jnp.asarray(sigma), sigma_data, sigma_offset)
  want = _diamond_conditioners(sigma.astype(np.float64), sigma_data, sigma_offset)
  for name, g, w in zip(("c_in", "c_out", "c_skip", "c_noise"), got, want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-7, err_msg=name)


def test_edm_scalings_defaults_are_diamond():
  sigma = jnp.asarray([0.1, 1.0])
  for g, w in zip(diffusion.edm_scalings(sigma), diffusion.edm_scalings(sigma, 0.5, 0.3)):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def sample_training_sigma(key, batch_size, loc, scale, sigma_min, sigma_max):
  """[B] training noise levels drawn with `key` (the loss slices its normals from one draw instead)."""
  return diffusion.training_sigma_from_normal(jax.random.normal(key, (batch_size,)), loc, scale, sigma_min,
                                              sigma_max)


def add_noise(key, clean, sigma, sigma_offset_noise):
  """`clean` [B, ..., C] noised at `sigma` [B] with offset noise, normals drawn with `key`."""
  k_offset, k_noise = jax.random.split(key)
  offset_eps = jax.random.normal(k_offset, diffusion.offset_noise_shape(clean.shape), clean.dtype)
  noise_eps = jax.random.normal(k_noise, clean.shape, clean.dtype)
  return diffusion.add_noise_from_normals(clean, sigma, sigma_offset_noise, offset_eps, noise_eps)


def test_training_sigma_is_clipped_not_resampled():
  # A huge scale puts most samples outside [min, max]: clipping leaves them exactly on the bounds.
  sigma = np.asarray(sample_training_sigma(jax.random.PRNGKey(0), 4000, -0.4, 10.0, 2e-3, 20.0))
  assert sigma.min() == pytest.approx(2e-3) and sigma.max() == pytest.approx(20.0)
  assert np.mean(np.isclose(sigma, 2e-3)) > 0.2 and np.mean(np.isclose(sigma, 20.0)) > 0.2
  # The paper's distribution: ln sigma ~ N(-0.4, 1.2^2) (rarely clipped).
  sigma = np.asarray(sample_training_sigma(jax.random.PRNGKey(1), 20000, -0.4, 1.2, 2e-3, 20.0))
  assert np.log(sigma).mean() == pytest.approx(-0.4, abs=0.05)
  assert np.log(sigma).std() == pytest.approx(1.2, abs=0.05)


def test_offset_noise_is_per_sample_per_channel():
  clean = jnp.zeros((3, 5, 6, 4))
  # sigma = 0: what remains is the offset, constant over space, different across samples and channels.
  noisy = np.asarray(add_noise(jax.random.PRNGKey(0), clean, jnp.zeros(3), 0.3))
  np.testing.assert_allclose(noisy, np.broadcast_to(noisy[:, :1, :1, :], noisy.shape))
  offsets = noisy[:, 0, 0, :]
  assert len(np.unique(offsets)) == offsets.size
  # No offset: plain N(0, sigma^2) noise.
  noisy = np.asarray(add_noise(jax.random.PRNGKey(1), jnp.zeros((2, 64, 64, 3)), jnp.asarray([0.5, 2.0]), 0.0))
  assert noisy[0].std() == pytest.approx(0.5, rel=0.05) and noisy[1].std() == pytest.approx(2.0, rel=0.05)


def test_denoising_target_and_masked_loss():
  rng = np.random.default_rng(0)
  clean, noisy, out = (rng.normal(size=(4, 2, 2, 3)).astype(np.float32) for _ in range(3))
  c_skip, c_out = np.array([0.1, 0.5, 0.9, 0.3], np.float32), np.array([1.0, 0.4, 2.0, 0.7], np.float32)
  target = np.asarray(diffusion.denoising_target(clean, noisy, c_skip, c_out))
  np.testing.assert_allclose(target, (clean - c_skip[:, None, None, None] * noisy) / c_out[:, None, None, None],
                             rtol=1e-6)
  mask = np.array([True, False, True, False])
  loss = float(diffusion.denoising_loss(out, target, mask))
  assert loss == pytest.approx(np.mean((out[mask] - target[mask]) ** 2), rel=1e-5)   # F.mse_loss(out[m], t[m])
  assert float(diffusion.denoising_loss(out, target, np.zeros(4, bool))) == 0.0


def test_quantize_pixels_truncates():
  x = jnp.asarray([-2.0, -1.0, 0.0, 1.0, 3.0, 2 * 100.7 / 255 - 1])
  want = np.floor((np.clip(np.asarray(x), -1, 1) + 1) / 2 * 255) / 255 * 2 - 1
  np.testing.assert_allclose(np.asarray(diffusion.quantize_pixels(x)), want, atol=1e-6)
  # Truncation (uint8 cast), not rounding: level 100.7 -> 100.
  assert float(diffusion.quantize_pixels(x)[-1]) == pytest.approx(100 / 255 * 2 - 1, abs=1e-6)


def _stub_denoise(x, sigma):
  return 0.5 * x + 0.1 * sigma


def _initial_noise(key, shape):
  # diffusion.sample draws its initial noise from the first half of split(key), unscaled (diamond#40).
  return np.asarray(jax.random.normal(jax.random.split(key)[0], shape), np.float64)


def test_euler_one_step_from_sigma_max_by_hand():
  key, shape = jax.random.PRNGKey(3), (2, 4, 4, 3)
  sigmas = diffusion.karras_sigmas(1, 2e-3, 5.0, 7.0)   # [sigma_max, 0]
  got = np.asarray(diffusion.sample(_stub_denoise, key, shape, sigmas, order=1))
  x0 = _initial_noise(key, shape)
  assert abs(x0.std() - 1.0) < 0.25   # N(0, 1), not sigma_max * N(0, 1)
  # x1 = x0 + (x0 - D(x0, 5)) / 5 * (0 - 5) = D(x0, 5).
  d = (x0 - (0.5 * x0 + 0.1 * 5.0)) / 5.0
  np.testing.assert_allclose(got, x0 + d * (0.0 - 5.0), rtol=1e-5, atol=1e-6)


def test_euler_and_heun_by_hand_two_steps():
  key, shape = jax.random.PRNGKey(4), (3, 5)
  sigmas = jnp.asarray([5.0, 0.5, 0.0])
  x0 = _initial_noise(key, shape)
  den = lambda x, s: 0.5 * x + 0.1 * s
  # Euler.
  x1 = x0 + (x0 - den(x0, 5.0)) / 5.0 * (0.5 - 5.0)
  euler_want = x1 + (x1 - den(x1, 0.5)) / 0.5 * (0.0 - 0.5)
  euler = np.asarray(diffusion.sample(_stub_denoise, key, shape, sigmas, order=1))
  np.testing.assert_allclose(euler, euler_want, rtol=1e-5, atol=1e-6)
  # Heun on the first step; the last step (to sigma 0) is Euler.
  d = (x0 - den(x0, 5.0)) / 5.0
  x_2 = x0 + d * (0.5 - 5.0)
  d_2 = (x_2 - den(x_2, 0.5)) / 0.5
  h1 = x0 + (d + d_2) / 2 * (0.5 - 5.0)
  heun_want = h1 + (h1 - den(h1, 0.5)) / 0.5 * (0.0 - 0.5)
  heun = np.asarray(diffusion.sample(_stub_denoise, key, shape, sigmas, order=2))
  np.testing.assert_allclose(heun, heun_want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(heun, euler)


def test_sampler_deterministic_given_key_and_churn():
  sigmas = diffusion.karras_sigmas(3, 2e-3, 5.0, 7.0)
  run = lambda key, churn: np.asarray(diffusion.sample(_stub_denoise, key, (2, 3), sigmas, s_churn=churn))
  k0, k1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
  np.testing.assert_array_equal(run(k0, 0.0), run(k0, 0.0))
  assert not np.allclose(run(k0, 0.0), run(k1, 0.0))
  np.testing.assert_array_equal(run(k0, 1.0), run(k0, 1.0))
  assert not np.allclose(run(k0, 1.0), run(k0, 0.0))   # s_churn > 0 adds noise
  assert np.all(np.isfinite(run(k0, 1.0)))
