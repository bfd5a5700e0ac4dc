"""The world model: JEDI's end-to-end latent objective (arXiv 2505.19698) and the DIAMOND pixel baseline.

`config.wm.kind` selects the model (`model_kind`: one `ModelKind` record holds all that differs); both share this
code, the blocks and the public API:
  * "jedi":    state = C(E_phi(frame)) in [-3, 3]^{8x8x16}; latent EDM denoiser; reward/end on latents.
  * "diamond": state = the frame in [-1, 1]^{64x64x3} (no encoder); pixel U-Net denoiser with quantised
               output; reward/end on pixels (DIAMOND's models).

Params: {"encoder" (jedi only), "denoiser", "rew_end"}, each a Flax "params" tree.

Batch layout: a `WorldModelBatch` of two replay `Segment`s (obs [B, T + 1, 64, 64, 3] uint8, act / rew / end /
trunc / mask [B, T]). Frame k of a segment is real when step k or step k - 1 is (`Segment.frame_mask`); padded
frames normalise to 0 as DIAMOND pads.
  * dynamics (T >= num_cond + num_predictions - 1): the last num_cond + num_predictions frames are used
    (with T = num_cond + num_predictions the first step is spare). Prediction i conditions on frames
    o+i .. o+i+num_cond-1 and actions o+i .. o+i+num_cond-1 (o = T + 1 - num_cond - num_predictions) and
    predicts frame o+i+num_cond; its loss is masked by mask[:, o+i+num_cond-1], the step that produced it.
  * rew_end (T = horizon + num_cond): step t is the transition (obs[t], act[t], obs[t+1]) with targets
    sign(rew[t]) and end[t], masked by mask[t]; the LSTM runs over the T steps from a zero state.
All frames of both segments go through the encoder in one call, once per loss evaluation (docs/benchmarks.md).
With `wm.share_encoder_pass` the dynamics window is a window of the reward/end segment (`WorldModelBatch.
dynamics_start`, `shared_dynamics_start`) and only the reward/end segment's frames are encoded.

Sizes at the atari100k preset, 18 actions (tests/test_world_model.py prints them): JEDI encoder 155,008,
latent denoiser 5,949,392 (`wm.latent_denoiser_depths = (2,)`), reward/end 5,880,352; with a ~2M latent
actor-critic (assumed) the total is ~14.0M against the paper's 13.5M (depth 1 would give ~12.4M, depth 3
~15.6M). DIAMOND: pixel denoiser 4,406,851, reward/end 5,900,608.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import jax.scipy.stats
import optax

from jedi_jax import config as config_lib
from jedi_jax import diagnostics
from jedi_jax import diffusion
from jedi_jax import optim
from jedi_jax.nets import blocks
from jedi_jax.nets.denoiser import DenoiserNet
from jedi_jax.nets.encoder import Encoder
from jedi_jax.nets.reward_end import RewEndModel
from jedi_jax.replay import Segment
from jedi_jax.types import FRAME_SHAPE

LATENT_CLAMP = 3.0   # C(z) = 3 tanh(z / 3) (paper)


# ----------------------------------------------------------------------------------------------------------
# Shapes, frames, modules
# ----------------------------------------------------------------------------------------------------------

def state_shape(config) -> tuple:
  """S: (8, 8, 16) for jedi at paper size, FRAME_SHAPE for the diamond pixel baseline."""
  return model_kind(config).state_shape(config)


def _latent_shape(config) -> tuple:
  wm = config.wm
  side = FRAME_SHAPE[0] // wm.encoder_patch // 2 ** sum(wm.encoder_down)
  return (side, side, wm.encoder_channels[-1])


def normalize_frames(obs: jax.Array, frame_mask: jax.Array | None = None) -> jax.Array:
  """uint8 [..., 64, 64, 3] -> float32 in [-1, 1]; frames where frame_mask [...] is False become 0."""
  x = obs.astype(jnp.float32) / 255.0 * 2.0 - 1.0
  if frame_mask is not None:
    x = jnp.where(frame_mask[..., None, None, None], x, 0.0)
  return x


def clamp_latent(z: jax.Array) -> jax.Array:
  """C(z) = 3 tanh(z / 3): a smooth clamp of latents to (-3, 3) (paper)."""
  return LATENT_CLAMP * jnp.tanh(z / LATENT_CLAMP)


PREDICTION_CLAMPS = ("clip", "tanh", "none")


def clamp_prediction(d: jax.Array, kind: str) -> jax.Array:
  """Bounds a denoised latent estimate to the encoder's range (wm.prediction_clamp).

  "clip": clip(d, -3, 3), idempotent on the encoder's range, so a latent the denoiser predicts exactly
          passes through sampling and the own-prediction switch unchanged (the latent analogue of DIAMOND's
          clip of denoised frames to [-1, 1]); the default (docs/design.md, "Where the clamp sits").
  "tanh": C(d) = 3 tanh(d / 3) again, on top of targets that already are C(E(x)): not idempotent, a perfect
          prediction y comes out shrunk (3.5% at |y| = 1, 13% at 2, 23% at 2.9). Kept for ablation.
  "none": the raw estimate.
  """
  if kind == "clip":
    return jnp.clip(d, -LATENT_CLAMP, LATENT_CLAMP)
  if kind == "tanh":
    return clamp_latent(d)
  if kind == "none":
    return d
  raise ValueError(f"unknown wm.prediction_clamp {kind!r}; valid: {', '.join(PREDICTION_CLAMPS)}")


def _encoder_net(config) -> Encoder:
  wm = config.wm
  return Encoder(tuple(wm.encoder_channels), tuple(wm.encoder_depths), tuple(wm.encoder_down),
                 wm.encoder_patch, dtype=config_lib.compute_dtype(config), remat=_remat(config))


def _denoiser_net(config, num_actions: int) -> DenoiserNet:
  wm = config.wm
  channels, depths, cond = model_kind(config).denoiser_sizes(wm)
  return DenoiserNet(out_channels=state_shape(config)[-1], channels=tuple(channels), depths=tuple(depths),
                     cond_channels=cond, num_cond=wm.num_cond, num_actions=num_actions,
                     dtype=config_lib.compute_dtype(config), remat=_remat(config))


def _rew_end_net(config, num_actions: int) -> RewEndModel:
  wm = config.wm
  # Downsample only down to 8x8 (DIAMOND: 64 -> 8 in 3 steps; latents: none). See nets/reward_end.py.
  num_down = min(max(0, int(round(math.log2(state_shape(config)[0] / 8)))), len(wm.rew_end_channels) - 1)
  return RewEndModel(channels=tuple(wm.rew_end_channels), depths=tuple(wm.rew_end_depths),
                     cond_channels=wm.rew_end_cond_channels, lstm_dim=wm.rew_end_lstm_dim,
                     num_actions=num_actions, num_down=num_down,
                     sees_next=config_lib.added_field(config, "wm", "rew_end_next_state"),
                     dtype=config_lib.compute_dtype(config), remat=_remat(config))


def _num_actions(params, part: str = "denoiser") -> int:
  """The action count, read off the action-embedding table of params[part] (a static shape)."""
  return params[part]["act_emb"]["embedding"].shape[0]


def _remat(config) -> bool:
  """`wm.remat`: every residual block of the world model's networks rematerialised (blocks.maybe_remat)."""
  return config_lib.added_field(config, "wm", "remat")


