"""Tests of jedi_jax/world_model.py: the public API, JEDI's gradient routing, the optimiser, overfitting.

Tiny configs throughout; compiled functions are shared between tests through module-level caches because
XLA compilation, not compute, dominates on a CPU.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jedi_jax import config as config_lib
from jedi_jax import world_model as wm
from jedi_jax.replay import Segment

from conftest import NARROW_WM, frozen_tiny_config

NUM_ACTIONS = 4
ASSUMED_ACTOR_CRITIC_PARAMS = 2_000_000   # the latent actor-critic is written elsewhere; ~2M assumed


def wm_config(kind="jedi", **overrides):
  """`conftest.tiny_config` with the narrow world model of these tests (NARROW_WM), of `kind`, frozen;
  overrides are dotted config paths."""
  return frozen_tiny_config(**NARROW_WM, **{"wm.kind": kind}, **overrides)


def make_segment(rng, b, t, pad_before=0, pad_after=0):
  """A replay Segment with `pad_before` padded steps in row 0 and `pad_after` in row 1."""
  mask = np.ones((b, t), bool)
  mask[0, :pad_before] = False
  if pad_after:
    mask[1, t - pad_after:] = False
  end = np.zeros((b, t), bool)
  if pad_after:
    end[1, t - pad_after - 1] = True
  obs = rng.integers(0, 256, (b, t + 1, 64, 64, 3)).astype(np.uint8)
  rew = rng.integers(-1, 2, (b, t)).astype(np.float32) * mask
  seg = Segment(obs=jnp.asarray(obs), act=jnp.asarray(rng.integers(0, NUM_ACTIONS, (b, t)) * mask, jnp.int32),
                rew=jnp.asarray(rew), end=jnp.asarray(end), trunc=jnp.zeros((b, t), bool), mask=jnp.asarray(mask))
  return seg._replace(obs=jnp.where(seg.frame_mask[..., None, None, None], seg.obs, 0))


def make_batch(config, seed=0, b=2):
  rng = np.random.default_rng(seed)
  t_dyn = config.wm.num_cond + config.wm.num_predictions
  return wm.WorldModelBatch(dynamics=make_segment(rng, b, t_dyn, pad_before=3),
                            rew_end=make_segment(rng, b, 5, pad_before=2, pad_after=2))


def _norm(tree):
  return float(_jit_norm(tree))


_jit_norm = jax.jit(optax.tree.norm)  # one small program per tree, not one per leaf and operation


def _move_zero_init(params):
  """Makes DIAMOND's zero-initialised convs non-zero. At init the denoiser's output does not depend on its
  conditioning (every ResBlock is an identity and the output conv is 0), so no gradient reaches the
  conditioning states until the first update; tests of gradient routing start from a 'trained' state."""
  return jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.full_like(v, 0.02) if "conv2" in str(p) or "conv_out" in str(p) else v, params)


@functools.lru_cache(maxsize=None)
def _weighted_loss_grad(config):
  """jit of grad of w_dyn * loss_denoising + w_rew * (loss_rew + loss_end): one compile, any weights."""

  def f(params, batch, key, weights):
    _, m = wm.world_model_loss(params, batch, key, config)
    return weights[0] * m["loss_denoising"] + weights[1] * (m["loss_rew"] + m["loss_end"]), m

  return jax.jit(jax.grad(f, has_aux=True))


# ------------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------------

def count_params(config, num_actions=18):
  shapes = jax.eval_shape(lambda k: wm.init_world_model(config, num_actions, k), jax.random.PRNGKey(0))
  return {k: sum(math.prod(x.shape) for x in jax.tree.leaves(v)) for k, v in shapes.items()}


def test_param_counts_at_paper_size():
  jedi = config_lib.freeze(config_lib.atari100k())
  c = config_lib.atari100k()
  c.wm.kind = "diamond"
  diamond = config_lib.freeze(c)
  jedi_counts, diamond_counts = count_params(jedi), count_params(diamond)
  jedi_total = sum(jedi_counts.values()) + ASSUMED_ACTOR_CRITIC_PARAMS
  print(f"\nJEDI world model (18 actions): {jedi_counts}; + actor-critic ~{ASSUMED_ACTOR_CRITIC_PARAMS:,} "
        f"(assumed) = {jedi_total:,} (paper: 13.5M)")
  print(f"DIAMOND world model (18 actions): {diamond_counts}; total w/o actor-critic "
        f"{sum(diamond_counts.values()):,} (paper: ~13M with its pixel actor-critic)")
  assert set(jedi_counts) == {"encoder", "denoiser", "rew_end"} and set(diamond_counts) == {"denoiser", "rew_end"}
  assert abs(jedi_total - 13.5e6) < 1e6
  assert 4.0e6 < diamond_counts["denoiser"] < 4.8e6   # DIAMOND's 64x64 U-Net is ~4.4M
  assert wm.state_shape(jedi) == (8, 8, 16) and wm.state_shape(diamond) == (64, 64, 3)


# ------------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["jedi", "diamond"])
def test_api_shapes_sampling_and_rew_end(kind):
  config = wm_config(kind)
  params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
  s = wm.state_shape(config)
  assert set(params) == ({"encoder", "denoiser", "rew_end"} if kind == "jedi" else {"denoiser", "rew_end"})

  obs = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64, 3)), jnp.uint8)
  encode = jax.jit(wm.encode, static_argnums=2)
  states = encode(params, obs, config)
  assert states.shape == (2, 3) + s
  if kind == "jedi":
    assert float(jnp.max(jnp.abs(states))) < 3.0
  else:
    np.testing.assert_allclose(np.asarray(states), np.asarray(obs) / 255 * 2 - 1, atol=1e-6)
  # Padded frames enter as DIAMOND's zero padding.
  frame_mask = jnp.asarray([[True, False, True], [False, True, True]])
  masked = encode(params, obs, config, frame_mask)
  zero_state = encode(params, jnp.full((1, 64, 64, 3), 255 / 2), config)
  np.testing.assert_allclose(np.asarray(masked[0, 1]), np.asarray(zero_state[0]), atol=1e-5)

  sample = jax.jit(wm.sample_next, static_argnums=4)
  cond = jnp.concatenate([states, states[:, :1]], axis=1)
  acts = jnp.asarray([[0, 1, 2, 3], [3, 2, 1, 0]], jnp.int32)
  nxt = sample(params, cond, acts, jax.random.PRNGKey(1), config)
  assert nxt.shape == (2,) + s and np.all(np.isfinite(np.asarray(nxt)))
  np.testing.assert_array_equal(np.asarray(nxt), np.asarray(sample(params, cond, acts, jax.random.PRNGKey(1),
                                                                   config)))
  if kind == "diamond":   # quantised to 256 levels (the final Euler step to sigma = 0 returns D(x))
    levels = (np.asarray(nxt) + 1) / 2 * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
  else:
    assert float(jnp.max(jnp.abs(nxt))) <= 3.0

  # rew_end_step carried step by step equals the scanned sequence version.
  seq = jnp.stack([states[:, 0], states[:, 1], states[:, 2], nxt], axis=1)
  act = acts[:, :3]
  lstm = wm.rew_end_initial_state(config, 2)
  _, rew_seq, end_seq = jax.jit(wm.rew_end_sequence, static_argnums=4)(params, lstm, seq, act, config)
  assert rew_seq.shape == (2, 3, 3) and end_seq.shape == (2, 3, 2)
  step = jax.jit(wm.rew_end_step, static_argnums=5)
  for t in range(3):
    lstm, rew_logits, end_logits = step(params, lstm, seq[:, t], act[:, t], seq[:, t + 1], config)
    np.testing.assert_allclose(np.asarray(rew_logits), np.asarray(rew_seq[:, t]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(end_logits), np.asarray(end_seq[:, t]), atol=1e-5)
  assert lstm[0].shape == (2, config.wm.rew_end_lstm_dim)


@pytest.mark.parametrize("sees_next", [True, False])
def test_rew_end_next_state_switch(sees_next):
  """wm.rew_end_next_state: DIAMOND's CNN input concat(s_t, s_{t+1}), or s_t alone (then s_{t+1} cannot move
  the logits, and the CNN's first conv has half the input channels)."""
  config = wm_config("jedi", **{"wm.rew_end_next_state": sees_next})
  params = _move_zero_init(wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0)))
  s = wm.state_shape(config)
  assert params["rew_end"]["conv_in"]["kernel"].shape[-2] == (2 if sees_next else 1) * s[-1]
  rng = np.random.default_rng(0)
  state, nxt, other = (jnp.asarray(rng.normal(size=(2,) + s), jnp.float32) for _ in range(3))
  act = jnp.asarray([1, 2], jnp.int32)
  step = jax.jit(wm.rew_end_step, static_argnums=5)
  lstm = wm.rew_end_initial_state(config, 2)
  logits = lambda a, b: np.asarray(step(params, lstm, a, act, b, config)[1])
  moved_by_next = np.abs(logits(state, nxt) - logits(state, other)).max()
  moved_by_state = np.abs(logits(state, nxt) - logits(other, nxt)).max()
  assert moved_by_state > 1e-4
  assert (moved_by_next > 1e-4) if sees_next else (moved_by_next == 0)


