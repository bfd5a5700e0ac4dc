"""JAX's persistent compilation cache, for the programs that can use it.

A compiled program is stored on disk under a hash of its HLO, the compile options and the jax/jaxlib versions,
and a later process that builds the same program loads it instead of compiling again (minutes on a CPU for the
epoch program). What can be cached:
  * pure-JAX programs: every program of a run on the pure-JAX env backend (`env.backend = "jax"`, Catch), the
    world-model and actor-critic programs of the benchmarks and tests;
  * not programs with host callbacks (`env.step_path = "host"`): JAX never writes those;
  * not envpool's XLA step: its custom call carries a per-process pointer, so the program's hash differs in
    every process and an entry would never be read again (checked on this stack). Runs on envpool therefore
    leave the cache off rather than fill the disk with entries nobody reads.
"""

from __future__ import annotations

import os

import jax

from jedi_jax import envs

def enable(directory: str) -> str:
  """Turns the cache on in `directory` (created if missing; `~` expanded) for the rest of the process.

  Every program that takes at least a second to compile is stored. Returns the absolute directory.
  """
  directory = os.path.abspath(os.path.expanduser(directory))
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


def cacheable(config) -> bool:
  """Whether a run's programs can be read back from the cache (see the module docstring)."""
  return envs.is_pure(config.env.backend, config.env.step_path)