def chunked(fn, chunks: int, *args):
  """`fn(*args)` with every arg split along axis 0 into `chunks` pieces run one after another in a loop, each
  rematerialised (`jax.lax.map` of `jax.checkpoint(fn)`; padded to a multiple of `chunks`, cropped after).
  The backward pass then holds one piece's activations at a time: on XLA:CPU the only form of
  rematerialisation that lowers a compiled program's memory (docs/benchmarks.md). `fn` must treat the rows of
  its batch independently (every network here does: GroupNorm is per sample); values equal `fn(*args)` up to
  the order of the parameter gradients' sums."""
  if chunks <= 1:
    return fn(*args)
  n = args[0].shape[0]
  size = -(-n // chunks)
  pad = lambda a: jnp.pad(a, [(0, size * chunks - n)] + [(0, 0)] * (a.ndim - 1))  # noqa: E731
  pieces = [pad(a).reshape((chunks, size) + a.shape[1:]) for a in args]
  body = jax.checkpoint(fn)
  out = jax.lax.map(lambda xs: body(*xs), tuple(pieces))
  return jax.tree.map(lambda o: o.reshape((chunks * size,) + o.shape[2:])[:n], out)


def _encode_latent(params, x: jax.Array, config) -> jax.Array:
  """Frames [N, 64, 64, 3] in [-1, 1] -> latents E_phi(x) [N, *S], clamped by C when wm.latent_clamp."""
  z = _encoder_net(config).apply({"params": params["encoder"]}, x)
  return clamp_latent(z) if config.wm.latent_clamp else z


def _own_prediction_coin(switch_normal: jax.Array, config) -> jax.Array:
  """JEDI's random switching: True with probability wm.random_switch_prob, from Phi(normal) ~ U(0, 1)."""
  return jax.scipy.stats.norm.cdf(switch_normal) < config.wm.random_switch_prob


# ----------------------------------------------------------------------------------------------------------
# The two kinds of world model
# ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelKind:
  """Everything that differs between the JEDI latent model and the DIAMOND pixel baseline (`config.wm.kind`)."""
  has_encoder: bool        # params hold a trained "encoder" and states are its latents (else states are frames)
  state_shape: Callable[[Any], tuple]   # config -> S, the shape of one state
  encode_frames: Callable  # (params, frames [N, 64, 64, 3] in [-1, 1], config) -> states [N, *S]
  finalize: Callable       # (denoised [B, *S], config) -> the estimate the sampler and conditioning use
  own_prediction: Callable  # (normal [], config) -> [] bool: predictions i >= 1 condition on the model's own
                            #   estimate of the previous frame (else on the encoded true frame)
  denoiser_sizes: Callable  # config.wm -> (channels, depths, cond_channels) of the denoiser U-Net
  actor_critic_sizes: Callable  # config.ac -> (channels, down) of the policy CNN


MODEL_KINDS = {
    # JEDI (arXiv 2505.19698): clamped encoder latents, latent denoiser, random switching.
    "jedi": ModelKind(
        has_encoder=True,
        state_shape=_latent_shape,
        encode_frames=_encode_latent,
        finalize=lambda d, config: clamp_prediction(d, config.wm.prediction_clamp),
        own_prediction=_own_prediction_coin,
        denoiser_sizes=lambda wm: (wm.latent_denoiser_channels, wm.latent_denoiser_depths, wm.latent_denoiser_cond_channels),
        actor_critic_sizes=lambda ac: (ac.latent_channels, ac.latent_down),
    ),
    # DIAMOND: frames in [-1, 1], pixel U-Net with quantised output (wrap_model_output), always its own
    # estimate, its actor-critic CNN.
    "diamond": ModelKind(
        has_encoder=False,
        state_shape=lambda config: FRAME_SHAPE,
        encode_frames=lambda params, x, config: x,
        finalize=lambda d, config: diffusion.quantize_pixels(d),
        own_prediction=lambda switch_normal, config: jnp.asarray(True),
        denoiser_sizes=lambda wm: (wm.pixel_denoiser_channels, wm.pixel_denoiser_depths, wm.pixel_denoiser_cond_channels),
        actor_critic_sizes=lambda ac: (ac.pixel_channels, ac.pixel_down),
    ),
}


def model_kind(config) -> ModelKind:
  """The record of `config.wm.kind`; an unknown kind is one clear error."""
  kind = config.wm.kind
  if kind not in MODEL_KINDS:
    raise ValueError(f"unknown config.wm.kind {kind!r}; valid: {', '.join(map(repr, MODEL_KINDS))}")
  return MODEL_KINDS[kind]


# ----------------------------------------------------------------------------------------------------------
# Init and optimiser
# ----------------------------------------------------------------------------------------------------------

def init_world_model(config, num_actions: int, key: jax.Array) -> dict:
  """Returns params {"encoder" (jedi only), "denoiser", "rew_end"}; deterministic given `key`."""
  return _init_world_model(config, num_actions, _param_init_key(key))


def _param_init_key(key: jax.Array) -> jax.Array:
  """An "unsafe_rbg" key seeded by `key` (raw uint32 or typed), used only to draw initial parameters.

  On CPU, threefry costs about a second of XLA compile time per distinct parameter shape (tens of seconds
  per init); XLA's RngBitGenerator compiles in a fraction of that and is equally deterministic.
  """
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  return jax.random.wrap_key_data(jnp.resize(data.astype(jnp.uint32).reshape(-1), (4,)), impl="unsafe_rbg")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_world_model(config, num_actions: int, key: jax.Array) -> dict:
  k_enc, k_den, k_rew = jax.random.split(key, 3)
  s = state_shape(config)
  n = config.wm.num_cond
  params = {}
  if model_kind(config).has_encoder:
    params["encoder"] = _encoder_net(config).init(k_enc, jnp.zeros((1,) + FRAME_SHAPE))["params"]
  params["denoiser"] = _denoiser_net(config, num_actions).init(
      k_den, jnp.zeros((1,) + s), jnp.zeros((1,)), jnp.zeros((1, n) + s), jnp.zeros((1, n), jnp.int32))["params"]
  params["rew_end"] = _rew_end_net(config, num_actions).init(
      k_rew, rew_end_initial_state(config, 1), jnp.zeros((1,) + s), jnp.zeros((1,), jnp.int32),
      jnp.zeros((1,) + s))["params"]
  return params


def world_model_optimizer(config) -> optax.GradientTransformation:
  """AdamW per parameter group, each with its own grad-norm clip (DIAMOND config/trainer.yaml; `jedi_jax.optim`).

  Groups: "denoiser" (clip max_grad_norm_denoiser), "encoder" (lr x wm.encoder_lr_scale; the paper's 0.3
  slows the encoder relative to the denoiser it feeds), "rew_end" (both clip max_grad_norm_other).
  Learning rate: linear warm-up from 0 over optim.warmup_steps, then constant (DIAMOND get_lr_sched).
  """
  o = config.optim
  warmup = optim.warmup_schedule(o.lr, o.warmup_steps)

  def group(max_norm: float, lr_scale: float) -> optax.GradientTransformation:
    return optim.adamw_group(lambda count: warmup(count) * lr_scale, max_grad_norm=max_norm,
                             weight_decay=o.weight_decay_wm, eps=o.eps)

  return optim.per_group({
      "encoder": group(o.max_grad_norm_other, config.wm.encoder_lr_scale),
      "denoiser": group(o.max_grad_norm_denoiser, 1.0),
      "rew_end": group(o.max_grad_norm_other, 1.0),
  })


# ----------------------------------------------------------------------------------------------------------
# Encoding, denoising, sampling
# ----------------------------------------------------------------------------------------------------------

def encode(params, obs: jax.Array, config, frame_mask: jax.Array | None = None, chunks: int = 1) -> jax.Array:
  """obs [..., 64, 64, 3] uint8 -> state [..., *S] (jedi: clamped latents; diamond: frames in [-1, 1]).

  frame_mask [...] bool (optional): False frames are padding and enter as zeros, as in DIAMOND.
  chunks: the frames run through the encoder in this many rematerialised pieces (`chunked`).
  """
  x = normalize_frames(obs, frame_mask)
  lead = x.shape[:-3]
  z = chunked(lambda f: model_kind(config).encode_frames(params, f, config), chunks,
              x.reshape((-1,) + FRAME_SHAPE))
  return z.reshape(lead + z.shape[1:])


def finalize_denoised(d: jax.Array, config) -> jax.Array:
  """What every denoised estimate becomes before it is used (sampler steps, the own-prediction switch).

  Pixels: quantised (DIAMOND wrap_model_output). Latents: `clamp_prediction` with wm.prediction_clamp.
  """
  return model_kind(config).finalize(d, config)


def denoise(params, noisy: jax.Array, sigma: jax.Array, cond: jax.Array, cond_actions: jax.Array, config,
            chunks: int = 1):
  """The EDM denoiser D(x; sigma, cond, actions) = c_skip x + c_out F(c_in x, c_noise, cond / sigma_data, a).

  Args:
    noisy [B, *S], sigma [B], cond [B, num_cond, *S], cond_actions [B, num_cond] int; chunks: the network runs
    over the batch in this many rematerialised pieces (`chunked`).
  Returns:
    (F [B, *S] the raw network output, denoised [B, *S] quantised (pixels) or clamped (latents)).
  """
  wm = config.wm
  c_in, c_out, c_skip, c_noise = diffusion.edm_scalings(sigma, wm.sigma_data, wm.sigma_offset_noise)
  net = _denoiser_net(config, _num_actions(params))
  # DIAMOND feeds the conditioning states divided by sigma_data, not scaled by c_in.
  apply = lambda *a: net.apply({"params": params["denoiser"]}, *a)  # noqa: E731
  out = chunked(apply, chunks, noisy * c_in[:, None, None, None], c_noise, cond / wm.sigma_data, cond_actions)
  denoised = c_skip[:, None, None, None] * noisy + c_out[:, None, None, None] * out
  return out, finalize_denoised(denoised, config)


def sample_next(params, cond: jax.Array, cond_actions: jax.Array, key: jax.Array, config) -> jax.Array:
  """Samples the next state with config.sampler (Karras sigmas, Euler/Heun, unscaled initial noise).

  cond [B, num_cond, *S], cond_actions [B, num_cond] int -> [B, *S].
  """
  b = cond.shape[0]

  def denoise_fn(x, sigma):
    return denoise(params, x, jnp.full((b,), sigma), cond, cond_actions, config)[1]

  return sample_with(denoise_fn, key, (b,) + cond.shape[2:], config)


def sample_with(denoise_fn, key: jax.Array, shape: tuple, config) -> jax.Array:
  """config.sampler's sampler around `denoise_fn(x [*shape], sigma) -> finalised estimate [*shape]`."""
  s = config.sampler
  sigmas = diffusion.karras_sigmas(s.num_steps, s.sigma_min, s.sigma_max, s.rho)
  return diffusion.sample(denoise_fn, key, shape, sigmas, order=s.order, s_churn=s.s_churn,
                          s_tmin=s.s_tmin, s_tmax=s.s_tmax, s_noise=s.s_noise)


# ----------------------------------------------------------------------------------------------------------
# Reward / termination model
# ----------------------------------------------------------------------------------------------------------

def rew_end_initial_state(config, batch_size: int):
  """Zero LSTM state (h, c), each [batch_size, wm.rew_end_lstm_dim]."""
  return blocks.lstm_zero_state(batch_size, config.wm.rew_end_lstm_dim)


def rew_end_step(params, lstm_state, state: jax.Array, action: jax.Array, next_state: jax.Array, config):
  """One transition: state [B, *S], action [B], next_state [B, *S]
  -> (lstm_state, reward_logits [B, 3] (classes sign -1, 0, 1), end_logits [B, 2])."""
  net = _rew_end_net(config, _num_actions(params, "rew_end"))
  return net.apply({"params": params["rew_end"]}, lstm_state, state, action, next_state)


def rew_end_sequence(params, lstm_state, states: jax.Array, actions: jax.Array, config, chunks: int = 1):
  """A sequence: states [B, T + 1, *S], actions [B, T] -> (lstm_state, reward_logits [B, T, 3],
  end_logits [B, T, 2]). The CNN, the LSTM input projection and the heads run on all B*T transitions at
  once (the CNN in `chunks` rematerialised pieces, `chunked`); only the recurrent part is a lax.scan over T."""
  b, t = actions.shape
  net = _rew_end_net(config, _num_actions(params, "rew_end"))
  variables = {"params": params["rew_end"]}
  flat = lambda x: x.reshape((b * t,) + x.shape[2:])
  feats = chunked(lambda *a: net.apply(variables, *a, method="features"), chunks,
                  flat(states[:, :-1]), flat(actions), flat(states[:, 1:]))
  gates = net.apply(variables, feats, method="input_gates")
  gates = jnp.swapaxes(gates.reshape(b, t, -1), 0, 1)   # [T, B, 4H]

  def step(carry, g):
    return net.apply(variables, carry, g, method="lstm_step")

  lstm_state, hs = jax.lax.scan(step, lstm_state, gates)
  rew_logits, end_logits = net.apply(variables, jnp.swapaxes(hs, 0, 1), method="head")
  return lstm_state, rew_logits, end_logits


def _masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  return diagnostics.masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), mask)


