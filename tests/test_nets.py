"""Tests of the Flax modules in jedi_jax/nets (DIAMOND's blocks, the encoder, denoiser, reward/end model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax.nets import blocks
from jedi_jax.nets.denoiser import DenoiserNet
from jedi_jax.nets.encoder import Encoder
from jedi_jax.nets.reward_end import RewEndModel

KEY = jax.random.PRNGKey(0)


def _np_group_norm(x, groups, eps=1e-5):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_group_count_is_diamonds():
  assert [blocks.num_groups(c) for c in (3, 16, 32, 64, 80, 160, 320)] == [1, 1, 1, 2, 2, 5, 10]


def test_group_norm_and_ada_group_norm():
  x = np.random.default_rng(0).normal(size=(2, 4, 4, 64)).astype(np.float32)
  gn = blocks.GroupNorm()
  np.testing.assert_allclose(np.asarray(gn.apply(gn.init(KEY, x), x)), _np_group_norm(x, 2), atol=1e-4)

  ada = blocks.AdaGroupNorm()
  cond = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
  params = ada.init(KEY, x, cond)["params"]
  assert set(params) == {"linear"}   # the normalisation itself has no affine parameters
  linear = np.asarray(cond @ params["linear"]["kernel"] + params["linear"]["bias"])
  scale, shift = linear[:, :64], linear[:, 64:]
  want = _np_group_norm(x, 2) * (1 + scale[:, None, None]) + shift[:, None, None]
  np.testing.assert_allclose(np.asarray(ada.apply({"params": params}, x, cond)), want, atol=1e-4)


def test_fourier_features_are_a_fixed_constant_not_a_parameter():
  ff = blocks.FourierFeatures(16)
  assert ff.init(KEY, jnp.zeros(3)) == {}   # nothing an optimizer could update
  c_noise = jnp.asarray([-1.0, 0.0, 0.7])
  out = np.asarray(ff.apply({}, c_noise))
  assert out.shape == (3, 16)
  np.testing.assert_allclose(out[:, :8] ** 2 + out[:, 8:] ** 2, 1.0, atol=1e-5)   # cos^2 + sin^2
  np.testing.assert_allclose(out[1], [1.0] * 8 + [0.0] * 8, atol=1e-6)   # c_noise = 0
  np.testing.assert_array_equal(out, np.asarray(blocks.FourierFeatures(16).apply({}, c_noise)))
  assert not np.allclose(out, np.asarray(blocks.FourierFeatures(16, seed=1).apply({}, c_noise)))


def test_resblock_is_identity_at_init_second_conv_zero():
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 16)).astype(np.float32)
  cond = jnp.ones((2, 8))
  rb = blocks.ResBlock(16)
  params = rb.init(KEY, x, cond)["params"]
  assert not np.any(np.asarray(params["conv2"]["kernel"]))
  assert np.any(np.asarray(params["conv1"]["kernel"]))
  np.testing.assert_allclose(np.asarray(rb.apply({"params": params}, x, cond)), x, atol=1e-6)
  # Channel change: the residual goes through a 1x1 projection.
  rb = blocks.ResBlock(8)
  params = rb.init(KEY, x, cond)["params"]
  proj = x @ np.asarray(params["proj"]["kernel"])[0, 0] + np.asarray(params["proj"]["bias"])
  np.testing.assert_allclose(np.asarray(rb.apply({"params": params}, x, cond)), proj, atol=1e-5)


def test_attention_output_projection_zero_at_init():
  x = np.random.default_rng(0).normal(size=(2, 4, 4, 16)).astype(np.float32)
  attn = blocks.SelfAttention2d()
  params = attn.init(KEY, x)["params"]
  assert not np.any(np.asarray(params["out_proj"]["kernel"]))
  # DIAMOND adds the residual to the normalised input.
  np.testing.assert_allclose(np.asarray(attn.apply({"params": params}, x)), _np_group_norm(x, 1), atol=1e-4)


def test_downsample_upsample_and_unet_shapes():
  x = jnp.ones((2, 10, 10, 8))
  down = blocks.Downsample()
  params = down.init(KEY, x)["params"]
  assert down.apply({"params": params}, x).shape == (2, 5, 5, 8)
  k = np.asarray(params["conv"]["kernel"]).reshape(-1, 8)   # orthogonal init: orthonormal columns
  np.testing.assert_allclose(k.T @ k, np.eye(8), atol=1e-5)
  up = blocks.Upsample()
  assert up.apply(up.init(KEY, x), x).shape == (2, 20, 20, 8)
  # 3 levels: 10x10 is padded to 12x12, then cropped back.
  unet = blocks.UNet((8, 8, 8), (1, 1, 1))
  cond = jnp.ones((2, 4))
  out = unet.apply(unet.init(KEY, x, cond), x, cond)
  assert out.shape == x.shape
  one_level = blocks.UNet((8,), (2,))
  variables = one_level.init(KEY, x, cond)
  assert not any("downsample" in k or "upsample" in k for k in variables["params"])
  assert one_level.apply(variables, x, cond).shape == x.shape


def test_lstm_cell_matches_torch_equations_and_diamond_init():
  hidden, dim = 6, 5
  cell = blocks.LSTMCell(hidden)
  state = blocks.lstm_zero_state(3, hidden)
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(2, 3, dim)).astype(np.float32)
  params = cell.init(KEY, state, xs[0])["params"]
  bias = np.asarray(params["ih"]["bias"])
  np.testing.assert_array_equal(bias, np.r_[np.zeros(hidden), np.ones(hidden), np.zeros(2 * hidden)])
  w_hh = np.asarray(params["hh"]["kernel"])   # [H, 4H]: orthonormal rows (torch orthogonal_ on [4H, H])
  np.testing.assert_allclose(w_hh @ w_hh.T, np.eye(hidden), atol=1e-5)

  sig = lambda v: 1 / (1 + np.exp(-v))
  h, c = np.zeros((3, hidden)), np.zeros((3, hidden))
  for x in xs:   # the state is carried explicitly across steps
    gates = x @ np.asarray(params["ih"]["kernel"]) + bias + h @ w_hh
    i, f, g, o = np.split(gates, 4, axis=-1)   # torch gate order
    c = sig(f) * c + sig(i) * np.tanh(g)
    h = sig(o) * np.tanh(c)
    state, out = cell.apply({"params": params}, state, x)
    np.testing.assert_allclose(np.asarray(out), h, atol=1e-5)
    np.testing.assert_allclose(np.asarray(state[1]), c, atol=1e-5)


def test_encoder_paper_shape_and_size():
  enc = Encoder((32, 32, 32, 16), (2, 2, 2, 2), (1, 1, 1, 0))
  variables = jax.eval_shape(enc.init, KEY, jnp.zeros((1, 64, 64, 3)))
  out = jax.eval_shape(enc.apply, variables, jnp.zeros((5, 64, 64, 3)))
  assert out.shape == (5, 8, 8, 16)
  print(f"encoder params (paper size): {_count(variables):,}")
  tiny = Encoder((4, 4, 4, 8), (1, 1, 1, 1), (1, 1, 1, 0))
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
  z = tiny.apply(tiny.init(KEY, x), x)
  assert z.shape == (2, 8, 8, 8) and np.all(np.isfinite(np.asarray(z))) and np.asarray(z).std() > 0


def test_encoder_patch_stem_is_a_linear_map_of_each_patch():
  """Patch 4: conv_in maps each non-overlapping 4x4 patch alone (a change outside a patch leaves the other
  stem outputs untouched), and 64 -> 16 -> 8 with one Downsample."""
  enc = Encoder((8, 16), (1, 1), (1, 0), patch=4)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)), jnp.float32)
  variables = enc.init(KEY, x)
  assert enc.apply(variables, x).shape == (1, 8, 8, 16)
  stem = blocks.PatchConv(8, 4)
  p = {"params": variables["params"]["conv_in"]}
  y = stem.apply(p, x)
  k = np.asarray(p["params"]["kernel"]).reshape(48, 8)
  patch = np.asarray(x[0, 20:24, 36:40]).reshape(48)
  np.testing.assert_allclose(np.asarray(y[0, 5, 9]), patch @ k + np.asarray(p["params"]["bias"]), rtol=1e-5,
                             atol=1e-5)
  y2 = stem.apply(p, x.at[0, 20:24, 36:40].set(0.0))
  changed = np.abs(np.asarray(y2 - y)).max(-1)[0] > 0
  assert changed[5, 9] and changed.sum() == 1


def test_denoiser_net_output_is_zero_at_init_and_conditioned():
  net = DenoiserNet(out_channels=4, channels=(16,), depths=(1,), cond_channels=16, num_cond=4, num_actions=3)
  x, cond = jnp.ones((2, 8, 8, 4)), jnp.ones((2, 4, 8, 8, 4))
  act = jnp.asarray([[0, 1, 2, 0], [2, 2, 1, 0]])
  params = net.init(KEY, x, jnp.zeros(2), cond, act)["params"]
  assert "noise_emb" not in params
  assert params["act_emb"]["embedding"].shape == (3, 4)   # cond_channels / num_cond per action
  assert params["conv_in"]["kernel"].shape == (3, 3, 5 * 4, 16)   # 4 conditioning states + the noisy one
  np.testing.assert_array_equal(np.asarray(net.apply({"params": params}, x, jnp.zeros(2), cond, act)), 0.0)
  # Once the zero-initialised convs move, the output depends on the noise level and on the actions.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.full_like(v, 0.01) if "conv_out" in str(p) or "conv2" in str(p) else v, params)
  f = lambda c_noise, a: np.asarray(net.apply({"params": params}, x, c_noise, cond, a))
  assert not np.allclose(f(jnp.zeros(2), act), f(jnp.ones(2), act))
  assert not np.allclose(f(jnp.zeros(2), act), f(jnp.zeros(2), act[:, ::-1]))


@pytest.mark.parametrize("state_shape,num_down", [((8, 8, 16), 0), ((64, 64, 3), 3)])
def test_rew_end_model_lstm_input_is_diamonds(state_shape, num_down):
  net = RewEndModel(channels=(32,) * 4, depths=(2,) * 4, cond_channels=128, lstm_dim=512, num_actions=18,
                    num_down=num_down)
  s = jnp.zeros((1,) + state_shape)
  variables = jax.eval_shape(net.init, KEY, blocks.lstm_zero_state(1, 512), s, jnp.zeros((1,), jnp.int32), s)
  # 32 channels x 8 x 8 = 2048 features into the LSTM, on latents and on pixels alike.
  assert variables["params"]["lstm"]["ih"]["kernel"].shape == (2048, 4 * 512)
  assert variables["params"]["head_out"]["kernel"].shape == (512, 5)
  assert "bias" not in variables["params"]["head_out"]
  print(f"reward/end params on {state_shape}: {_count(variables):,}")
