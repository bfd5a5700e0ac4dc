"""One config for the whole agent, and its named presets.

The config is an `ml_collections.ConfigDict` so that the absl launcher can override any field with
`--config.section.field=value`. Library functions take the *frozen* config (hashable, so it can be a
static argument of `jax.jit`). Every default below names its source: "paper" is JEDI (arXiv 2505.19698),
"DIAMOND" is eloialonso/diamond at commit 5bcd159 (`config/trainer.yaml`, `config/agent/default.yaml`).

Presets are functions returning a fresh config:
  * `atari100k()` - the paper's protocol and sizes (the default for real runs).
  * `cpu()`       - a reduced budget for learning results on a 2-core CPU (~35 min per seed).
  * `debug()`     - tiny networks and budgets; trains end-to-end on a 2-core CPU in about two minutes.
  * `catch()`     - the Catch learning testbed (pure-JAX env): learns in minutes on a 2-core CPU.
  * `catch_quick()` - Catch in ~4.5 minutes, beats random on every seed run: the regression test for learning.
  * `minatar()`   - MinAtar Breakout (pure-JAX env, gymnax): one seed in at most 2.5 h on a 2-core CPU.
  * `atari_cpu()` - Atari100k games, `minatar()`'s agent, 15k env steps: one seed in ~1.8 h on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import ml_collections

DEFAULT_GAME = "Breakout"


def atari100k() -> ml_collections.ConfigDict:
  """The paper preset: Atari100k protocol, JEDI network sizes, DIAMOND's training schedule."""
  c = ml_collections.ConfigDict()
  c.preset = "atari100k"
  c.game = DEFAULT_GAME
  c.seed = 0

  # --- Environment (DIAMOND src/envs/env.py, atari_preprocessing.py) -----------------------------------------------------------
  c.env = ml_collections.ConfigDict()
  c.env.backend = "envpool"            # "envpool" | "ale" | "jax" (pure-JAX games: Catch)
  # "xla": the env step inside the compiled programs (envpool/ale-py: a CPU or CUDA custom call; pure-JAX games:
  # any device); "host": the Python step through io_callback; "auto": "xla" where it can run, "host" on a TPU
  # (jedi_jax/envs/base.py `resolve_step_path`). Both paths give bit-identical steps (tests/test_envs.py).
  c.env.step_path = "auto"
  c.env.num_envs = 1                   # DIAMOND collects with 1 train env
  c.env.stochastic_frameskip = False   # stochastic-Atari variant (2605.13013): frame skip ~ U{2..6}
  c.env.max_episode_steps = 27_000     # 108k frames
  c.env.noop_max = 30
  c.env.num_test_envs = 25             # test episodes run in parallel envs
  c.env.num_test_episodes = 100        # DIAMOND num_final_episodes

  # --- World model (JEDI arXiv 2505.19698; DIAMOND src/models) --------------------------------------------------------
  c.wm = ml_collections.ConfigDict()
  c.wm.kind = "jedi"                   # "jedi" (latent) | "diamond" (pixel baseline)
  c.wm.num_cond = 4                    # conditioning frames/latents (DIAMOND num_steps_conditioning)
  # Encoder E_phi (paper): 64x64x3 -> [8, 8, 16].
  c.wm.encoder_channels = (32, 32, 32, 16)
  c.wm.encoder_depths = (2, 2, 2, 2)
  c.wm.encoder_down = (1, 1, 1, 0)
  c.wm.encoder_patch = 1               # stem: 1 = the paper's 3x3 conv; p > 1 = p x p patches (CPU testbeds)
  c.wm.latent_clamp = True             # encoder output C(z) = 3 tanh(z / 3) (paper; ablated)
  # Denoised latent estimates (sampler steps, own-prediction switch): "clip" to [-3, 3] (idempotent: an exact
  # prediction passes unchanged; ours, docs/design.md), "tanh" (C again: shrinks exact predictions), "none".
  c.wm.prediction_clamp = "clip"
  # Latent denoiser D_theta (paper: 1-level U-Net, 160 channels, no downsampling).
  c.wm.latent_denoiser_channels = (160,)
  c.wm.latent_denoiser_depths = (2,)      # 2: JEDI total ~13.5M with a ~2M actor-critic (world_model.py)
  c.wm.latent_denoiser_cond_channels = 256
  # DIAMOND pixel denoiser (baseline; DIAMOND default.yaml).
  c.wm.pixel_denoiser_channels = (64, 64, 64, 64)
  c.wm.pixel_denoiser_depths = (2, 2, 2, 2)
  c.wm.pixel_denoiser_cond_channels = 256
  # Reward / termination model (DIAMOND's rew_end_model on latents).
  c.wm.rew_end_channels = (32, 32, 32, 32)
  c.wm.rew_end_depths = (2, 2, 2, 2)
  c.wm.rew_end_cond_channels = 128
  c.wm.rew_end_lstm_dim = 512
  # What the reward/end CNN sees of a transition (s_t, a_t, s_{t+1}): True, DIAMOND's concat(s_t, s_{t+1});
  # False, s_t alone, so that r_t and end_t are predicted from the state, the action and the LSTM's history
  # (for budgets where sampled next states lack the rare changes the head reads; docs/results.md, "Atari on
  # this CPU"). An ADDED_FIELD.
  c.wm.rew_end_next_state = True
  # EDM (DIAMOND denoiser.py / trainer.yaml).
  c.wm.sigma_data = 0.5
  c.wm.sigma_offset_noise = 0.3
  c.wm.train_sigma_loc = -0.4
  c.wm.train_sigma_scale = 1.2
  c.wm.train_sigma_min = 2e-3
  c.wm.train_sigma_max = 20.0
  # End-to-end latent objective switches (paper section 5; each ablated in the paper).
  c.wm.stop_gradient_target = True
  c.wm.encoder_lr_scale = 0.3
  c.wm.random_switch_prob = 0.5       # p(own prediction) for the second prediction's newest latent
  c.wm.num_predictions = 2            # predictions per segment: segment length = num_cond + num_predictions
  # Share of each world-model batch's dynamics segments whose predicted steps hold a rewarded transition (drawn
  # uniformly among the replay's rewarded steps; replay.sample_segments `rewarded`). 0: DIAMOND's sampler.
  # Not in the papers: for budgets where the one-step samples lack the rare events that pay (a broken brick
  # sampled in 14% of the transitions where the true frame shows it in 88%: docs/results.md, "Atari on this
  # CPU"), the denoiser sees those transitions more often. The reward/end segments stay DIAMOND's. An
  # ADDED_FIELD.
  c.wm.rewarded_fraction = 0.0
  # Efficiency switches (docs/benchmarks.md, "Memory and the whole update"; ADDED_FIELDS):
  # share_encoder_pass: take the dynamics window inside the reward/end segment, so that one encoder pass over
  #   its frames serves both losses (20 frames per sample instead of 26) instead of drawing the two segments
  #   separately as DIAMOND's trainer does (the sampled distribution differs; train.sample_world_model_batch).
  # remat: rematerialise (jax.checkpoint) each residual block of the world-model networks, the JEDI encoder,
  #   the denoiser U-Net and the reward/end CNN alike in both models, keeping only the blocks' inputs for the
  #   backward pass: less memory for more compute. Same values.
  # loss_chunks: the world-model loss runs each network (encoder, denoiser, reward/end CNN) over its batch in
  #   this many pieces, one after another in a loop, each rematerialised (world_model.chunked): the backward
  #   pass holds one piece's activations. Same values; more compute. On XLA:CPU the form of remat that lowers
  #   memory (`remat` does not there; docs/benchmarks.md).
  c.wm.share_encoder_pass = False
  c.wm.remat = False
  c.wm.loss_chunks = 1

  # --- Diffusion sampler (DIAMOND trainer.yaml world_model_env.diffusion_sampler) -------------
  c.sampler = ml_collections.ConfigDict()
  c.sampler.num_steps = 3
  c.sampler.sigma_min = 2e-3
  c.sampler.sigma_max = 5.0
  c.sampler.rho = 7.0
  c.sampler.order = 1                  # 1 Euler, 2 Heun
  c.sampler.s_churn = 0.0
  c.sampler.s_tmin = 0.0
  c.sampler.s_tmax = float("inf")
  c.sampler.s_noise = 1.0

  # --- Actor-critic (DIAMOND default.yaml / trainer.yaml, on latents) -------------------------
  c.ac = ml_collections.ConfigDict()
  # CNN of the pixel baseline (wm.kind="diamond"): DIAMOND's, 64x64x3 -> 4x4x64 -> LSTM.
  c.ac.pixel_channels = (32, 32, 64, 64)
  c.ac.pixel_down = (1, 1, 1, 1)       # 2x2 max-pool after each stage (DIAMOND)
  # CNN on JEDI latents [8, 8, 16] -> 4x4x32 = 512 LSTM inputs: ~2.1M params with LSTM 512 (ours).
  c.ac.latent_channels = (32, 32)
  c.ac.latent_down = (0, 1)
  c.ac.lstm_dim = 512
  c.ac.horizon = 15
  c.ac.gamma = 0.985
  c.ac.lam = 0.95
  c.ac.value_weight = 1.0
  c.ac.entropy_weight = 0.001
  # 0: the entropy weight is the constant above (DIAMOND). N > 0: linear from entropy_weight to
  # entropy_weight_final over the first N actor-critic updates, then constant (ours; agent.entropy_weight).
  c.ac.entropy_decay_updates = 0
  c.ac.entropy_weight_final = 0.001
  # The actor-critic's learning rate is optim.lr x lr_scale (DIAMOND: one lr, 1e-4, for every network). On
  # Catch, 0.3 did not stop the early policy collapse and slowed learning (docs/results.md, "Catch").
  c.ac.lr_scale = 1.0
  c.ac.epsilon_collect = 0.01
  c.ac.epsilon_test = 0.0

  # --- Optimisation (DIAMOND trainer.yaml) ----------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.batch_size = 32
  c.optim.lr = 1e-4
  c.optim.eps = 1e-8
  c.optim.weight_decay_wm = 1e-2
  c.optim.weight_decay_ac = 0.0
  c.optim.warmup_steps = 100
  c.optim.max_grad_norm_denoiser = 1.0
  c.optim.max_grad_norm_other = 100.0

  # --- Replay (DIAMOND data/batch_sampler.py) -------------------------------------------------
  c.replay = ml_collections.ConfigDict()
  c.replay.capacity = 110_000          # steps per train env; >= the 100k budget plus the 10k initial max
  c.replay.sample_weights = (0.1, 0.1, 0.1, 0.7)

  # --- Schedule (DIAMOND config/trainer.yaml, src/trainer.py) ----------------------------------------
  c.schedule = ml_collections.ConfigDict()
  c.schedule.total_env_steps = 100_000
  c.schedule.initial_min_steps = 5_000
  c.schedule.initial_max_steps = 10_000
  c.schedule.initial_reward_threshold = 10
  c.schedule.steps_per_epoch = 100
  c.schedule.wm_updates_per_epoch = 400
  c.schedule.ac_updates_per_epoch = 400
  c.schedule.wm_updates_first_epoch = 10_000
  c.schedule.ac_updates_first_epoch = 5_000
  c.schedule.num_final_epochs = 50
  c.schedule.epochs_per_call = 10      # whole epochs compiled into one scanned call

  # --- Devices (jedi_jax/parallel.py) ---------------------------------------------------------
  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 1          # 1: one device; 0: data parallel over all devices; N: over the first N
                                      # optim.batch_size is the global batch; per device = batch / devices

  # --- Run bookkeeping ------------------------------------------------------------------------
  c.run = ml_collections.ConfigDict()
  c.run.checkpoint_every = 50          # epochs
  c.run.checkpoints_to_keep = 3
  # Segments of the world-model probe run once per epoch (wm/action_sensitivity, wm/sampled_latent_std, ...;
  # docs/metrics.md); 0 turns it off. It changes no state, so results do not depend on it.
  c.run.probe_batch_size = 4
  # Outputs only (UNHASHED_FIELDS): GIFs of the first N test episodes of the final evaluation under
  # workdir/videos/ (experiments/train.py; jedi_jax/evaluate.py:record_test_episodes), and a Weights & Biases
  # project that also receives metrics.jsonl's rows ("" = off; jedi_jax/logs.py, the [wandb] extra).
  c.run.record_test_episodes = 0
  c.run.wandb_project = ""
  # Also output only: every `test_every` epochs (0 = never) the agent plays the final test's games (same envs,
  # seeds and epsilon; env.num_test_episodes games), logged as `test/return_mean` rows against env steps for
  # learning curves (jedi_jax/loop.py). It reads the state and changes nothing: results do not depend on it.
  c.run.test_every = 0
  # Mixed precision (jedi_jax/nets/precision.py): "bfloat16" runs the convolutions and matmuls of every network
  # in bf16 (float32 accumulation and outputs); params, optimiser states, losses and the replay stay float32.
  c.run.compute_dtype = "float32"
  return c