def rew_end_loss(params, states: jax.Array, segment: Segment, config, chunks: int = 1):
  """Cross-entropy on sign(reward) (3 classes) and end (2 classes), masked (DIAMOND rew_end_model).

  states [B, T + 1, *S] (the segment's frames, encoded); segment: act, rew, end, mask [B, T].
  Returns (loss_rew + loss_end, metrics).
  """
  act, mask = segment.act, segment.mask
  _, rew_logits, end_logits = rew_end_sequence(params, rew_end_initial_state(config, act.shape[0]), states,
                                               act, config, chunks)
  rew_target = (jnp.sign(segment.rew) + 1).astype(jnp.int32)
  end_target = segment.end.astype(jnp.int32)
  loss_rew = _masked_cross_entropy(rew_logits, rew_target, mask)
  loss_end = _masked_cross_entropy(end_logits, end_target, mask)
  metrics = {
      "loss_rew": loss_rew,
      "loss_end": loss_end,
      "rew_accuracy": diagnostics.masked_mean(jnp.argmax(rew_logits, -1) == rew_target, mask),
      "end_accuracy": diagnostics.masked_mean(jnp.argmax(end_logits, -1) == end_target, mask),
  }
  # Per-class counts for recall / precision (jedi_jax/diagnostics.py): accuracy hides a head that never
  # predicts the rare classes (DIAMOND logs per-class figures too).
  metrics.update(diagnostics.classification_counts(
      jax.lax.stop_gradient(rew_logits), rew_target, mask, "rew", diagnostics.REWARD_CLASSES))
  metrics.update(diagnostics.classification_counts(
      jax.lax.stop_gradient(end_logits), end_target, mask, "end", (None, "")))
  return loss_rew + loss_end, metrics