def test_jedi_loss_metrics_and_encoder_gradients():
  config = wm_config("jedi")
  params = _move_zero_init(wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0)))
  batch = make_batch(config)
  grad_fn = _weighted_loss_grad(config)
  key = jax.random.PRNGKey(2)

  g_dyn, metrics = grad_fn(params, batch, key, jnp.asarray([1.0, 0.0]))
  for name in ("loss_total", "loss_denoising", "loss_denoising_0", "loss_denoising_1", "loss_rew", "loss_end",
               "own_prediction", "rew_accuracy", "end_accuracy", "latent_std"):
    assert np.isfinite(float(metrics[name])) and np.ndim(metrics[name]) == 0, name
  assert float(metrics["loss_total"]) == pytest.approx(
      float(metrics["loss_denoising"] + metrics["loss_rew"] + metrics["loss_end"]), rel=1e-5)
  # The denoising loss reaches the encoder (through the conditioning latents) and not the reward model.
  assert _norm(g_dyn["encoder"]) > 0 and _norm(g_dyn["denoiser"]) > 0
  assert _norm(g_dyn["rew_end"]) == 0
  # The reward/end loss reaches the encoder too.
  g_rew, _ = grad_fn(params, batch, key, jnp.asarray([0.0, 1.0]))
  assert _norm(g_rew["encoder"]) > 0 and _norm(g_rew["rew_end"]) > 0
  assert _norm(g_rew["denoiser"]) == 0


