"""Shared test fixtures: the smallest configs that still exercise every code path."""

import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests run on the CPU; 4 fake devices let the data-parallel tests build a mesh (single-device code is
# unaffected: arrays live on device 0 unless sharded explicitly).
# XLA:CPU flags for tests (measured on a 2-core CPU, docs/benchmarks.md "Test suite"): LLVM optimisation
# level 0 compiles faster; without the XNNPACK/YNNPACK fusions a cached executable loads in ~7 s instead of
# ~19 s (the tiny epoch program). Runtime is irrelevant at test sizes.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_cpu_experimental_ynn_fusion_type= "
                  "--xla_cpu_experimental_xnn_fusion_type=")
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=4 {TEST_XLA_FLAGS}")
if not os.environ.get("JAX_PLATFORMS"):   # unset or empty (jax's "any platform"): a TPU plugin, where installed,
  os.environ["JAX_PLATFORMS"] = "cpu"     # would probe for a TPU and print warnings into the one-line errors

from jedi_jax import compilation_cache  # noqa: E402
from jedi_jax import config as config_lib  # noqa: E402

# One persistent compilation cache for the whole session, shared with the entry-point runs of test_train.py
# (`--compilation_cache=TEST_CACHE`) and with the other pytest-xdist worker (the controller creates it and
# its environment variable before the workers start; they inherit it): a program compiled once (e.g. the
# tiny Catch run's epoch program) is loaded by every later process that builds it. Fresh per session unless
# JEDI_JAX_TEST_CACHE names one.
if not os.environ.get("JEDI_JAX_TEST_CACHE"):
  os.environ["JEDI_JAX_TEST_CACHE"] = tempfile.mkdtemp(prefix="jedi_jax_test_xla_")
  atexit.register(shutil.rmtree, os.environ["JEDI_JAX_TEST_CACHE"], True)
TEST_CACHE = os.environ["JEDI_JAX_TEST_CACHE"]
compilation_cache.enable(TEST_CACHE)


# The `catch` preset's encoder stem (4x4 patches, two stages): a much smaller program than the paper's stem
# of four 3x3 stages (its shapes and gradients have their own tests in test_nets.py and test_conv.py).
PATCH_ENCODER = {"wm.encoder_patch": 4, "wm.encoder_channels": (8, 8), "wm.encoder_depths": (1, 1),
                 "wm.encoder_down": (1, 0)}


# One stage per network on top of that (patch-4 encoder stem in one stage, one reward/end level, one actor
# stage): tests of the execution layer (whole runs, data parallelism), whose programs then compile ~20% faster.
SMALLEST_NETS = {"wm.encoder_channels": (16,), "wm.encoder_depths": (1,), "wm.encoder_down": (1,),
                 "wm.rew_end_channels": (8,), "wm.rew_end_depths": (1,), "ac.latent_channels": (8,),
                 "ac.latent_down": (1,)}


# And the fewest unrolled steps: one world-model prediction per segment, a one-step sampler, a 2-step
# imagination horizon. The epoch program of the end-to-end runs then compiles in ~45 s instead of ~65 s.
FEWEST_STEPS = {"wm.num_predictions": 1, "sampler.num_steps": 1, "ac.horizon": 2}


# The still narrower world model of the world-model tests (test_world_model.py and the tests that use its
# helpers), on top of the patch-4 stem.
NARROW_WM = {"wm.encoder_channels": (4, 8), "wm.latent_denoiser_channels": (16,), "wm.latent_denoiser_depths": (1,),
             "wm.latent_denoiser_cond_channels": 16, "wm.pixel_denoiser_channels": (4, 4), "wm.pixel_denoiser_depths": (1, 1),
             "wm.pixel_denoiser_cond_channels": 16, "wm.rew_end_channels": (4, 4), "wm.rew_end_depths": (1, 1),
             "wm.rew_end_cond_channels": 8, "wm.rew_end_lstm_dim": 8}