def _small_networks(c: ml_collections.ConfigDict, width: int, lstm_dim: int, ac_latent_channels: tuple,
                    latent_denoiser_depth: int = 1) -> None:
  """Narrow networks for the CPU presets, every block kept: encoder 8-16 channels; stages of `width`
  channels in the pixel denoiser and the reward/end model (conditioning 4x and 2x `width`), a latent
  denoiser of 4x `width`, DIAMOND's actor-critic CNN at `width`, `width`, 2x `width`, 2x `width`; LSTMs of
  `lstm_dim`. width=8 is the smallest that still exercises every block (`debug` and the pure-JAX testbeds)."""
  c.wm.encoder_channels = (8, 8, 8, 16)
  c.wm.encoder_depths = (1, 1, 1, 1)
  c.wm.latent_denoiser_channels = (4 * width,)
  c.wm.latent_denoiser_depths = (latent_denoiser_depth,)
  c.wm.latent_denoiser_cond_channels = 4 * width
  c.wm.pixel_denoiser_channels = (width,) * 4
  c.wm.pixel_denoiser_depths = (1, 1, 1, 1)
  c.wm.pixel_denoiser_cond_channels = 4 * width
  c.wm.rew_end_channels = (width,) * 4
  c.wm.rew_end_depths = (1, 1, 1, 1)
  c.wm.rew_end_cond_channels = 2 * width
  c.wm.rew_end_lstm_dim = lstm_dim
  c.ac.pixel_channels = (width, width, 2 * width, 2 * width)
  c.ac.latent_channels = tuple(ac_latent_channels)
  c.ac.lstm_dim = lstm_dim