def test_masked_steps_are_excluded_from_every_loss():
  config = wm_config("jedi")
  params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
  batch = make_batch(config)
  loss = lambda b: _weighted_loss_grad(config)(params, b, jax.random.PRNGKey(2), jnp.ones(2))[1]
  base = loss(batch)
  # Garbage in padded steps: frames, actions, rewards, end flags.
  def garbage(seg):
    obs = np.asarray(seg.obs).copy()
    obs[~np.asarray(seg.frame_mask)] = 77
    return seg._replace(obs=jnp.asarray(obs), rew=jnp.where(seg.mask, seg.rew, 5.0),
                        end=jnp.where(seg.mask, seg.end, True))

  changed = wm.WorldModelBatch(garbage(batch.dynamics), garbage(batch.rew_end))
  after = loss(changed)
  for name in ("loss_denoising", "loss_rew", "loss_end"):
    assert float(after[name]) == pytest.approx(float(base[name]), rel=1e-6), name


# ------------------------------------------------------------------------------------------------------
# Gradient routing of JEDI's objective (arXiv 2505.19698), on given latents
# ------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _state_grad_fn(config):
  """jit(key -> (per-state gradient norms [num_cond + 2], own_prediction)) of dynamics_loss w.r.t. the
  num_cond + 2 latents it is given."""
  params = _move_zero_init(wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0)))
  n = config.wm.num_cond
  states = jax.random.normal(jax.random.PRNGKey(1), (2, n + 2) + wm.state_shape(config))
  actions = jnp.asarray([[0, 1, 2, 3, 0], [1, 1, 2, 2, 3]], jnp.int32)

  def grads(key):
    loss = lambda s: wm.dynamics_loss(params, s, actions, jnp.ones((2, 2), bool), key, config)
    g, metrics = jax.grad(loss, has_aux=True)(states)
    return jnp.sqrt(jnp.sum(jnp.square(g), axis=(0, 2, 3, 4))), metrics["own_prediction"]

  return jax.jit(grads)