# ----------------------------------------------------------------------------------------------------------
# Dynamics (denoising) loss and the total world-model loss
# ----------------------------------------------------------------------------------------------------------

def dynamics_loss(params, states: jax.Array, actions: jax.Array, target_mask: jax.Array, key: jax.Array,
                  config, chunks: int = 1):
  """EDM denoising loss over num_predictions autoregressive predictions (arXiv 2505.19698, DIAMOND
  denoiser.forward).

  Args:
    params: world-model params (only "denoiser" is used).
    states: [B, num_cond + P, *S] encoded frames, with gradient (conditioning keeps it).
    actions: [B, num_cond + P - 1] int.
    target_mask: [B, P] bool, True where prediction i's target is a real frame.
    key: PRNG key.
  Returns:
    (mean over predictions of the masked MSE, metrics).

  Targets are stop-gradient (wm.stop_gradient_target), so the encoder learns only through the conditioning
  states. For prediction i >= 1 the newest conditioning state is, by one coin flip per batch
  (p = wm.random_switch_prob, JEDI's random switching), the denoiser's own stop-gradient, clamped estimate
  of the previous target, or the encoder's state. The pixel baseline always uses its own (quantised)
  estimate, as DIAMOND does.
  """
  wm = config.wm
  n, p = wm.num_cond, wm.num_predictions
  b = states.shape[0]
  chex.assert_shape(states, (b, n + p) + state_shape(config))
  chex.assert_shape(actions, (b, n + p - 1))
  # All randomness of the loss comes from one normal draw, sliced: every separate jax.random call site
  # costs seconds of XLA compile time on CPU (partitionable threefry), for no statistical difference.
  s = states.shape[2:]
  sizes = (1, p * b, p * b * s[-1], p * b * math.prod(s))
  eps = jax.random.normal(key, (sum(sizes),))
  switch_eps, sigma_eps, offset_eps, noise_eps = jnp.split(eps, list(itertools.accumulate(sizes))[:-1])
  sigma_eps = sigma_eps.reshape(p, b)
  offset_eps = offset_eps.reshape((p,) + diffusion.offset_noise_shape((b,) + s))
  noise_eps = noise_eps.reshape((p, b) + s)
  use_own = model_kind(config).own_prediction(switch_eps[0], config)  # one coin per batch

  window = states[:, :n]
  losses = []
  for i in range(p):
    clean = states[:, n + i]
    if wm.stop_gradient_target:
      clean = jax.lax.stop_gradient(clean)
    sigma = diffusion.training_sigma_from_normal(sigma_eps[i], wm.train_sigma_loc, wm.train_sigma_scale,
                                                 wm.train_sigma_min, wm.train_sigma_max)
    noisy = diffusion.add_noise_from_normals(clean, sigma, wm.sigma_offset_noise, offset_eps[i], noise_eps[i])
    out, denoised = denoise(params, noisy, sigma, window, actions[:, i:i + n], config, chunks)
    _, c_out, c_skip, _ = diffusion.edm_scalings(sigma, wm.sigma_data, wm.sigma_offset_noise)
    target = diffusion.denoising_target(clean, noisy, c_skip, c_out)
    losses.append(diffusion.denoising_loss(out, target, target_mask[:, i]))
    if i + 1 < p:
      newest = jnp.where(use_own, jax.lax.stop_gradient(denoised), states[:, n + i])
      window = jnp.concatenate([window[:, 1:], newest[:, None]], axis=1)

  loss = sum(losses) / p
  metrics = {"loss_denoising": loss, "own_prediction": use_own.astype(jnp.float32)}
  for i, l in enumerate(losses):
    metrics[f"loss_denoising_{i}"] = l
  return loss, metrics


