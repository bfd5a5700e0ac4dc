"""The CPU convolution with rewritten gradients (jedi_jax/nets/conv.py) against XLA's own convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax.nets import conv


def _xla_conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("kernel", [(3, 3), (1, 1), (3, 1)])
def test_values_and_gradients_match_xla(kernel):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 9, 7, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel + (5, 4)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(3, 9, 7, 4)), jnp.float32)
  loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * t)
  np.testing.assert_allclose(conv.conv_same_cpu(x, w), _xla_conv(x, w), rtol=1e-5, atol=1e-5)
  ours = jax.grad(loss(conv.conv_same_cpu), argnums=(0, 1))(x, w)
  ref = jax.grad(loss(_xla_conv), argnums=(0, 1))(x, w)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_looped_and_unrolled_weight_gradients_agree_with_a_python_loop():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
  dy = rng.normal(size=(2, 6, 5, 4)).astype(np.float32)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.zeros((3, 3, 3, 4), np.float32)
  for i in range(3):
    for j in range(3):
      for a in range(6):
        for b in range(5):
          ref[i, j] += xp[:, a + i, b + j, :].T @ dy[:, a, b, :]
  for looped in (False, True):
    got = jax.jit(conv.weight_grad, static_argnums=2, static_argnames="looped")(x, dy, (3, 3), looped=looped)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_large_inputs_take_the_looped_gradient(monkeypatch):
  """Above the size limit the compiled gradient holds a loop (bounded memory); below it, none."""
  x = jnp.ones((2, 8, 8, 4))
  w = jnp.ones((3, 3, 4, 4))

  def lowered_grad():  # a new function each time: jit's trace cache would keep the first path
    return jax.jit(lambda x, w: jax.grad(lambda w: jnp.sum(conv.conv_same_cpu(x, w)))(w))

  assert "while" not in lowered_grad().lower(x, w).as_text()
  monkeypatch.setattr(conv, "LOOP_TAPS_ABOVE_BYTES", x.size * 4 - 1)
  assert "while" in lowered_grad().lower(x, w).as_text()
  np.testing.assert_allclose(lowered_grad()(x, w),
                             jax.grad(lambda w: jnp.sum(_xla_conv(x, w)))(w), rtol=1e-5)


def test_flax_hook_routes_only_simple_convolutions():
  x = jnp.ones((1, 8, 8, 2))
  w = jnp.ones((3, 3, 2, 2))
  dn = ("NHWC", "HWIO", "NHWC")
  same = conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
  strided = conv.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dn)
  np.testing.assert_allclose(same, _xla_conv(x, w))
  assert strided.shape == (1, 4, 4, 2)
  np.testing.assert_allclose(
      strided, jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dn))