def _state_grads(config, own):
  """Per-state gradient norms for a key whose random switch picks the own prediction iff `own`."""
  fn = _state_grad_fn(config)
  for i in range(50):
    g, own_prediction = fn(jax.random.PRNGKey(i))
    if bool(own_prediction) == own:
      return np.asarray(g)
  raise AssertionError("the random switch never chose " + ("own" if own else "encoder") + " in 50 draws")


def test_target_is_stop_gradient_and_own_prediction_too():
  n = 4
  g = _state_grads(wm_config("jedi", **{"wm.random_switch_prob": 0.5}), own=True)
  assert np.all(g[:n] > 0)   # conditioning latents keep their gradient
  assert g[n] == 0           # first target (stop-gradient), then own prediction (stop-gradient) in its place
  assert g[n + 1] == 0       # second target: stop-gradient


def test_encoder_latent_switch_keeps_conditioning_gradient():
  n = 4
  g = _state_grads(wm_config("jedi", **{"wm.random_switch_prob": 0.5}), own=False)
  assert np.all(g[:n + 1] > 0)   # frame n is the first target *and* the second prediction's conditioning
  assert g[n + 1] == 0


def test_without_stop_gradient_targets_receive_gradient():
  n = 4
  g = _state_grads(wm_config("jedi", **{"wm.random_switch_prob": 1.0, "wm.stop_gradient_target": False}), own=True)
  assert g[n] > 0 and g[n + 1] > 0


def test_random_switch_is_one_coin_per_batch():
  config = wm_config("jedi", **{"wm.random_switch_prob": 0.5})
  params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
  states = jnp.zeros((2, 6) + wm.state_shape(config))
  acts, mask = jnp.zeros((2, 5), jnp.int32), jnp.ones((2, 2), bool)
  own = jax.jit(lambda k: wm.dynamics_loss(params, states, acts, mask, k, config)[1]["own_prediction"])
  draws = np.asarray([float(own(jax.random.PRNGKey(i))) for i in range(40)])
  assert set(draws) <= {0.0, 1.0} and 0.2 < draws.mean() < 0.8


# ------------------------------------------------------------------------------------------------------
# Optimiser (DIAMOND config/trainer.yaml)
# ------------------------------------------------------------------------------------------------------

def _optimizer_config(**optim):
  return wm_config("jedi", **{f"optim.{k}": v for k, v in optim.items()})


def _toy_params():
  """A small tree with the world model's groups and every kind of leaf name the networks produce."""
  leaf = lambda *shape: jnp.ones(shape)
  module = lambda: {"conv": {"kernel": leaf(3, 3, 2, 4), "bias": leaf(4)}, "norm": {"scale": leaf(4), "bias": leaf(4)},
                    "act_emb": {"embedding": leaf(5, 4)}}
  return {"encoder": module(), "denoiser": module(), "rew_end": module()}