class WorldModelBatch(NamedTuple):
  """The two replay segment batches of one world-model update (layout in this module's docstring)."""
  dynamics: Segment  # T = num_cond + num_predictions steps, padding only before the episode start
  rew_end: Segment   # T = ac.horizon + num_cond steps, padding before the start and after the end
  # [B] int32 or None. Set (wm.share_encoder_pass): `dynamics` is the window of `rew_end` that starts at this
  # step (`segment_window`), and one encoder pass over rew_end's frames serves both losses.
  dynamics_start: jax.Array | None = None


def segment_window(segment: Segment, start: jax.Array, length: int) -> Segment:
  """Steps start[b] .. start[b] + length - 1 of each row of `segment` (frames up to start[b] + length)."""
  def rows(x, n):
    return jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, n, axis=0))(x, start)
  return Segment(obs=rows(segment.obs, length + 1), act=rows(segment.act, length), rew=rows(segment.rew, length),
                 end=rows(segment.end, length), trunc=rows(segment.trunc, length), mask=rows(segment.mask, length))


def shared_dynamics_start(mask: jax.Array, length: int, key: jax.Array) -> jax.Array:
  """Where the dynamics window of `wm.share_encoder_pass` starts in a reward/end segment (mask [B, T]): uniform
  over the windows of `length` steps whose last step is real, so that, like a separately drawn dynamics
  segment, a window holds padding only before the episode start and its last target is a real frame; step 0
  when no window ends on a real step (an episode that ends within the first `length` - 1 steps). -> [B] int32."""
  valid = mask[:, length - 1:]   # [B, T - length + 1]: window s ends at step s + length - 1
  valid = valid.at[:, 0].set(valid[:, 0] | ~valid.any(axis=1))
  return jax.random.categorical(key, jnp.where(valid, 0.0, -jnp.inf)).astype(jnp.int32)


