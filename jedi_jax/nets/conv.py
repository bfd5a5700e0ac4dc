"""2-D convolution with a loop-friendly gradient for XLA:CPU.

On XLA:CPU (jax 0.10.2) the gradients of a convolution run 5-30x slower inside a `while` loop (`lax.scan`,
`fori_loop`) than in straight-line code: the weight gradient and the input gradient are emitted as generic
convolutions that miss the fast Eigen path. The training epoch runs every update inside such a loop, so on CPU
both gradients are rewritten into forms that stay fast there (docs/benchmarks.md, "XLA:CPU and gradients
inside loops"):

  * weight gradient: one contraction of the shifted input with the output gradient per kernel tap. For small
    inputs the taps are unrolled (fastest). Unrolled, XLA:CPU keeps every tap's shifted copy of the input
    alive, which made the paper-size batch-32 world-model update ask for a 30.7 GB buffer; above
    `LOOP_TAPS_ABOVE_BYTES` per input the taps run in a `fori_loop`, one shifted copy at a time (13.5 GB).
  * input gradient: a forward convolution of the output gradient with the flipped, transposed kernel.

Values equal XLA's own gradients to float32 rounding (tests/test_conv.py). On GPU/TPU the plain XLA
convolution and its gradients are used. Stride 1 and 'SAME' padding only (every 3x3/1x1 conv of the nets;
strided convs keep XLA's gradient).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")
# Inputs larger than this (bytes) get the looped weight gradient. The `cpu` and `debug` presets stay below it
# (their largest conv input, 208 frames x 64 x 64 x 8 float32, is 27 MB); paper sizes go above it.
LOOP_TAPS_ABOVE_BYTES = 64 * 2**20


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv_same_cpu(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [N, H, W, C], w [kh, kw, C, O] (odd kh, kw) -> [N, H, W, O]; stride 1, SAME padding."""
  return _conv(x, w)


def _fwd(x, w):
  return _conv(x, w), (x, w)


def _bwd(res, dy):
  x, w = res
  kh, kw, c, o = w.shape
  # Input gradient: correlate dy with the spatially flipped kernel, in and out channels swapped.
  dx = _conv(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
  looped = x.size * x.dtype.itemsize > LOOP_TAPS_ABOVE_BYTES
  dw = weight_grad(x, dy, (kh, kw), looped=looped)
  return dx.astype(x.dtype), dw.astype(w.dtype)


def weight_grad(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int], *, looped: bool) -> jax.Array:
  """Gradient of a stride-1 SAME convolution w.r.t. its kernel: x [N, H, W, C], dy [N, H, W, O] -> [kh, kw, C, O].

  One contraction of the shifted input with dy per kernel tap; `looped` runs the taps in a `fori_loop`, so
  that only one shifted copy of x is alive (memory), instead of unrolled (speed).
  """
  kh, kw = kernel_hw
  n, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  if not looped:
    taps = [xp[:, i:i + h, j:j + wd, :] for i in range(kh) for j in range(kw)]
    return jnp.stack([jnp.einsum("nhwc,nhwo->co", t, dy) for t in taps]).reshape(kh, kw, c, -1)

  def tap(k, dw):
    shifted = jax.lax.dynamic_slice(xp, (0, k // kw, k % kw, 0), (n, h, wd, c))
    return dw.at[k].set(jnp.einsum("nhwc,nhwo->co", shifted, dy))

  dw = jnp.zeros((kh * kw, c, dy.shape[-1]), jnp.result_type(x, dy))
  return jax.lax.fori_loop(0, kh * kw, tap, dw).reshape(kh, kw, c, -1)


conv_same_cpu.defvjp(_fwd, _bwd)


def conv_same(x: jax.Array, w: jax.Array) -> jax.Array:
  """Stride-1 SAME convolution; the loop-friendly gradient on CPU, XLA's everywhere else."""
  if w.shape[0] % 2 == 1 and w.shape[1] % 2 == 1 and jax.default_backend() == "cpu":
    return conv_same_cpu(x, w)
  return _conv(x, w)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (Flax's `nn.Conv(conv_general_dilated=...)` hook).

  Routes stride-1, undilated, ungrouped NHWC/HWIO convolutions with 'SAME'-equivalent padding to
  `conv_same`; everything else goes to XLA unchanged.
  """
  kh, kw = rhs.shape[0], rhs.shape[1]
  same_pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
  pad_ok = (padding == "SAME" or (padding == "VALID" and kh == kw == 1)
            or (not isinstance(padding, str) and tuple(map(tuple, padding)) == same_pad))
  simple = (lhs.ndim == 4 and tuple(window_strides) == (1, 1) and feature_group_count == 1
            and batch_group_count == 1 and not any(d not in (None, 1) and tuple(d) != (1, 1)
                                                   for d in (lhs_dilation, rhs_dilation))
            and preferred_element_type is None and kh % 2 == 1 and kw % 2 == 1
            and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN)
            == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers))
  if simple and pad_ok:
    return conv_same(lhs, rhs)
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