def test_world_model_params_have_known_leaf_names():
  params = wm.init_world_model(wm_config("jedi"), NUM_ACTIONS, jax.random.PRNGKey(0))
  names = {path[-1].key for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert names == {"kernel", "bias", "scale", "embedding"}


def test_optimizer_groups_lr_scale_and_warmup():
  config = _optimizer_config(weight_decay_wm=0.0, warmup_steps=10, lr=1e-3)
  params = _toy_params()
  opt = wm.world_model_optimizer(config)
  state = opt.init(params)
  grads = jax.tree.map(lambda x: 0.01 * x, params)   # below every clipping threshold
  update = jax.jit(opt.update)
  deltas = []
  for _ in range(3):
    updates, state = update(grads, state, params)
    deltas.append({k: float(jnp.mean(jnp.abs(jnp.concatenate([x.ravel() for x in jax.tree.leaves(v)]))))
                   for k, v in updates.items()})
  # Warm-up: lr 0 at the first update, then lr * step / warmup (DIAMOND get_lr_sched). Adam steps ~ lr.
  assert all(v == 0 for v in deltas[0].values())
  assert deltas[1]["denoiser"] == pytest.approx(1e-3 / 10, rel=1e-3)
  assert deltas[2]["denoiser"] == pytest.approx(2e-3 / 10, rel=1e-3)
  assert deltas[2]["rew_end"] == pytest.approx(2e-3 / 10, rel=1e-3)
  # Encoder learning rate x 0.3 (paper).
  assert deltas[2]["encoder"] == pytest.approx(0.3 * 2e-3 / 10, rel=1e-3)


def test_optimizer_weight_decay_only_on_kernels():
  config = _optimizer_config(warmup_steps=1, lr=1e-2)
  params = _toy_params()
  opt = wm.world_model_optimizer(config)
  state = opt.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  update = jax.jit(opt.update)
  for _ in range(2):
    updates, state = update(zeros, state, params)
  for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    if path[-1].key == "kernel":   # decoupled decay: -lr * wd * p
      np.testing.assert_allclose(np.asarray(u), -1e-2 * 1e-2 * (0.3 if path[0].key == "encoder" else 1.0),
                                 rtol=1e-4)
    else:
      assert float(jnp.max(jnp.abs(u))) == 0, path


def test_optimizer_clips_each_group_separately():
  config = _optimizer_config()
  params = _toy_params()
  opt = wm.world_model_optimizer(config)
  state = opt.init(params)
  # Group norms ~10200 (clipped to 100), ~10.2 (clipped to 1), ~51 (not clipped at 100).
  scales = {"encoder": 1000.0, "denoiser": 1.0, "rew_end": 5.0}
  grads = {k: jax.tree.map(lambda x, s=s: s * x, v) for (k, v), s in zip(params.items(), scales.values())}
  _, state = jax.jit(opt.update)(grads, state, params)
  for group, max_norm in (("denoiser", 1.0), ("encoder", 100.0), ("rew_end", 100.0)):
    mu = state[group].mu   # (1 - b1) * clipped gradient, raveled
    assert _norm(mu) == pytest.approx(0.1 * min(max_norm, _norm(grads[group])), rel=1e-4), group


def test_fourier_features_are_not_trained():
  config = wm_config("jedi")
  params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  assert not any("noise_emb" in p for p in paths)
  # Two different init keys give the same noise embedding: it is a constant, not a parameter.
  other = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(9))
  assert not np.allclose(params["denoiser"]["cond_proj_0"]["kernel"], other["denoiser"]["cond_proj_0"]["kernel"])


# ------------------------------------------------------------------------------------------------------
# Overfitting a fixed tiny batch
# ------------------------------------------------------------------------------------------------------

def _overfit(config, states, steps):
  params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
  den = {"denoiser": params["denoiser"]}
  opt = wm.world_model_optimizer(config)
  opt_state = opt.init(den)
  b = states.shape[0]
  actions = jnp.asarray(np.random.default_rng(0).integers(0, NUM_ACTIONS, (b, 5)), jnp.int32)
  key = jax.random.PRNGKey(5)   # fixed noise: a pure memorisation problem

  def loss(p):
    return wm.dynamics_loss(p, states, actions, jnp.ones((b, 2), bool), key, config)[0]

  @jax.jit
  def train(den, opt_state):
    def step(carry, _):
      den, opt_state = carry
      value, grads = jax.value_and_grad(loss)(den)
      updates, opt_state = opt.update(grads, opt_state, den)
      return (optax.apply_updates(den, updates), opt_state), value
    (den, opt_state), values = jax.lax.scan(step, (den, opt_state), None, length=steps)
    return values, loss(den)

  values, final = train(den, opt_state)
  return float(values[0]), float(final)


def _overfit_config(kind):
  c = config_lib.debug()
  c.wm.kind = kind
  c.wm.latent_denoiser_channels = (32,)
  c.wm.latent_denoiser_depths = (1,)
  c.wm.latent_denoiser_cond_channels = 16
  c.wm.pixel_denoiser_channels = (8, 8)
  c.wm.pixel_denoiser_depths = (1, 1)
  c.wm.pixel_denoiser_cond_channels = 16
  c.optim.lr = 1e-2
  c.optim.warmup_steps = 10
  return config_lib.freeze(c)