def world_model_loss(params, batch: WorldModelBatch, key: jax.Array, config):
  """Total loss = denoising loss + reward loss + end loss, gradients into the encoder from the
  conditioning states and the reward/end model.

  Args:
    params: {"encoder" (jedi), "denoiser", "rew_end"}.
    batch: the dynamics and reward/end segments (layout in this module's docstring).
    key: PRNG key.
    config: frozen config (static under jit).
  Returns:
    (loss, metrics: dict of scalars: loss_total, loss_denoising, loss_denoising_{i}, loss_rew, loss_end,
    own_prediction, rew_accuracy, end_accuracy, the per-class counts rew_{count,hits,predicted}_{neg,zero,pos}
    and end_{count,hits,predicted} (diagnostics.rates_from_counts turns them into recall / precision), and for
    jedi latent_std / latent_abs_max).
  """
  wm = config.wm
  n, p = wm.num_cond, wm.num_predictions
  dyn, rew = batch.dynamics, batch.rew_end
  b, t_dyn = dyn.act.shape
  t_rew = rew.act.shape[1]
  offset = t_dyn + 1 - (n + p)
  assert offset >= 0, f"dynamics segment of {t_dyn} steps is too short for {n} + {p}"
  chunks = config_lib.added_field(config, "wm", "loss_chunks")   # pieces per network call (`chunked`)

  dyn_frame_mask = dyn.frame_mask[:, offset:]
  if batch.dynamics_start is None:
    # Encode every frame of both segments in a single encoder call.
    obs = jnp.concatenate([dyn.obs[:, offset:].reshape((-1,) + FRAME_SHAPE), rew.obs.reshape((-1,) + FRAME_SHAPE)])
    frame_mask = jnp.concatenate([dyn_frame_mask.reshape(-1), rew.frame_mask.reshape(-1)])
    states = encode(params, obs, config, frame_mask, chunks)
    s = states.shape[1:]
    dyn_states = states[:b * (n + p)].reshape((b, n + p) + s)
    rew_states = states[b * (n + p):].reshape((b, t_rew + 1) + s)
  else:
    # The dynamics window lies inside the reward/end segment: one encoder pass over its frames serves both.
    rew_states = encode(params, rew.obs, config, rew.frame_mask, chunks)
    dyn_states = jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, n + p, axis=0))(
        rew_states, batch.dynamics_start + offset)

  k_dyn = jax.random.fold_in(key, 0)
  loss_dyn, metrics = dynamics_loss(params, dyn_states, dyn.act[:, offset:offset + n + p - 1],
                                    dyn.mask[:, offset + n - 1:], k_dyn, config, chunks)
  loss_rew_end, rew_metrics = rew_end_loss(params, rew_states, rew, config, chunks)
  loss = loss_dyn + loss_rew_end
  metrics.update(rew_metrics)
  metrics["loss_total"] = loss
  if model_kind(config).has_encoder:
    metrics["latent_std"] = diagnostics.masked_std(dyn_states, dyn_frame_mask.astype(jnp.float32))
    metrics["latent_abs_max"] = jnp.max(jnp.abs(dyn_states))
  return loss, metrics


