"""DIAMOND's training schedule as host-side arithmetic (`src/trainer.py`): when the initial collection
stops, what each compiled call runs, where checkpoints fall, and the time left.

  1. initial collection with the untrained policy, in chunks of `steps_per_epoch`, until DIAMOND's rule;
  2. epoch 1 with the long first-epoch update counts;
  3. regular epochs, up to `epochs_per_call` per compiled call, until `total_env_steps` are collected;
  4. `num_final_epochs` update-only epochs.

Pure functions of integers and the config: no JAX here.
"""

from __future__ import annotations

import math

import numpy as np


def initial_collection_done(env_steps: int, minority, schedule) -> bool:
  """DIAMOND's stopping rule, checked after each chunk: at least `initial_min_steps`, and either enough
  transitions of the non-majority reward classes or `initial_max_steps`. `minority` is one count, or one
  per packed seed (they share the env pool, so every seed must meet the rule)."""
  s = schedule
  if env_steps < s.initial_min_steps:
    return False
  return bool(np.all(np.asarray(minority) >= s.initial_reward_threshold)) or env_steps >= s.initial_max_steps


def num_collect_epochs(initial_steps: int, schedule) -> int:
  """Epochs that collect, after an initial collection of `initial_steps`: enough to reach the budget."""
  return max(0, math.ceil((schedule.total_env_steps - initial_steps) / schedule.steps_per_epoch))


def total_epochs(num_epochs_collect: int, schedule) -> int:
  return num_epochs_collect + schedule.num_final_epochs


def epoch_plan(epoch: int, num_epochs_collect: int, total: int, cfg) -> tuple[int, int, int, int]:
  """(epochs, env steps per epoch, wm updates, ac updates) of the next call, starting after `epoch`.

  Epoch 1 is DIAMOND's long first epoch; a call never crosses a checkpoint, an interim test
  (`run.test_every`) or the end of collection.
  """
  s = cfg.schedule
  if epoch == 0:
    return (1, s.steps_per_epoch, s.wm_updates_first_epoch, s.ac_updates_first_epoch)
  collecting = epoch < num_epochs_collect
  boundary = num_epochs_collect if collecting else total
  every = cfg.run.checkpoint_every
  next_ckpt = (epoch // every + 1) * every
  n = min(s.epochs_per_call, boundary - epoch, next_ckpt - epoch)
  test_every = cfg.run.get("test_every", 0)
  if test_every:
    n = min(n, (epoch // test_every + 1) * test_every - epoch)
  return (n, s.steps_per_epoch if collecting else 0, s.wm_updates_per_epoch, s.ac_updates_per_epoch)


def update_counts(cfg, initial_steps: int | None = None) -> tuple[int, int]:
  """(world-model updates, actor-critic updates) of a whole run of `cfg` whose initial collection takes
  `initial_steps` env steps (default `schedule.initial_min_steps`): the calls of `epoch_plan` summed."""
  s = cfg.schedule
  collect = num_collect_epochs(s.initial_min_steps if initial_steps is None else initial_steps, s)
  total = total_epochs(collect, s)
  wm = ac = epoch = 0
  while epoch < total:
    n, _, w, a = epoch_plan(epoch, collect, total, cfg)
    wm, ac, epoch = wm + n * w, ac + n * a, epoch + n
  return wm, ac


def is_interim_test(epoch: int, total: int, test_every: int) -> bool:
  """An interim test follows every `test_every`-th epoch (0: none) but the last, which the final test
  follows."""
  return bool(test_every) and epoch % test_every == 0 and epoch < total


def is_checkpoint(epoch: int, total: int, checkpoint_every: int) -> bool:
  """A checkpoint is written after every `checkpoint_every`-th epoch and after the last one."""
  return epoch % checkpoint_every == 0 or epoch == total


def eta_seconds(row: dict, epoch: int, total: int, updates_per_epoch: int, seconds_per_epoch: float) -> float:
  """Time left: the remaining epochs' updates at this call's update rate. Updates dominate an epoch's time,
  and the first epoch (thousands of updates) would otherwise be extrapolated to every remaining epoch; a
  schedule without updates falls back to this call's seconds per epoch."""
  rate = row.get("perf/updates_per_s", 0.0)
  if updates_per_epoch > 0 and rate > 0:
    return (total - epoch) * updates_per_epoch / rate
  return (total - epoch) * seconds_per_epoch


def fmt_time(s: float) -> str:
  s = int(max(s, 0))
  return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s"
