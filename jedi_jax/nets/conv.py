"""2-D convolution with a loop-friendly gradient for XLA:CPU.

On XLA:CPU (jax 0.10.2) the gradients of a convolution run 5-30x slower inside a `while` loop (`lax.scan`,
`fori_loop`) than in straight-line code: the weight gradient and the input gradient are emitted as generic
convolutions that miss the fast Eigen path. The training epoch runs every update inside such a loop, so on CPU
both gradients are rewritten into forms that stay fast there (docs/benchmarks.md, "XLA:CPU and gradients
inside loops"):

  * weight gradient: one contraction of the shifted input with the output gradient per kernel tap; at stride 1
    each tap's window is a contiguous run of rows of the flattened padded input (`_weight_grad_flat`), which
    XLA:CPU reads without the strided copy the 4-D window needs. For small inputs the taps are unrolled.
    Unrolled, XLA:CPU keeps every tap's shifted copy of the input alive, which made the paper-size batch-32
    world-model update ask for a 30.7 GB buffer; above
    `LOOP_TAPS_ABOVE_BYTES` per input the taps run in a `fori_loop`, one shifted copy at a time (13.5 GB).
  * input gradient: for stride 1 and SAME padding, a forward convolution of the output gradient with the
    flipped, transposed kernel; otherwise (the stride-2 Downsample) XLA's own, which stays fast in loops.

The strided weight gradient mattered most: XLA's ran ~100x slower inside a loop (0.42 s vs 41 s for the
encoder's first Downsample at paper sizes, batch 4). Values equal XLA's own gradients to float32 rounding
(tests/test_conv.py). On GPU/TPU the plain XLA convolution and its gradients are used: the platform the program
is lowered for decides (`jax.lax.platform_dependent`), not the host's default backend.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_DN = ("NHWC", "HWIO", "NHWC")
# Inputs larger than this (bytes) get the looped weight gradient. The `cpu` and `debug` presets stay below it
# (their largest conv input, 208 frames x 64 x 64 x 8 float32, is 27 MB); paper sizes go above it.
LOOP_TAPS_ABOVE_BYTES = 64 * 2**20


Padding = tuple[tuple[int, int], tuple[int, int]]


def _same_padding(kh: int, kw: int) -> Padding:
  return ((kh // 2, kh // 2), (kw // 2, kw // 2))


def _conv(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_cpu(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
  """x [N, H, W, C], w [kh, kw, C, O] -> [N, H', W', O]; explicit padding ((top, bottom), (left, right)).
  XLA's convolution; its gradients are the loop-friendly ones when the program is lowered for CPU."""
  return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _bwd(strides, padding, res, dy):
  # Chosen by the platform the program is lowered for, not by the host's default backend: a program traced on
  # a CPU host for a TPU (experiments/aot_check.py) gets XLA's gradients. Lowering keeps one branch. Only the
  # backward pass is platform-dependent: a `platform_dependent` around the whole convolution was differentiated
  # through its `cond`, and tracing the debug preset's world-model update took 55 s instead of 4 s.
  return jax.lax.platform_dependent(res, dy, cpu=functools.partial(_cpu_grads, strides, padding),
                                    default=functools.partial(_xla_grads, strides, padding))


def _xla_grads(strides, padding, res, dy):
  x, w = res
  return jax.vjp(lambda x, w: _conv(x, w, strides, padding), x, w)[1](dy)


def _cpu_grads(strides, padding, res, dy):
  x, w = res
  kh, kw = w.shape[:2]
  if tuple(strides) == (1, 1) and kh % 2 == kw % 2 == 1 and padding == _same_padding(kh, kw):
    # Input gradient: correlate dy with the spatially flipped kernel, in and out channels swapped.
    dx = _conv(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), (1, 1), padding)
  else:  # XLA's own input gradient (a dilated convolution) stays fast inside loops; its weight gradient not
    dx = jax.vjp(lambda x: _conv(x, w, strides, padding), x)[1](dy)[0]
  looped = x.size * x.dtype.itemsize > LOOP_TAPS_ABOVE_BYTES
  dw = weight_grad(x, dy, (kh, kw), looped=looped, strides=strides, padding=padding)
  return dx.astype(x.dtype), dw.astype(w.dtype)


conv_cpu.defvjp(_fwd, _bwd)


