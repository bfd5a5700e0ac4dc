"""Mixed precision (`run.compute_dtype`): the convolutions and matmuls of the networks in a lower compute
dtype (bfloat16), everything else in float32.

Only the operands of a convolution or matmul are cast; its result comes back as float32, so norms,
activations, residual sums, the LSTM state, losses, params, optimiser states and the replay stay float32 (the
"float32 master weights, bf16 matmul operands" recipe of Micikevicius et al., arXiv 1710.03740, with bf16 as
on TPUs' MXU, which multiplies bf16 and accumulates in float32). The gradients flow back through the casts, so
the param gradients are float32 too.

float32 leaves every layer exactly as it was (the hooks below are then the float32 layers' own), so a float32
program is the same program as before the option existed.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jedi_jax.nets.conv import conv_general_dilated as loop_friendly_conv

FLOAT32 = "float32"


def _cast_operands(fn: Callable, dtype: str) -> Callable:
  """`fn(lhs, rhs, ...)` on `dtype` operands, its result cast back to the operands' own (float32) dtype."""
  @functools.wraps(fn)
  def cast(lhs, rhs, *args, **kwargs):
    out_dtype = jnp.result_type(lhs, rhs)
    return fn(lhs.astype(dtype), rhs.astype(dtype), *args, **kwargs).astype(out_dtype)
  return cast


def conv_hook(dtype: str = FLOAT32) -> Callable:
  """The `conv_general_dilated` of every Flax conv of the nets: the loop-friendly convolution (conv.py), its
  operands in `dtype`."""
  return loop_friendly_conv if dtype == FLOAT32 else _cast_operands(loop_friendly_conv, dtype)


def dot_general_hook(dtype: str = FLOAT32) -> Callable | None:
  """The `dot_general` of every Flax Dense of the nets (None: Flax's default, float32)."""
  return None if dtype == FLOAT32 else _cast_operands(jax.lax.dot_general, dtype)


def einsum(subscripts: str, a: jax.Array, b: jax.Array, dtype: str = FLOAT32) -> jax.Array:
  """`jnp.einsum` of two operands in `dtype`, result in the operands' own dtype (attention scores and mixing)."""
  if dtype == FLOAT32:
    return jnp.einsum(subscripts, a, b)
  return jnp.einsum(subscripts, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.result_type(a, b))