def debug() -> ml_collections.ConfigDict:
  """Tiny everything: an end-to-end CPU run in about two minutes. Not for results."""
  c = atari100k()
  c.preset = "debug"
  c.env.num_test_envs = 4
  c.env.num_test_episodes = 4
  c.env.max_episode_steps = 500
  _small_networks(c, width=8, lstm_dim=32, ac_latent_channels=(8, 8))
  c.ac.horizon = 5
  c.optim.batch_size = 4
  c.replay.capacity = 2_000
  c.schedule.total_env_steps = 600
  c.schedule.initial_min_steps = 200
  c.schedule.initial_max_steps = 400
  c.schedule.initial_reward_threshold = 1
  c.schedule.steps_per_epoch = 100
  c.schedule.wm_updates_per_epoch = 4
  c.schedule.ac_updates_per_epoch = 4
  c.schedule.wm_updates_first_epoch = 8
  c.schedule.ac_updates_first_epoch = 8
  c.schedule.num_final_epochs = 1
  c.schedule.epochs_per_call = 2
  c.run.checkpoint_every = 2
  return c


def cpu() -> ml_collections.ConfigDict:
  """A reduced budget that trains on a 2-core CPU: one seed of one game in ~35 min with both cores (docs/results.md).

  Everything not listed here is the paper preset: the protocol (DIAMOND's Atari wrappers, 100 test games
  at epsilon 0), the objective and its switches, EDM and the 3-step Euler sampler, the horizon of 15, the
  losses, the replay weights and the optimiser. What is cut, and why (a paper-size world-model update takes
  ~35 s on this CPU; even at these sizes one update of each model takes ~1 s per seed on one core):
    * narrow networks: encoder 8-16 channels, latent denoiser 64 channels, LSTMs of 128 (~10x fewer params);
    * 6k env steps instead of 100k, and 10 + 10 updates per 100-step epoch instead of 400 + 400 (an
      update-to-data ratio of 0.2 instead of 4); first epoch 300 + 150 (DIAMOND's 2:1), 5 final epochs;
    * batch 8 instead of 32; initial collection 1k-2k steps instead of 5k-10k.
  """
  c = atari100k()
  c.preset = "cpu"
  _small_networks(c, width=16, lstm_dim=128, ac_latent_channels=(16, 16), latent_denoiser_depth=2)
  c.optim.batch_size = 8
  c.replay.capacity = 6_200
  c.schedule.total_env_steps = 6_000
  c.schedule.initial_min_steps = 1_000
  c.schedule.initial_max_steps = 2_000
  c.schedule.wm_updates_per_epoch = 10
  c.schedule.ac_updates_per_epoch = 10
  c.schedule.wm_updates_first_epoch = 300
  c.schedule.ac_updates_first_epoch = 150
  c.schedule.num_final_epochs = 5
  c.schedule.epochs_per_call = 5
  c.run.checkpoint_every = 10         # a killed run loses at most ~15 min
  return c