def weight_grad(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int], *, looped: bool,
                strides: tuple[int, int] = (1, 1), padding: Padding | None = None) -> jax.Array:
  """Gradient of a convolution w.r.t. its kernel: x [N, H, W, C], dy [N, H', W', O] -> [kh, kw, C, O].

  One contraction of dy with the input window seen by each kernel tap (shifted, strided); `looped` runs the
  taps in a `fori_loop`, so that only one window copy of x is alive (memory), instead of unrolled (speed).
  `padding` defaults to SAME for an odd kernel.
  """
  kh, kw = kernel_hw
  sh, sw = strides
  (pt, pb), (pl, pr) = padding if padding is not None else _same_padding(kh, kw)
  n, _, _, c = x.shape
  _, ho, wo, o = dy.shape
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  if (sh, sw) == (1, 1):
    return _weight_grad_flat(xp, dy, kernel_hw, looped=looped)
  span_h, span_w = sh * (ho - 1) + 1, sw * (wo - 1) + 1  # rows/cols of xp one tap's window covers

  def window(block):
    return block[:, ::sh, ::sw, :]

  if not looped:
    taps = [window(xp[:, i:i + span_h, j:j + span_w, :]) for i in range(kh) for j in range(kw)]
    return jnp.stack([jnp.einsum("nhwc,nhwo->co", t, dy) for t in taps]).reshape(kh, kw, c, o)

  def tap(k, dw):
    block = jax.lax.dynamic_slice(xp, (0, k // kw, k % kw, 0), (n, span_h, span_w, c))
    return dw.at[k].set(jnp.einsum("nhwc,nhwo->co", window(block), dy))

  dw = jnp.zeros((kh * kw, c, o), jnp.result_type(x, dy))
  return jax.lax.fori_loop(0, kh * kw, tap, dw).reshape(kh, kw, c, o)


def _weight_grad_flat(xp: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int], *, looped: bool) -> jax.Array:
  """`weight_grad` of a stride-1 convolution, from the padded input xp [N, Hp, Wp, C] (Hp = H' + kh - 1,
  Wp = W' + kw - 1): each tap's window is one contiguous run of rows of xp flattened to [N * Hp * Wp, C].

  With dy zero-padded to [N, Hp, Wp, O] and flattened alike, the output gradient at flat position p (image n,
  row h, column w) meets the input at p + i * Wp + j for tap (i, j): that is xp[n, h + i, w + j] wherever dy is
  not a padding zero (h < H', w < W'), and where it is, the product is 0. So tap (i, j) is the product of the
  rows [off, off + L) of the flat input with the first L rows of the flat gradient, off = i * Wp + j,
  L = N * Hp * Wp - (kh - 1) * Wp - (kw - 1). A contiguous slice costs XLA:CPU a plain block copy at most,
  where the 4-D window of `weight_grad`'s general form is a strided gather (~60% of a small world-model update's
  time, `experiments/profile_cpu.py`). The price: dy's padding, (Hp * Wp) / (H' * W') more products.
  """
  kh, kw = kernel_hw
  n, hp, wp, c = xp.shape
  o = dy.shape[-1]
  flat_x = xp.reshape(n * hp * wp, c)
  flat_dy = jnp.pad(dy, ((0, 0), (0, hp - dy.shape[1]), (0, wp - dy.shape[2]), (0, 0))).reshape(n * hp * wp, o)
  length = n * hp * wp - (kh - 1) * wp - (kw - 1)
  flat_dy = flat_dy[:length]

  if not looped:
    taps = [flat_x[i * wp + j:i * wp + j + length] for i in range(kh) for j in range(kw)]
    return jnp.stack([t.T @ flat_dy for t in taps]).reshape(kh, kw, c, o)

  def tap(k, dw):
    rows = jax.lax.dynamic_slice_in_dim(flat_x, (k // kw) * wp + k % kw, length)
    return dw.at[k].set(rows.T @ flat_dy)

  dw = jnp.zeros((kh * kw, c, o), jnp.result_type(xp, dy))
  return jax.lax.fori_loop(0, kh * kw, tap, dw).reshape(kh, kw, c, o)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (Flax's `nn.Conv(conv_general_dilated=...)` hook).

  Routes undilated, ungrouped NHWC/HWIO convolutions (any stride and padding) to `conv_cpu`, whose gradients
  are the rewritten ones in a program lowered for CPU and XLA's own for GPU/TPU; everything else goes to XLA
  unchanged.
  """
  simple = (lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1
            and not any(d not in (None, 1) and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation))
            and preferred_element_type is None and precision is None
            and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN)
            == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers))
  if simple:
    strides = tuple(int(v) for v in window_strides)
    if isinstance(padding, str):
      padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    return conv_cpu(lhs, rhs, strides, tuple(tuple(int(v) for v in p) for p in padding))
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
