"""Shared test fixtures: the smallest configs that still exercise every code path."""

import atexit
import os
import shutil
import tempfile

# Tests run on the CPU; 4 fake devices let the data-parallel tests build a mesh (single-device code is
# unaffected: arrays live on device 0 unless sharded explicitly).
# XLA:CPU flags for tests (measured on a 2-core CPU, docs/benchmarks.md "Test suite"): LLVM optimisation
# level 0 compiles faster; without the XNNPACK/YNNPACK fusions a cached executable loads in ~7 s instead of
# ~19 s (the tiny epoch program). Runtime is irrelevant at test sizes.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_cpu_experimental_ynn_fusion_type= "
                  "--xla_cpu_experimental_xnn_fusion_type=")
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=4 {TEST_XLA_FLAGS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from jedi_jax import compilation_cache  # noqa: E402
from jedi_jax import config as config_lib  # noqa: E402

# One persistent compilation cache for the whole session, shared with the entry-point runs of test_train.py
# (`--compilation_cache=TEST_CACHE`): a program compiled once (e.g. the tiny Catch run's epoch program) is
# loaded by every later process that builds it. Fresh per session unless JEDI_JAX_TEST_CACHE names one.
TEST_CACHE = os.environ.get("JEDI_JAX_TEST_CACHE") or tempfile.mkdtemp(prefix="jedi_jax_test_xla_")
if not os.environ.get("JEDI_JAX_TEST_CACHE"):
  atexit.register(shutil.rmtree, TEST_CACHE, True)
compilation_cache.enable(TEST_CACHE)


def tiny_config(**overrides):
  """The debug preset shrunk further: a whole run (collect, 3 epochs, eval) in well under a minute."""
  c = config_lib.debug()
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


@pytest.fixture
def tiny():
  return tiny_config