@pytest.mark.slow
@pytest.mark.after_suite
def test_latent_denoiser_overfits_fixed_batch():
  config = _overfit_config("jedi")
  # Latents that drift one cell right per step: the next one is predictable from the past ones.
  base = 3 * jnp.tanh(jax.random.normal(jax.random.PRNGKey(0), (4,) + wm.state_shape(config)))
  states = jnp.stack([jnp.roll(base, t, axis=2) for t in range(6)], axis=1)
  first, final = _overfit(config, states, steps=60)   # 9.1 -> 0.04 here
  print(f"\nlatent denoiser: loss {first:.4f} -> {final:.4f}")
  assert final < first / 10


@pytest.mark.slow
@pytest.mark.after_suite
def test_pixel_denoiser_overfits_fixed_batch():
  config = _overfit_config("diamond")
  # A coloured square moving 4 pixels right per step on a grey background.
  obs = np.full((1, 6, 64, 64, 3), 90, np.uint8)
  for t in range(6):
    obs[0, t, 20:36, 8 + 4 * t:24 + 4 * t] = (250, 30, 30)
  obs = jnp.asarray(obs)
  states = wm.encode({}, obs, config)
  # 40 steps (~0.25 s each at the tests' XLA opt-level 0): 0.49 -> 0.09 here (0.05 after 150 steps).
  first, final = _overfit(config, states, steps=40)
  print(f"\npixel denoiser: loss {first:.4f} -> {final:.4f}")
  assert final < first / 4


# ------------------------------------------------------------------------------------------------------
# Efficiency switches: one encoder pass for both losses (wm.share_encoder_pass), rematerialisation (wm.remat)
# ------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _loss_and_grads(config):
  return jax.jit(lambda params, batch, key: jax.value_and_grad(wm.world_model_loss, has_aux=True)(
      params, batch, key, config))


def _assert_trees_close(a, b, rtol=1e-3):
  """Leaf by leaf, within `rtol` of the leaf's largest magnitude: float32 sums of many terms (a bias gradient
  sums over every pixel of the batch) come out ~1e-4 apart when XLA fuses and orders them differently."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=0, atol=rtol * max(float(np.abs(y).max()), 1e-6), err_msg=str(path))


@pytest.mark.after_suite
def test_shared_encoder_pass_equals_separate_passes_on_the_same_window():
  """A dynamics window taken inside the reward/end segment (one encoder pass) gives the losses and gradients of
  the same window encoded separately, in float64. (In float32 the encoder's stage-0 bias gradients differ by
  up to ~1% of their size: each sums ~2e5 terms whose upstream gradient is ~1e3, in another order.)"""
  config = wm_config("jedi")
  n, p = config.wm.num_cond, config.wm.num_predictions
  with jax.enable_x64(True):
    params = jax.tree.map(lambda v: v.astype(jnp.float64),
                          _move_zero_init(wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))))
    _check_shared_pass(config, params, n, p)


def _check_shared_pass(config, params, n, p):
  rew_end = make_segment(np.random.default_rng(3), 2, n + p + 3, pad_before=2, pad_after=2)
  start = wm.shared_dynamics_start(rew_end.mask, n + p, jax.random.PRNGKey(4))
  np.testing.assert_array_equal(np.asarray(rew_end.mask)[np.arange(2), np.asarray(start) + n + p - 1], True)
  dynamics = wm.segment_window(rew_end, start, n + p)
  fn = _loss_and_grads(config)
  key = jax.random.PRNGKey(5)
  (loss_sep, m_sep), g_sep = fn(params, wm.WorldModelBatch(dynamics, rew_end), key)
  (loss_shared, m_shared), g_shared = fn(params, wm.WorldModelBatch(dynamics, rew_end, start), key)
  assert jax.tree.leaves(g_sep)[0].dtype == jnp.float64
  for name in ("loss_denoising", "loss_rew", "loss_end", "latent_std"):
    assert float(m_shared[name]) == pytest.approx(float(m_sep[name]), rel=1e-12), name
  assert float(loss_shared) == pytest.approx(float(loss_sep), rel=1e-12)
  _assert_trees_close(g_shared, g_sep, rtol=1e-10)


def test_shared_dynamics_start_ends_windows_on_real_steps():
  """Uniform over the windows whose last step is real; step 0 when there is none."""
  mask = jnp.asarray([[0, 0, 0, 0, 0, 0, 1, 1, 0, 0],     # steps 6, 7 real: windows 1, 2 of length 6 end there
                      [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],     # no window ends on a real step: 0
                      [1] * 10], bool)
  starts = np.asarray(jax.vmap(lambda k: wm.shared_dynamics_start(mask, 6, k))(
      jax.random.split(jax.random.PRNGKey(0), 2000)))
  assert set(starts[:, 0]) == {1, 2} and abs(np.mean(starts[:, 0] == 1) - 0.5) < 0.05
  assert set(starts[:, 1]) == {0}
  assert set(starts[:, 2]) == {0, 1, 2, 3, 4}


@pytest.mark.after_suite
@pytest.mark.parametrize("kind", ["jedi", "diamond"])
def test_remat_and_loss_chunks_give_the_same_loss_and_gradients(kind):
  """`wm.remat` and `wm.loss_chunks` (3 pieces: neither the frame count nor the batch is a multiple of 3, so the
  padding is exercised) each give the loss and gradients of the plain program, in float64 (in float32 the
  encoder's stage-0 bias gradients, sums of ~1e5 terms, come out ~0.2% apart in another summation order)."""
  base = wm_config(kind)
  batch = make_batch(base)
  key = jax.random.PRNGKey(2)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda v: v.astype(jnp.float64),
                          _move_zero_init(wm.init_world_model(base, NUM_ACTIONS, jax.random.PRNGKey(0))))
    (loss, _), grads = _loss_and_grads(base)(params, batch, key)
    assert jax.tree.leaves(grads)[0].dtype == jnp.float64
    for option in ({"wm.remat": True}, {"wm.loss_chunks": 3}):
      (loss_o, _), grads_o = _loss_and_grads(wm_config(kind, **option))(params, batch, key)
      assert float(loss_o) == pytest.approx(float(loss), rel=1e-12), option
      _assert_trees_close(grads_o, grads, rtol=1e-10)
    # The rematerialised loss carries checkpoints (one per residual block); the plain one none.
    count = lambda c: str(jax.make_jaxpr(lambda prm: wm.world_model_loss(prm, batch, key, c))(params)).count(" remat")  # noqa: E731,E501
    assert count(base) == 0 and count(wm_config(kind, **{"wm.remat": True})) >= 4


