"""Where the latent clamp sits: an exact prediction must pass through sampling and the own-prediction switch.

The encoder's targets are already C(E(x)) in (-3, 3). Applying C = 3 tanh(./3) again to every denoised estimate
(the "tanh" ablation) shrinks a perfect prediction; the default "clip" leaves in-range latents unchanged.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import config as config_lib
from jedi_jax import diffusion
from jedi_jax import world_model as wm
from test_world_model import NUM_ACTIONS, wm_config


class _ExactDenoiserNet:
  """Stands in for the denoiser network: its output F makes D(x; sigma) = c_skip x + c_out F equal `target`.

  It sees what the real network sees (c_in x, c_noise = ln(sigma_eff) / 4) and inverts the EDM scalings.
  """

  def __init__(self, target, config):
    self.target, self.config = target, config

  def apply(self, variables, x_in, c_noise, cond, cond_actions):
    del variables, cond, cond_actions
    sigma_eff = jnp.exp(4.0 * c_noise)
    sigma_data = self.config.wm.sigma_data
    # The EDM scalings of sigma_eff (offset already inside): recompute them with a zero offset.
    c_in, c_out, c_skip, _ = diffusion.edm_scalings(sigma_eff, sigma_data, 0.0)
    x = x_in / c_in[:, None, None, None]
    return (self.target - c_skip[:, None, None, None] * x) / c_out[:, None, None, None]


def _in_range_latents(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-2.9, 2.9, shape), jnp.float32)


def _sample_from_exact_denoiser(monkeypatch, batch, **overrides):
  """(target y, `sample_next`'s output) for a denoiser that always predicts y; overrides: section__field=v."""
  cfg = config_lib.to_config_dict(wm_config())
  for path, value in overrides.items():
    section, field = path.split("__")
    cfg[section][field] = value
  cfg = config_lib.freeze(cfg)
  s = wm.state_shape(cfg)
  target = _in_range_latents((batch,) + s)
  monkeypatch.setattr(wm, "_denoiser_net", lambda c, n: _ExactDenoiserNet(target, c))
  params = {"denoiser": {"act_emb": {"embedding": jnp.zeros((NUM_ACTIONS, 2))}}}
  cond = jnp.zeros((batch, cfg.wm.num_cond) + s)
  out = wm.sample_next(params, cond, jnp.zeros((batch, cfg.wm.num_cond), jnp.int32), jax.random.PRNGKey(1), cfg)
  return target, out


@pytest.mark.parametrize("num_steps,order", [(3, 1), (2, 2)])
def test_clamp_sampler_returns_exact_prediction(monkeypatch, num_steps, order):
  """A denoiser that always predicts y (|y| < 3) makes `sample_next` return y, at any sampler setting."""
  target, out = _sample_from_exact_denoiser(monkeypatch, 3, sampler__num_steps=num_steps, sampler__order=order)
  np.testing.assert_allclose(np.asarray(out), np.asarray(target), atol=2e-5)


def test_clamp_tanh_ablation_shrinks_exact_prediction(monkeypatch):
  """The kept ablation ("tanh") is the earlier C-on-every-estimate: y comes out as C(y), not y."""
  target, out = _sample_from_exact_denoiser(monkeypatch, 2, wm__prediction_clamp="tanh")
  np.testing.assert_allclose(np.asarray(out), np.asarray(wm.clamp_latent(target)), atol=2e-5)
  assert float(jnp.max(jnp.abs(out - target))) > 0.5   # 23% of 2.9


def test_clamp_own_prediction_is_exact(monkeypatch):
  """`denoise` (whose estimate feeds the own-prediction switch) returns an exact in-range prediction as is,
  and out-of-range estimates are bounded to [-3, 3]."""
  config = wm_config()
  s = wm.state_shape(config)
  target = _in_range_latents((2,) + s).at[0, 0, 0, 0].set(7.0)
  monkeypatch.setattr(wm, "_denoiser_net", lambda cfg, n: _ExactDenoiserNet(target, cfg))
  params = {"denoiser": {"act_emb": {"embedding": jnp.zeros((NUM_ACTIONS, 2))}}}
  noisy = _in_range_latents((2,) + s, seed=3)
  _, denoised = wm.denoise(params, noisy, jnp.asarray([0.1, 2.0]), jnp.zeros((2, config.wm.num_cond) + s),
                           jnp.zeros((2, config.wm.num_cond), jnp.int32), config)
  np.testing.assert_allclose(np.asarray(denoised), np.asarray(jnp.clip(target, -3, 3)), atol=2e-5)


def test_clamp_prediction_kinds():
  y = jnp.asarray([-5.0, -2.9, -1.0, 0.0, 1.0, 2.0, 2.9, 5.0])
  np.testing.assert_array_equal(wm.clamp_prediction(y, "clip"), jnp.clip(y, -3, 3))
  np.testing.assert_array_equal(wm.clamp_prediction(y, "none"), y)
  # C(y) shrinks in-range values: 3.5% at 1, 13% at 2, 23% at 2.9 (the bias the default removes).
  shrink = 1 - wm.clamp_prediction(jnp.asarray([1.0, 2.0, 2.9]), "tanh") / jnp.asarray([1.0, 2.0, 2.9])
  np.testing.assert_allclose(np.asarray(shrink), [0.035, 0.13, 0.23], atol=0.01)
  with pytest.raises(ValueError, match="prediction_clamp"):
    wm.clamp_prediction(y, "bogus")
