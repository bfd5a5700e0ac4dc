"""Names every part of the package shares: the pytree alias and the shape of one observation."""

from __future__ import annotations

from typing import Any

PyTree = Any  # a nested structure (dicts, tuples, records) of arrays, as `jax.tree` walks it

FRAME_SHAPE = (64, 64, 3)  # one observation: an RGB frame, NHWC uint8 (DIAMOND's 64x64 RGB observations)