def catch() -> ml_collections.ConfigDict:
  """The Catch learning testbed (bsuite's rules, `jedi_jax/envs/catch.py`) sized for a 2-core CPU: seeds 0-4
  score 0.98, 1.00, 1.00, 0.96, 0.98 in 11-13 min each (random policy -0.58; docs/results.md, "Catch").

  The agent and protocol are those of the other presets (epsilon-greedy collection at 0.01, 100 test games
  at epsilon 0, EDM and the 3-step sampler, the objective and its switches). What is changed, from
  measurements on this CPU (docs/results.md, "Catch"; `experiments/world_model_fit.py`):
    * a patch-4 encoder stem (64 -> 16 -> 8, 16 channels): the full-resolution stages of the other presets
      made a world-model update ~2.6 s, the patch stem ~0.4 s;
    * lr 1e-3 instead of 1e-4: at 1e-4 the reward head still predicted the base rates after 400 updates,
      at 1e-3 it separates catches from misses after ~800-1,000 updates;
    * horizon 10 (a game lasts 9 steps) and batch 16;
    * an entropy weight annealed from 0.01 to DIAMOND's 0.001 over the first 600 actor-critic updates
      (`ac.entropy_decay_updates`), and a first epoch of 1,600 world-model updates: the dynamics ignore the
      action for their first ~1,000 updates, and a policy trained on them in that time often collapsed onto
      one action and learnt late or not at all. A constant 0.001 left 2 seeds of 6 below 0.8, a constant
      0.01 one of 5 (seed 3: 0.06), 0.02-0.03 held seed 3 off but left seed 0's final policy too random
      (0.38, 0.46) (docs/results.md, "Catch");
    * 3k env steps: 1k random, then 20 epochs of 100 steps with 40 + 40 updates after a first epoch of
      1,600 + 200 (the reward head must be right, and the dynamics follow the action, before the policy can
      learn from them).
  """
  c = cpu()
  c.preset = "catch"
  c.game = "Catch"
  c.env.backend = "jax"                # the env step is a pure function inside the compiled epoch
  c.env.max_episode_steps = 1_000      # a Catch game lasts 9 steps; the cap never binds
  _small_networks(c, width=8, lstm_dim=64, ac_latent_channels=(16, 16))
  c.wm.encoder_patch = 4
  c.wm.encoder_channels = (16, 16)
  c.wm.encoder_depths = (1, 1)
  c.wm.encoder_down = (1, 0)
  c.ac.horizon = 10
  c.ac.entropy_weight = 0.01           # linear to 0.001 over the first 600 actor-critic updates
  c.ac.entropy_weight_final = 0.001
  c.ac.entropy_decay_updates = 600
  c.optim.lr = 1e-3
  c.optim.batch_size = 16
  c.replay.capacity = 3_200
  c.schedule.total_env_steps = 3_000
  c.schedule.initial_min_steps = 1_000
  c.schedule.initial_max_steps = 1_000
  c.schedule.initial_reward_threshold = 1
  c.schedule.wm_updates_per_epoch = 40
  c.schedule.ac_updates_per_epoch = 40
  c.schedule.wm_updates_first_epoch = 1_600
  c.schedule.ac_updates_first_epoch = 200
  c.schedule.num_final_epochs = 2
  c.schedule.epochs_per_call = 5
  c.run.checkpoint_every = 5
  return c


