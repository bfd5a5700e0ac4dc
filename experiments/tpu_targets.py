"""TPU chips to compile for on a CPU host, deviceless (experiments/aot_check.py, experiments/benchmark_world_model.py).

With `jax[tpu]` (libtpu) installed, `jax.experimental.topologies` describes a TPU slice whose devices programs
can be lowered and compiled for without a TPU (the route of MaxText's `train_compile.py` and axlearn's
`run_aot_compilation.py`).
"""

from __future__ import annotations

import dataclasses
import os

# Before libtpu loads: the host is a CPU (JAX_PLATFORMS=cpu), libtpu must not look for a TPU VM's metadata server,
# and another process of the venv may hold libtpu's lock file (libtpu then refuses to load).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


@dataclasses.dataclass(frozen=True)
class Target:
  """A TPU chip: how to describe a 4-chip slice of it, and its published figures (cloud.google.com/tpu/docs/
  v4, v5e, v5p, v6e: peak bf16 FLOP/s, HBM per chip, HBM bandwidth)."""
  topology: str
  chip_config: str
  peak_flops: float
  hbm_bytes: float
  hbm_bytes_per_s: float


TARGETS = {
    "tpu-v4": Target("v4:2x2x1", "megacore", 275e12, 32 * 2**30, 1200e9),
    "tpu-v5e": Target("v5e:2x2", "default", 197e12, 16 * 2**30, 819e9),
    "tpu-v5p": Target("v5p:2x2x1", "megacore", 459e12, 95 * 2**30, 2765e9),
    "tpu-v6e": Target("v6e:2x2", "default", 918e12, 32 * 2**30, 1638e9),
}


def tpu_devices(target: Target) -> list:
  """The devices of a 4-chip slice of `target`, to compile for (none needs to exist)."""
  from jax.experimental import topologies
  return topologies.get_topology_desc(
      platform="tpu", topology_name=target.topology, chip_config_name=target.chip_config,
      chips_per_host_bounds=(2, 2, 1), num_slices=1).devices
