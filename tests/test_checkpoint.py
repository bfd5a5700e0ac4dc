"""The checkpointer on small states (milliseconds): replicated arrays of a data-parallel run, the fall-back
past a damaged checkpoint, and a read-only reader that leaves the workdir as it found it."""

import os
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax import checkpoint as ckpt_lib
from jedi_jax import parallel


class _State(flax.struct.PyTreeNode):
  params: dict
  env_state: jax.Array  # never saved


def _state(i):
  return _State(params={"w": jnp.full((3, 4), float(i)), "n": jnp.arange(5) + i}, env_state=jnp.zeros(2))


def _damage(checkpoint_dir: Path) -> None:
  for path in checkpoint_dir.rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"\x00garbage" * 8)


def _listing(path):
  return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*"))


def test_a_replicated_state_is_saved_as_one_copy_and_restores_equal(tmp_path):
  mesh = parallel.make_mesh(4)
  state = parallel.replicate(_state(3), mesh)
  assert len(state.params["w"].sharding.device_set) == 4
  saved = ckpt_lib.saveable(state)
  assert "env_state" not in saved
  assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(saved))
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), log=lambda *_: None)
  checkpointer.save(1, state)
  epoch, restored, _ = checkpointer.restore_latest(_state(0))
  assert epoch == 1
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(_state(3).params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_damaged_newest_checkpoint_falls_back_and_only_a_writer_sets_it_aside(tmp_path):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), log=lambda *_: None)
  for epoch in (1, 2):
    checkpointer.save(epoch, _state(epoch))
  _damage(Path(checkpointer.directory) / "2")
  before = _listing(tmp_path)

  lines = []
  reader = ckpt_lib.Checkpointer(str(tmp_path), read_only=True, log=lines.append)
  epoch, restored, _ = reader.restore_latest(_state(0))
  assert epoch == 1 and float(restored.params["w"][0, 0]) == 1.0
  assert any("epoch 2 is unreadable" in line for line in lines)
  assert _listing(tmp_path) == before  # the reader moved nothing

  writer = ckpt_lib.Checkpointer(str(tmp_path), log=lambda *_: None)
  assert writer.restore_latest(_state(0))[0] == 1
  assert os.listdir(tmp_path / "corrupt_checkpoints") and writer.epochs() == [1]


def test_extra_pytrees_are_saved_optional_keys_may_be_missing_and_unwanted_keys_are_dropped(tmp_path):
  """A pytree in `extra` (a pure-JAX env state) round-trips; a checkpoint without an optional key restores
  without it (written before env states were saved); a reader that does not ask for a saved key gets the
  rest."""
  env_state = {"obs": jnp.arange(6, dtype=jnp.uint8).reshape(2, 3), "keys": (jnp.ones((2, 2), jnp.uint32),)}
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path), log=lambda *_: None)
  checkpointer.save(1, _state(1), {"n": np.int64(4)})
  checkpointer.save(2, _state(2), {"n": np.int64(5), "env_state": env_state})
  template = {"n": np.int64(-1), "env_state": jax.tree.map(jnp.zeros_like, env_state)}
  epoch, _, extra = checkpointer.restore_latest(_state(0), template, optional=("env_state",))
  assert epoch == 2 and int(extra["n"]) == 5
  for a, b in zip(jax.tree.leaves(extra["env_state"]), jax.tree.leaves(env_state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, _, extra = checkpointer.restore_latest(_state(0), {"n": np.int64(-1)})
  assert list(extra) == ["n"]
  _damage(Path(checkpointer.directory) / "2")
  epoch, _, extra = checkpointer.restore_latest(_state(0), template, optional=("env_state",))
  assert epoch == 1 and list(extra) == ["n"] and int(extra["n"]) == 4