def catch_quick() -> ml_collections.ConfigDict:
  """Catch in about four minutes on a 2-core CPU: the regression test for learning (tests/test_learning.py).
  Seeds 0, 1, 2 score 0.98, 0.84, 0.94 (random policy -0.6; docs/results.md, "Catch in under five minutes").

  `catch()` with what made it ~4x faster (measured on this CPU):
    * an 8x8-patch encoder stem in one stage (64 -> 8, 16 channels): a latent cell is one 8x8 patch, and the
      dynamics learn to move the paddle with the action after ~1,300 updates at batch 8 in two seeds of three,
      where the 4x4-patch stem still ignored the action (`wm/action_sensitivity` 0.66 against 0.04);
    * batch 8 and a 2-step sampler (updates ~2.5x cheaper);
    * 1,000 random steps, then a first epoch of 1,200 world-model and 300 actor-critic updates, then 20 + 60
      per 100-step epoch: 1.8k env steps in all;
    * (2026-12-04) 2,000 world-model updates in the first epoch and 40 per later one, and an entropy weight
      annealed from 0.01 to 0.001 over the first 600 actor-critic updates: with 1,200 and 20 the dynamics
      still ignored the action when the policy had already settled, and seed 0 scored -0.06 on another
      machine (float rounding decided it); now they follow the action after the first epoch
      (`wm/action_sensitivity` ~0.55) and the early policy stays broad.
  """
  c = catch()
  c.preset = "catch_quick"
  c.wm.encoder_patch = 8
  c.wm.encoder_channels = (16,)
  c.wm.encoder_depths = (1,)
  c.wm.encoder_down = (0,)
  c.sampler.num_steps = 2
  c.optim.batch_size = 8
  c.replay.capacity = 1_900
  c.schedule.total_env_steps = 1_800
  c.schedule.wm_updates_first_epoch = 2_000
  c.schedule.ac_updates_first_epoch = 300
  c.schedule.wm_updates_per_epoch = 40
  c.schedule.ac_updates_per_epoch = 60
  c.schedule.num_final_epochs = 1
  c.run.checkpoint_every = 100        # a short run: the final checkpoint only
  return c


def minatar() -> ml_collections.ConfigDict:
  """MinAtar Breakout (Young & Tian 2019, arXiv 1903.03176; gymnax's JAX port, `jedi_jax/envs/minatar.py`)
  sized so that one seed trains in at most 2.5 h on a 2-core CPU.

  The Catch testbed's agent, networks, lr, horizon and update ratio (`catch()`: 40 + 40 updates per 100 env
  steps), on a harder game with a longer budget: 20k env steps are 190 epochs of ~34 s at the measured update
  costs (docs/results.md, "MinAtar"), ~1.9 h with the first epoch and compiling.
  `--game=MinAtar-Asterix|MinAtar-Freeway|MinAtar-SpaceInvaders` runs the other MinAtar games.
  """
  c = catch()
  c.preset = "minatar"
  c.ac.entropy_weight = 0.001          # DIAMOND's, constant, as in the committed runs (catch() anneals 0.01 to it)
  c.ac.entropy_decay_updates = 0
  c.schedule.wm_updates_first_epoch = 800
  c.game = "MinAtar-Breakout"
  c.env.backend = "jax"
  c.env.max_episode_steps = 10_000     # gymnax ends every MinAtar game first (1000 steps; Freeway 2500)
  c.replay.capacity = 20_200
  c.schedule.total_env_steps = 20_000
  c.schedule.initial_min_steps = 1_000
  c.schedule.initial_max_steps = 2_000
  c.run.checkpoint_every = 20
  return c


