"""Orbax save/restore of the whole training state, and the workdir's config guard.

What is saved: every leaf of `TrainState` except the env state (params, optimiser states, replay, policy
LSTM state, RNG key, counters), and a small dict of `extra` host data. The env state goes into `extra` when
it is a plain pytree of arrays, as on the pure-JAX backend (`env.backend = "jax"`): a resumed run then
starts from it with nothing to re-step. envpool cannot snapshot its emulators: a resumed Atari run
re-creates the train envs and re-steps them with the replay's actions up to the checkpoint
(`jedi_jax.resume`), which makes it bit-identical to a straight one; saving never touches the envs.

Bad input is refused before anything is written: a workdir whose saved config differs from the requested
one, and a checkpoint that cannot be restored (the previous one is tried first).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from jedi_jax import config as config_lib

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class WorkdirError(RuntimeError):
  """A workdir that cannot be used as asked (config mismatch, unreadable checkpoints)."""


def check_or_write_config(workdir: str, config) -> bool:
  """Saves the resolved config in a new workdir, or checks it equals the saved one.

  Returns True when the workdir already held a run with this config (resume). Fields that cannot change
  the results (`config.UNHASHED_FIELDS`: the checkpoint interval, how many to keep) may differ; the saved
  file keeps the first run's values. Raises `WorkdirError` naming the differing fields otherwise, without
  touching the workdir.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  wanted = config_lib.to_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    saved, compared = config_lib.results_fields(saved), config_lib.results_fields(wanted)
    if saved != compared:
      a, b = config_lib.dotted_fields(saved), config_lib.dotted_fields(compared)
      diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
      shown = ", ".join(f"{k}: saved {a.get(k)!r} != requested {b.get(k)!r}" for k in diff[:4])
      more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
      raise WorkdirError(
          f"workdir {workdir} holds a run with a different config ({shown}{more}); "
          "use a new --workdir or the same flags")
    return True
  os.makedirs(workdir, exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"  # processes of a multi-host run write the same file
  with open(tmp, "w") as f:
    json.dump(wanted, f, indent=1, sort_keys=True)
  os.replace(tmp, path)
  return False


def saveable(state) -> dict:
  """The checkpointed part of a TrainState: everything but the env state, with each array replicated over a
  one-process mesh (data parallel) as its first device's copy."""
  return {k: jax.tree.map(_one_replica, getattr(state, k)) for k in state.__dataclass_fields__
          if k != "env_state"}


def _one_replica(x):
  """A fully replicated array of a one-process mesh as its device-0 copy (no copy is made). orbax saves a
  multi-device array by slicing out each replica with an eager op, one small compile per leaf shape: the
  first checkpoint of the tiny data-parallel test run took 15 s instead of 1 s. Restoring needs no
  sharding: the loop puts restored states where its programs want them."""
  if (isinstance(x, jax.Array) and jax.process_count() == 1 and len(x.sharding.device_set) > 1
      and x.sharding.is_fully_replicated):
    return x.addressable_data(0)
  return x


class Checkpointer:
  """Thin wrapper of `ocp.CheckpointManager` keyed by epoch; reports through `log` (one line per call)."""

  def __init__(self, workdir: str, max_to_keep: int = 3, *, read_only: bool = False,
               log: Callable[[str], Any] = print):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.log = log
    self.read_only = read_only
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=False),
        item_handlers=ocp.StandardCheckpointHandler())  # known before the first restore: `item_metadata`

  def epochs(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, epoch: int, state, extra: dict[str, Any] | None = None) -> None:
    """Saves `state` (minus its env state) plus `extra`: a dict of host scalars or pytrees of arrays (e.g. a
    pure-JAX env state)."""
    item = {"state": saveable(state), "extra": jax.tree.map(_array, extra or {})}
    self._manager.save(epoch, args=ocp.args.StandardSave(item), force=True)
    self._manager.wait_until_finished()

  def restore_latest(self, template_state, template_extra: dict[str, Any] | None = None,
                     optional: tuple[str, ...] = ()):
    """Restores the newest readable checkpoint into `template_state`'s and `template_extra`'s structures.

    The `optional` keys of `template_extra` are restored where the checkpoint has them and left out of the
    returned `extra` where it does not (checkpoints written before they were saved); saved keys that the
    template does not ask for (e.g. the env state, for a reader) are not returned. Falls back to older
    checkpoints when the newest cannot be read (logging one line per skipped one); raises `WorkdirError`
    when none can. Returns (epoch, state, extra) or None when there is none.
    """
    epochs = self.epochs()
    if not epochs:
      return None
    state_target = jax.tree.map(_abstract, saveable(template_state))
    errors = []
    for epoch in reversed(epochs):
      try:
        saved_extra = self._manager.item_metadata(epoch)["extra"]
        wanted = {k: v for k, v in (template_extra or {}).items() if k not in optional or k in saved_extra}
        # orbax restores the whole saved tree: keys not wanted are read as saved, then dropped.
        extra_target = {k: jax.tree.map(_abstract, wanted[k] if k in wanted else saved_extra[k])
                        for k in {*saved_extra, *wanted}}
        target = {"state": state_target, "extra": extra_target}
        item = self._manager.restore(epoch, args=ocp.args.StandardRestore(target))
        _check_shapes_and_dtypes_match(item, target)
        item["extra"] = {k: item["extra"][k] for k in wanted}
      except Exception as e:  # orbax/tensorstore raise many types for a damaged checkpoint
        errors.append(f"epoch {epoch}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        self.log(f"checkpoint at epoch {epoch} is unreadable ({errors[-1]}); trying an older one")
        continue
      state = template_state.replace(**item["state"])
      if not self.read_only:  # a reader (load_run) leaves the workdir as it found it
        self._set_aside(e for e in epochs if e > epoch)
      return epoch, state, item["extra"]
    raise WorkdirError(f"no readable checkpoint in {self.directory}: " + "; ".join(errors))


  def _set_aside(self, epochs) -> None:
    """Moves unreadable newer checkpoints to `workdir/corrupt_checkpoints/` (kept for inspection), so that
    the resumed run can save those epochs again."""
    aside = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
    for epoch in epochs:
      os.makedirs(aside, exist_ok=True)
      os.replace(os.path.join(self.directory, str(epoch)), os.path.join(aside, f"{epoch}_{time.time():.0f}"))
    self._manager.reload()


def _array(x):
  return x if isinstance(x, jax.Array) else np.asarray(x)


def _abstract(x):
  """Shape and dtype of an array, a host scalar, or a saved array's metadata."""
  x = x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _check_shapes_and_dtypes_match(restored, target) -> None:
  """Every restored leaf must have its template leaf's shape and dtype (a checkpoint from another config fails
  here)."""
  for r, t in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
    if r.shape != t.shape or r.dtype != t.dtype:
      raise ValueError(f"leaf {r.shape} {r.dtype} does not match expected {t.shape} {t.dtype}")