def tiny_config(**overrides):
  """The debug preset shrunk further, with the patch encoder stem: a whole run (collect, 3 epochs, eval) in
  well under a minute."""
  c = config_lib.debug()
  for path, value in PATCH_ENCODER.items():
    config_lib.set_field(c, path, value)
  c.env.max_episode_steps = 200
  c.env.num_test_envs = 2
  c.env.num_test_episodes = 2
  c.ac.horizon = 3
  c.optim.batch_size = 2
  c.replay.capacity = 600
  c.schedule.steps_per_epoch = 50
  c.schedule.total_env_steps = 300
  c.schedule.initial_min_steps = 150
  c.schedule.initial_max_steps = 200
  c.schedule.initial_reward_threshold = 0
  c.schedule.wm_updates_per_epoch = 2
  c.schedule.ac_updates_per_epoch = 2
  c.schedule.wm_updates_first_epoch = 3
  c.schedule.ac_updates_first_epoch = 3
  c.schedule.num_final_epochs = 1
  c.schedule.epochs_per_call = 2
  c.run.checkpoint_every = 2
  for path, value in overrides.items():
    config_lib.set_field(c, path, value)
  config_lib.validate(c)
  return c


def frozen_tiny_config(**overrides):
  """`tiny_config(**overrides)` frozen: hashable, for jit's static arguments and lru_cache keys."""
  return config_lib.freeze(tiny_config(**overrides))


# The suite runs on 2 pytest-xdist workers (pyproject's addopts), fed one test at a time. The longest tests
# go first, so that neither worker is left with a long test at the end (the others take seconds). The learning
# run (~4 min) takes one worker; the other builds the Catch reference run of test_train.py (`shared_once`)
# for the rest of test_train.py.
LONG_FIRST = (
    "test_learning.py::test_a_short_catch_run_clearly_beats_the_random_policy",
    "test_train.py::test_results_do_not_depend_on_the_checkpoint_interval_or_a_kill",
    "test_benchmark.py::test_json_schema_and_printed_ratios",
    "test_train.py::test_packed_seeds_resume_exactly_and_match_single_runs",
    "test_world_model.py::test_pixel_denoiser_overfits_fixed_batch",
    "test_parallel.py::test_sharded_actor_critic_step_equals_single_device_reference",
    "test_train.py::test_data_parallel_on_4_fake_devices_and_its_resume",
    "test_decoder.py::test_decoder_gradient_never_reaches_the_world_model_and_it_learns",
    "test_world_model.py::test_jedi_loss_metrics_and_encoder_gradients",
    "test_world_model.py::test_latent_denoiser_overfits_fixed_batch",
)


# Long tests marked `after_suite` are skipped by the suite (at most 10 minutes on 2 cores) and run by CI right
# after it: `JEDI_JAX_SLOW_TESTS=1 python -m pytest -q -m after_suite` (.ci/run).
RUN_AFTER_SUITE = bool(os.environ.get("JEDI_JAX_SLOW_TESTS"))


def pytest_collection_modifyitems(items):
  if not RUN_AFTER_SUITE:
    skip = pytest.mark.skip(reason="a long test run by CI after the suite (JEDI_JAX_SLOW_TESTS=1 -m after_suite)")
    for item in items:
      if "after_suite" in item.keywords:
        item.add_marker(skip)

  def rank(item):
    where = item.nodeid.split("/")[-1]
    return next((i for i, name in enumerate(LONG_FIRST) if where.startswith(name)), len(LONG_FIRST))
  items.sort(key=rank)  # stable: the rest keep pytest's order


def _shared_root(tmp_path_factory) -> Path:
  """A directory every worker of this session sees (the parent of the workers' own temp dirs)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def shared_once(tmp_path_factory, name: str):
  """Yields `(directory, done)` for an artefact built once per session across workers: under an exclusive
  lock, `done` says whether an earlier holder finished building it (the builder calls `directory.joinpath(
  "DONE").touch()` when it has)."""
  root = _shared_root(tmp_path_factory)
  directory = root / name
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      directory.mkdir(exist_ok=True)
      yield directory, (directory / "DONE").exists()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