def atari_cpu() -> ml_collections.ConfigDict:
  """Atari100k games on a 2-core CPU with the agent that learns MinAtar (`minatar()`): one seed in ~1.8 h
  (the budget: 2.5 h), sized to beat the random policy (docs/results.md, "Atari on this CPU").

  The protocol is the paper's (`atari100k()`, as in `cpu()`): envpool's Atari with DIAMOND's wrappers, 64x64
  RGB, frame skip 4 with max-pool, no sticky actions, the minimal action set, a life loss ends training
  episodes only, 100 full test games (up to 30 no-ops, the 27k-step cap) at epsilon 0. The agent is
  `minatar()`'s, chosen from measurements on this CPU rather than `cpu()`'s (which never left the uniform
  policy: ~650 actor-critic updates at lr 1e-4, results/cpu):
    * a patch-4 encoder stem and narrow networks: a world-model update ~0.34 s and an actor-critic update
      ~0.44 s at batch 16 whatever the game (64x64 frames), where `cpu()`'s full-resolution encoder stages
      cost ~2.6 s per update;
    * lr 1e-3 (DIAMOND: 1e-4), horizon 10 (paper: 15), batch 16 (paper: 32);
    * 15k env steps with 40 + 40 updates per 100 (update-to-data ratio 0.4, paper: 4), after 1k-2k random
      steps and a first epoch of 2,400 + 200 updates: ~8k world-model and ~6k actor-critic updates, ~1.8 h
      per seed (first epoch ~945 s, then ~40-43 s per epoch on Breakout and UpNDown, alone on the machine;
      run nothing beside it);
    * (2026-12-04) a latent denoiser of 64 channels and depth 2 (was 32 and 1, the MinAtar agent's), an
      entropy weight annealed from 0.01 to 0.001 (catch()'s): see the comment below.
  UpNDown seeds 0, 2 and 3 beat random with it (1,407.5, 1,582.7 and 1,353.4 against 435.8 over 100 test
  games, results/atari_cpu); seed 1 learnt (1,796 at epoch 48), then collapsed below random (169.6). With the 32-channel denoiser, in every game
  tried (Boxing, Qbert, CrazyClimber, UpNDown) the latent dynamics ignored the action, and the policy stayed
  uniform or learnt only what the reward/end model ties to the action itself; with this one they follow it on
  Breakout, which still played at random's level, and still ignore it on UpNDown (docs/results.md, "Atari on
  this CPU").
  """
  c = minatar()
  c.preset = "atari_cpu"
  c.game = DEFAULT_GAME
  base = atari100k()
  c.env = base.env                     # the Atari protocol, unchanged
  # (2026-12-04) A wider, deeper latent denoiser: on Breakout the 32-channel, depth-1 one still ignored the
  # paddle's action after 2,400 world-model updates (`wm/action_error_gain` 0.0007), this one used it by then
  # (0.35 +- 0.07; results/atari_cpu/world_model_fit/Breakout_den64.jsonl). The first epoch trains the world
  # model that long before the policy learns from it, with catch()'s annealed entropy weight meanwhile.
  c.wm.latent_denoiser_channels = (64,)
  c.wm.latent_denoiser_depths = (2,)
  c.wm.latent_denoiser_cond_channels = 64
  c.schedule.wm_updates_first_epoch = 2_400
  c.ac.entropy_weight = 0.01           # linear to DIAMOND's 0.001 over the first 600 actor-critic updates
  c.ac.entropy_weight_final = 0.001
  c.ac.entropy_decay_updates = 600
  c.run.checkpoint_every = 10          # ~6 min of training between checkpoints
  # (2026-12-05) 15k env steps (was minatar()'s 20k): ~140 epochs after the first, ~1.8 h per seed (UpNDown
  # seed 0: 6,458 s), where 20k came out at the 2.5 h budget's edge (UpNDown seed 0 at epoch 140: 6,734 s,
  # results/atari_cpu/tries/UpNDown_20k_seed_0).
  c.schedule.total_env_steps = 15_000
  return c


PRESETS = {"atari100k": atari100k, "atari_cpu": atari_cpu, "catch": catch, "catch_quick": catch_quick, "cpu": cpu, "debug": debug,
           "minatar": minatar}