def test_chunked_encoder_gradient_needs_less_memory():
  """The encoder's gradient over 4 rematerialised pieces of the frames (`world_model.chunked`) compiles to
  less than half the temporary memory of one pass on XLA:CPU, where per-block remat saves nothing."""
  frames = jax.ShapeDtypeStruct((16, 64, 64, 3), jnp.uint8)

  def temp_bytes(chunks, remat=False):
    config = frozen_tiny_config(**{"wm.kind": "jedi", "wm.remat": remat, "wm.encoder_patch": 1,
                                   "wm.encoder_channels": (16, 16), "wm.encoder_depths": (3, 1),
                                   "wm.encoder_down": (1, 1)})
    params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
    loss = lambda p, x: jnp.sum(wm.encode(p, x, config, chunks=chunks) ** 2)  # noqa: E731
    return jax.jit(jax.grad(loss)).lower(params, frames).compile().memory_analysis().temp_size_in_bytes

  one = temp_bytes(1)
  assert temp_bytes(4) < 0.5 * one
  assert temp_bytes(1, remat=True) >= 0.9 * one   # the XLA:CPU fact docs/benchmarks.md reports


def test_efficiency_switch_errors_are_one_line():
  c = config_lib.get_config("debug")
  c.wm.share_encoder_pass = True
  c.ac.horizon = 1                    # reward/end segment 5 steps < dynamics 6
  with pytest.raises(ValueError, match=r"^wm.share_encoder_pass needs a reward/end segment \(ac.horizon \+ "
                     r"wm.num_cond = 5 steps\) at least as long as the dynamics one .* = 6\)$"):
    config_lib.validate(c)
  d = config_lib.to_dict(config_lib.get_config("debug"))
  d["wm"]["remat"] = "yes"
  with pytest.raises(ValueError, match=r"^wm.remat must be true or false, got 'yes'$"):
    config_lib.validate(config_lib.ml_collections.ConfigDict(d))
  d["wm"]["remat"] = False
  d["wm"]["rew_end_next_state"] = 0
  with pytest.raises(ValueError, match=r"^wm.rew_end_next_state must be true or false, got 0$"):
    config_lib.validate(config_lib.ml_collections.ConfigDict(d))
  d["wm"]["rew_end_next_state"] = True
  d["wm"]["loss_chunks"] = 0
  with pytest.raises(ValueError, match=r"^wm.loss_chunks must be an integer >= 1, got 0$"):
    config_lib.validate(config_lib.ml_collections.ConfigDict(d))
  d["wm"]["loss_chunks"] = 1
  d["wm"]["rewarded_fraction"] = 1.5
  with pytest.raises(ValueError, match=r"^wm.rewarded_fraction must lie in \[0, 1\], got 1.5$"):
    config_lib.validate(config_lib.ml_collections.ConfigDict(d))
  d["wm"]["rewarded_fraction"], d["wm"]["share_encoder_pass"] = 0.25, True
  with pytest.raises(ValueError, match=r"^wm.rewarded_fraction needs the dynamics segments drawn on their own"):
    config_lib.validate(config_lib.ml_collections.ConfigDict(d))


