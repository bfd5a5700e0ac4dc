"""The CPU convolution with rewritten gradients (jedi_jax/nets/conv.py) against XLA's own convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax.nets import conv


def _xla_conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_same_cpu(x, w):
  """`conv.conv_cpu` with stride 1 and SAME padding: x [N, H, W, C], w [kh, kw, C, O] (odd kh, kw) -> [N, H, W, O]."""
  kh, kw = w.shape[:2]
  return conv.conv_cpu(x, w, (1, 1), ((kh // 2, kh // 2), (kw // 2, kw // 2)))


@pytest.mark.parametrize("kernel", [(3, 3), (1, 1), (3, 1)])
def test_values_and_gradients_match_xla(kernel):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 9, 7, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel + (5, 4)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(3, 9, 7, 4)), jnp.float32)
  loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * t)
  np.testing.assert_allclose(conv_same_cpu(x, w), _xla_conv(x, w), rtol=1e-5, atol=1e-5)
  ours = jax.grad(loss(conv_same_cpu), argnums=(0, 1))(x, w)
  ref = jax.grad(loss(_xla_conv), argnums=(0, 1))(x, w)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides,padding", [((1, 1), ((1, 1), (1, 1))), ((2, 2), ((1, 1), (1, 1))),
                                             ((2, 1), ((0, 1), (2, 0))), ((1, 1), ((0, 2), (2, 1))),
                                             ((1, 1), ((0, 0), (0, 0)))])
def test_looped_and_unrolled_weight_gradients_agree_with_a_python_loop(strides, padding):
  rng = np.random.default_rng(1)
  sh, sw = strides
  x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
  xp = np.pad(x, ((0, 0),) + padding + ((0, 0),))
  ho, wo = (xp.shape[1] - 3) // sh + 1, (xp.shape[2] - 3) // sw + 1
  dy = rng.normal(size=(2, ho, wo, 4)).astype(np.float32)
  ref = np.zeros((3, 3, 3, 4), np.float32)
  for i in range(3):
    for j in range(3):
      for a in range(ho):
        for b in range(wo):
          ref[i, j] += xp[:, sh * a + i, sw * b + j, :].T @ dy[:, a, b, :]
  for looped in (False, True):
    got = jax.jit(conv.weight_grad, static_argnums=2, static_argnames=("looped", "strides", "padding"))(
        x, dy, (3, 3), looped=looped, strides=strides, padding=padding)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides,padding", [((2, 2), ((1, 1), (1, 1))), ((2, 2), "SAME"), ((1, 2), "VALID"),
                                             ((1, 1), ((0, 2), (1, 1)))])
def test_strided_and_padded_convolutions_match_xla(strides, padding):
  """The stride-2 Downsample (and any other stride/padding) through the Flax hook: values and both gradients."""
  rng = np.random.default_rng(2)
  dn = ("NHWC", "HWIO", "NHWC")
  x = jnp.asarray(rng.normal(size=(2, 9, 8, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 5)), jnp.float32)
  ours = lambda x, w: conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
  xla = lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
  np.testing.assert_allclose(ours(x, w), xla(x, w), rtol=1e-5, atol=1e-5)
  t = jnp.asarray(rng.normal(size=xla(x, w).shape), jnp.float32)
  loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * t)
  got = jax.grad(loss(ours), argnums=(0, 1))(x, w)
  ref = jax.grad(loss(xla), argnums=(0, 1))(x, w)
  for a, b in zip(got, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # the rewritten weight gradient is the one used: XLA's is a convolution whose output has the kernel's shape
  kernel_shaped = lambda f: [e for e in _eqns(jax.make_jaxpr(jax.grad(loss(f), argnums=1))(x, w).jaxpr)
                             if e.primitive.name == "conv_general_dilated" and e.outvars[0].aval.shape == w.shape]
  assert kernel_shaped(xla) and not kernel_shaped(ours)


def _eqns(jaxpr, platform="cpu"):
  """Every equation of a jaxpr, sub-jaxprs (custom_vjp, loops) included, as lowered for `platform`: of a
  `jax.lax.platform_dependent` choice only the branch that platform takes."""
  chosen = {}  # var of a platform_index -> index of `platform`'s branch
  for e in jaxpr.eqns:
    yield e
    if e.primitive.name == "platform_index":
      options = e.params["platforms"]
      chosen[e.outvars[0]] = next(i for i, ps in enumerate(options) if ps is None or platform in ps)
    if e.primitive.name == "cond" and e.invars[0] in chosen:
      yield from _eqns(e.params["branches"][chosen[e.invars[0]]].jaxpr, platform)
      continue
    for v in e.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else [v]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _eqns(inner, platform)


def test_large_inputs_take_the_looped_gradient(monkeypatch):
  """Above the size limit the compiled gradient holds a loop (bounded memory); below it, none."""
  x = jnp.ones((2, 8, 8, 4))
  w = jnp.ones((3, 3, 4, 4))

  def lowered_grad():  # a new function each time: jit's trace cache would keep the first path
    return jax.jit(lambda x, w: jax.grad(lambda w: jnp.sum(conv_same_cpu(x, w)))(w))

  assert "while" not in lowered_grad().lower(x, w).as_text()
  monkeypatch.setattr(conv, "LOOP_TAPS_ABOVE_BYTES", x.size * 4 - 1)
  assert "while" in lowered_grad().lower(x, w).as_text()
  np.testing.assert_allclose(lowered_grad()(x, w),
                             jax.grad(lambda w: jnp.sum(_xla_conv(x, w)))(w), rtol=1e-5)


def test_flax_hook_leaves_dilated_and_grouped_convolutions_to_xla():
  x = jnp.ones((1, 8, 8, 4))
  dn = ("NHWC", "HWIO", "NHWC")
  dilated = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=dn))(x, jnp.ones((3, 3, 4, 2)))
  grouped = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), "SAME", feature_group_count=2, dimension_numbers=dn))(x, jnp.ones((3, 3, 2, 2)))
  for jaxpr in (dilated, grouped):
    assert "custom_vjp_call" not in str(jaxpr)
  routed = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, (2, 2), "SAME", dimension_numbers=dn))(x, jnp.ones((3, 3, 4, 2)))
  assert "custom_vjp_call" in str(routed)


@pytest.mark.parametrize("kind", ["jedi", pytest.param("diamond", marks=pytest.mark.after_suite)])
def test_every_conv_of_the_world_model_takes_the_rewritten_gradient(kind):
  """No kernel gradient of the world-model loss is XLA's convolution (slow inside the epoch's loop on CPU):
  a conv layer without the `conv_general_dilated` hook would show up here."""
  from test_world_model import make_batch, wm_config
  from jedi_jax import world_model as wm
  config = wm_config(kind)
  params = wm.init_world_model(config, 4, jax.random.PRNGKey(0))
  kernels = {x.shape for x in jax.tree.leaves(params) if x.ndim == 4}
  assert kernels  # the nets have conv kernels at all
  batch = make_batch(config)
  loss = lambda p: wm.world_model_loss(p, batch, jax.random.PRNGKey(1), config)[0]
  eqns = list(_eqns(jax.make_jaxpr(jax.grad(loss))(params).jaxpr))
  convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
  assert convs and not [e for e in convs if e.outvars[0].aval.shape in kernels]


def test_the_lowering_platform_picks_the_gradient_not_the_host():
  """A program traced on this CPU host for a GPU/TPU (experiments/aot_check.py) takes XLA's gradients; for the
  CPU, the rewritten ones. The choice is a `platform_dependent` branch, resolved when the program is lowered."""
  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 5))
  dn = ("NHWC", "HWIO", "NHWC")
  loss = lambda w: jnp.sum(conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) ** 2)
  jaxpr = jax.make_jaxpr(jax.grad(loss))(w).jaxpr
  kernel_shaped = lambda platform: [e for e in _eqns(jaxpr, platform) if e.primitive.name == "conv_general_dilated"
                                    and e.outvars[0].aval.shape == w.shape]
  assert kernel_shaped("tpu") and kernel_shaped("cuda") and not kernel_shaped("cpu")