def get_config(preset: str = "atari100k") -> ml_collections.ConfigDict:
  """Returns a fresh config for a named preset; an unknown name is one clear error."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
  return PRESETS[preset]()


def validate(config) -> None:
  """Raises one clear ValueError for a config that cannot run (bad flag values)."""
  c = config
  checks = [
      (c.wm.kind in ("jedi", "diamond"), f"wm.kind must be 'jedi' or 'diamond', got {c.wm.kind!r}"),
      (c.env.backend in ("envpool", "ale", "jax"),
       f"env.backend must be 'envpool', 'ale' or 'jax' (pure-JAX games such as Catch), got {c.env.backend!r}"),
      (c.env.step_path in ("auto", "xla", "host"),
       f"env.step_path must be 'auto', 'xla' or 'host', got {c.env.step_path!r}"),
      (compute_dtype(c) in COMPUTE_DTYPES,
       f"run.compute_dtype must be one of {', '.join(map(repr, COMPUTE_DTYPES))}, got {compute_dtype(c)!r}"),
      (c.wm.prediction_clamp in ("clip", "tanh", "none"),
       f"wm.prediction_clamp must be 'clip', 'tanh' or 'none', got {c.wm.prediction_clamp!r}"),
      (isinstance(added_field(c, "wm", "share_encoder_pass"), bool),
       f"wm.share_encoder_pass must be true or false, got {added_field(c, 'wm', 'share_encoder_pass')!r}"),
      (isinstance(added_field(c, "wm", "rew_end_next_state"), bool),
       f"wm.rew_end_next_state must be true or false, got {added_field(c, 'wm', 'rew_end_next_state')!r}"),
      (type(added_field(c, "wm", "loss_chunks")) is int and added_field(c, "wm", "loss_chunks") >= 1,
       f"wm.loss_chunks must be an integer >= 1, got {added_field(c, 'wm', 'loss_chunks')!r}"),
      (0.0 <= added_field(c, "wm", "rewarded_fraction") <= 1.0,
       f"wm.rewarded_fraction must lie in [0, 1], got {added_field(c, 'wm', 'rewarded_fraction')!r}"),
      (not (added_field(c, "wm", "share_encoder_pass") and added_field(c, "wm", "rewarded_fraction")),
       "wm.rewarded_fraction needs the dynamics segments drawn on their own (wm.share_encoder_pass=false)"),
      (isinstance(added_field(c, "wm", "remat"), bool),
       f"wm.remat must be true or false, got {added_field(c, 'wm', 'remat')!r}"),
      (not added_field(c, "wm", "share_encoder_pass")
       or c.ac.horizon + c.wm.num_cond >= c.wm.num_cond + c.wm.num_predictions,
       f"wm.share_encoder_pass needs a reward/end segment (ac.horizon + wm.num_cond = "
       f"{c.ac.horizon + c.wm.num_cond} steps) at least as long as the dynamics one (wm.num_cond + "
       f"wm.num_predictions = {c.wm.num_cond + c.wm.num_predictions})"),
      (c.sampler.order in (1, 2), f"sampler.order must be 1 (Euler) or 2 (Heun), got {c.sampler.order}"),
      (c.sampler.num_steps >= 1, f"sampler.num_steps must be >= 1, got {c.sampler.num_steps}"),
      (c.optim.batch_size >= 1, f"optim.batch_size must be >= 1, got {c.optim.batch_size}"),
      (c.optim.lr > 0, f"optim.lr must be > 0, got {c.optim.lr}"),
      (added_field(c, "ac", "entropy_decay_updates") >= 0 and added_field(c, "ac", "entropy_weight_final") >= 0,
       "ac.entropy_decay_updates and ac.entropy_weight_final must be >= 0 (decay 0: a constant entropy weight)"),
      (added_field(c, "ac", "lr_scale") > 0, f"ac.lr_scale must be > 0, got {added_field(c, 'ac', 'lr_scale')}"),
      (c.env.num_envs >= 1, f"env.num_envs must be >= 1, got {c.env.num_envs}"),
      (c.schedule.steps_per_epoch % c.env.num_envs == 0,
       f"schedule.steps_per_epoch ({c.schedule.steps_per_epoch}) must be a multiple of env.num_envs ({c.env.num_envs})"),
      (c.schedule.initial_min_steps <= c.schedule.initial_max_steps,
       "schedule.initial_min_steps must be <= schedule.initial_max_steps"),
      (c.schedule.initial_max_steps <= c.schedule.total_env_steps,
       "schedule.initial_max_steps must be <= schedule.total_env_steps"),
      (c.replay.capacity * c.env.num_envs >= c.schedule.total_env_steps + c.schedule.steps_per_epoch,
       f"replay.capacity ({c.replay.capacity} per env) must hold the whole budget ({c.schedule.total_env_steps} steps)"),
      (len(c.replay.sample_weights) >= 1 and abs(sum(c.replay.sample_weights) - 1) < 1e-6
       and min(c.replay.sample_weights) >= 0, "replay.sample_weights must be >= 0 and sum to 1"),
      (c.schedule.epochs_per_call >= 1, "schedule.epochs_per_call must be >= 1"),
      (c.run.checkpoint_every >= 1, "run.checkpoint_every must be >= 1"),
      (c.run.get("test_every", 0) >= 0, "run.test_every must be >= 0 (0: no interim tests)"),
      (c.env.num_test_episodes >= 1 and c.env.num_test_envs >= 1, "env.num_test_episodes and env.num_test_envs must be >= 1"),
      (0.0 <= c.ac.epsilon_collect <= 1.0 and 0.0 <= c.ac.epsilon_test <= 1.0, "epsilons must lie in [0, 1]"),
      (c.ac.horizon >= 1, f"ac.horizon must be >= 1, got {c.ac.horizon}"),
      (len(c.wm.encoder_channels) == len(c.wm.encoder_depths) == len(c.wm.encoder_down),
       "wm.encoder_channels, wm.encoder_depths and wm.encoder_down must have the same length"),
      (c.wm.encoder_patch >= 1 and 64 % (c.wm.encoder_patch * 2 ** sum(c.wm.encoder_down)) == 0,
       f"wm.encoder_patch x 2^sum(wm.encoder_down) must divide 64, got patch {c.wm.encoder_patch} and "
       f"down {tuple(c.wm.encoder_down)}"),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(message)


def set_field(config, path: str, value) -> None:
  """Sets one field by its dotted path ("optim.lr") in a mutable config."""
  node = config
  *parents, leaf = path.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value


def set_fields(config, values: Mapping[str, Any]) -> None:
  """Sets fields by their dotted paths ({"optim.lr": 1e-3, ...}, e.g. a command line's --config.* overrides)."""
  for path, value in values.items():
    set_field(config, path, value)


def dotted_fields(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """The leaves of a nested dict (`to_dict` of a config) by dotted path: {"optim.lr": 1e-4, ...}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(dotted_fields(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def to_dict(config) -> dict:
  """Plain JSON-able dict of a (frozen or not) config; tuples become lists."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(config) -> str:
  """`run.compute_dtype`; "float32" for a config saved before the field existed."""
  return added_field(config, "run", "compute_dtype")


def added_field(config, section: str, field: str):
  """A field of `ADDED_FIELDS`, or its old behaviour's value in a config saved before the field existed."""
  return config[section].get(field, ADDED_FIELDS[(section, field)])


# Fields that cannot change a run's results (resume is exact at any checkpoint interval): not hashed.
UNHASHED_FIELDS = (("run", "checkpoint_every"), ("run", "checkpoints_to_keep"), ("run", "record_test_episodes"),
                   ("run", "wandb_project"), ("run", "test_every"))
# Fields that cannot change a run's results but were hashed when runs were recorded: hashed at that value
# whatever they are. The env step paths give bit-identical steps (tests/test_envs.py), and every record
# predating `env.step_path = "auto"` says "xla"; a run may so resume on another platform.
CANONICAL_FIELDS = {("env", "step_path"): "xla"}
# Fields added after runs were recorded, with the value that reproduces those runs: left out of the hash at
# that value, so that the records keep their hash and their workdirs still resume.
ADDED_FIELDS = {("run", "compute_dtype"): "float32", ("wm", "share_encoder_pass"): False, ("wm", "remat"): False, ("wm", "loss_chunks"): 1,
                ("wm", "rew_end_next_state"): True, ("ac", "lr_scale"): 1.0, ("ac", "entropy_decay_updates"): 0, ("ac", "entropy_weight_final"): 0.001,
                ("wm", "rewarded_fraction"): 0.0}


def results_fields(config) -> dict:
  """The config as a dict without `UNHASHED_FIELDS`, with `CANONICAL_FIELDS` at their canonical value and
  `ADDED_FIELDS` left out at their old behaviour's value: the settings that determine a run's results."""
  d = to_dict(config) if not isinstance(config, dict) else json.loads(json.dumps(config))
  for section, field in UNHASHED_FIELDS:
    d.get(section, {}).pop(field, None)
  for (section, field), value in CANONICAL_FIELDS.items():
    if field in d.get(section, {}):
      d[section][field] = value
  for (section, field), old in ADDED_FIELDS.items():
    if d.get(section, {}).get(field, old) == old:
      d.get(section, {}).pop(field, None)
  return d


def config_hash(config) -> str:
  """Short stable hash of the config (seed included, `UNHASHED_FIELDS` excluded): identifies the settings
  that determine a run's results."""
  blob = json.dumps(results_fields(config), sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()[:12]


def to_config_dict(config) -> ml_collections.ConfigDict:
  """A mutable copy (of a frozen or mutable config)."""
  return ml_collections.ConfigDict(to_dict(config)) if isinstance(config, ml_collections.FrozenConfigDict) \
      else ml_collections.ConfigDict(config.to_dict())


def freeze(config) -> ml_collections.FrozenConfigDict:
  """Hashable, immutable view: pass this to jit-ed library functions as a static argument."""
  return ml_collections.FrozenConfigDict(config)