def test_rewarded_fraction_puts_a_reward_among_the_predicted_steps_of_that_share_of_the_batch():
  """`wm.rewarded_fraction`: the first round(fraction * B) dynamics segments of a world-model batch hold a
  rewarded transition among the steps the denoiser predicts (the last num_predictions); the reward/end
  segments and, at 0, the whole batch are DIAMOND's draws."""
  from jedi_jax import replay as replay_lib
  from jedi_jax import train
  rng = np.random.default_rng(0)
  state = replay_lib.init_replay(1, 400, (1, 1, 3))
  for a in range(400):
    state = replay_lib.add(state, np.full((1, 1, 1, 3), 1 + a % 200, np.uint8), jnp.array([a % 3]),
                           jnp.array([float(rng.random() < 0.02)]), jnp.array([a % 97 == 96]), jnp.array([False]),
                           jnp.array([True]))
  c = config_lib.get_config("debug")
  p, b = c.wm.num_predictions, 32
  key = jax.random.key(1)
  plain = train.sample_world_model_batch(state, key, b, config_lib.freeze(c))
  c.wm.rewarded_fraction = 0.25
  batch = train.sample_world_model_batch(state, key, b, config_lib.freeze(c))
  dyn = batch.dynamics
  predicted = (np.asarray(dyn.rew)[:, -p:] != 0) & np.asarray(dyn.mask)[:, -p:]
  assert predicted[:8].any(axis=1).all()
  assert predicted[8:].any(axis=1).mean() < 0.25 and (np.asarray(plain.dynamics.rew)[:, -p:] != 0).any(axis=1).mean() < 0.25
  jax.tree.map(np.testing.assert_array_equal, batch.rew_end, plain.rew_end)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x)[8:], np.asarray(y)[8:]), dyn, plain.dynamics)


def test_remat_checkpoints_each_residual_block():
  """`wm.remat` puts one checkpoint around each residual block of every world-model network, so that the
  backward pass recomputes one block at a time. (One checkpoint around a whole network recomputes all of its
  blocks before the backward pass and holds their insides at once: no memory saved.)"""
  def checkpoints(config):
    params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
    x = jnp.zeros((2, 64, 64, 3))
    s = wm.state_shape(config)
    encoder = str(jax.make_jaxpr(lambda p: wm._encode_latent(p, x, config))(params)).count(" remat")
    rew_end = str(jax.make_jaxpr(lambda p: wm.rew_end_sequence(
        p, wm.rew_end_initial_state(config, 1), jnp.zeros((1, 3) + s), jnp.zeros((1, 2), jnp.int32),
        config))(params)).count(" remat")
    return encoder, rew_end

  config = wm_config("jedi", **{"wm.remat": True})
  blocks_of = lambda tree, part: sum(part in k for k in tree)  # noqa: E731
  params = wm.init_world_model(config, NUM_ACTIONS, jax.random.PRNGKey(0))
  rew_blocks = sum(blocks_of(v, "resblocks_") for k, v in params["rew_end"].items() if isinstance(v, dict))
  assert checkpoints(config) == (blocks_of(params["encoder"], "_block_"), rew_blocks)
  assert checkpoints(wm_config("jedi")) == (0, 0)