# ----------------------------------------------------------------------------------------------------------
# Diagnostics
# ----------------------------------------------------------------------------------------------------------

def probe_world_model(wm_params, segment: Segment, key: jax.Array, config) -> dict:
  """One-step probes of the world model from real contexts (no gradient, no state change; jedi_jax/diagnostics.py
  says why, docs/metrics.md how to read them).

  segment: a replay Segment of num_cond steps (obs [B, K + 1, 64, 64, 3] uint8, act / mask [B, K]); frame K
  is the true next frame of step K - 1. Returns scalars (keys without the `wm/` prefix):
    sampled_latent_std     std of one-step samples (compare with latent_std of the encoder's latents)
    sample_error           RMS(sample - encoded true next state) / encoder spread
    action_sensitivity     RMS(sample(a) - sample(a')) / encoder spread, a' != a the last action only, same
                           context and sampler noise (about 0: the dynamics ignore actions)
    action_sensitivity_reward  total-variation distance of the reward distributions after (a, sample(a))
                           and (a', sample(a')), same context (about 0: the reward model ignores actions)
    action_error_gain      RMS(sample(a') - true next) / RMS(sample(a) - true next) - 1, same a', context and
                           noise: > 0 when the action taken predicts the true next state better than another
                           (the dynamics use the action as the game does), about 0 when they ignore it or use it
                           as noise
    sampled_saturated_frac / latent_saturated_frac (jedi): fraction of |z| >= 0.95 * 3
  """
  k = config.wm.num_cond
  sg = jax.lax.stop_gradient
  wm_params = sg(wm_params)
  obs, act, mask = segment.obs, segment.act, segment.mask
  b = act.shape[0]
  frame_mask = segment.frame_mask
  states = encode(wm_params, obs, config, frame_mask)       # [B, K + 1, *S]
  cond, true_next = states[:, :k], states[:, k]
  actions = jnp.where(mask, act, 0).astype(jnp.int32)
  num_actions = _num_actions(wm_params)
  k_alt, k_sample = jax.random.split(key)
  alt_last = (actions[:, -1] + jax.random.randint(k_alt, (b,), 1, max(num_actions, 2))) % num_actions
  alt_actions = actions.at[:, -1].set(alt_last)
  # Both action versions in one (vmapped) program, with the same key and so the same sampler noise.
  both_actions = jnp.stack([actions, alt_actions])
  sample, sample_alt = jax.vmap(lambda a: sample_next(wm_params, cond, a, k_sample, config))(both_actions)

  weight = mask[:, -1].astype(jnp.float32)                               # the step that produced frame K
  spread = jnp.maximum(diagnostics.masked_std(cond, frame_mask[:, :k].any(axis=1).astype(jnp.float32)), 1e-6)
  per_sample = lambda x: jnp.mean(jnp.square(x).reshape(b, -1), axis=1)  # noqa: E731

  def reward_probs(next_state, acts):
    seq = jnp.concatenate([cond, next_state[:, None]], axis=1)
    _, rew_logits, _ = rew_end_sequence(
        wm_params, rew_end_initial_state(config, b), seq, acts, config)
    return jax.nn.softmax(rew_logits[:, -1])

  probs, probs_alt = jax.vmap(reward_probs)(jnp.stack([sample, sample_alt]), both_actions)
  tv = 0.5 * jnp.sum(jnp.abs(probs - probs_alt), axis=-1)
  error = diagnostics.masked_mean(per_sample(sample - true_next), weight)
  error_alt = diagnostics.masked_mean(per_sample(sample_alt - true_next), weight)
  out = {
      "sampled_latent_std": diagnostics.masked_std(sample, weight),
      "sample_error": jnp.sqrt(error) / spread,
      "action_sensitivity": jnp.sqrt(jnp.mean(per_sample(sample - sample_alt))) / spread,
      "action_sensitivity_reward": jnp.mean(tv),
      "action_error_gain": jnp.sqrt(error_alt / jnp.maximum(error, 1e-12)) - 1.0,
  }
  if model_kind(config).has_encoder:
    limit = diagnostics.SATURATION * LATENT_CLAMP
    out["sampled_saturated_frac"] = jnp.mean(jnp.abs(sample) >= limit)
    out["latent_saturated_frac"] = jnp.mean(jnp.abs(cond) >= limit)
  return jax.tree.map(lambda x: x.astype(jnp.float32), out)
