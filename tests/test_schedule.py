"""The training schedule as host arithmetic (`jedi_jax.schedule`): milliseconds, no JAX."""

import itertools

import pytest

from jedi_jax import config as config_lib
from jedi_jax import schedule


def _cfg(checkpoint_every=50, epochs_per_call=10):
  c = config_lib.atari100k()
  c.run.checkpoint_every = checkpoint_every
  c.schedule.epochs_per_call = epochs_per_call
  return config_lib.freeze(c)


def _walk(cfg, num_collect):
  """Every call of a whole run: [(first epoch, plan)]."""
  total = schedule.total_epochs(num_collect, cfg.schedule)
  epoch, calls = 0, []
  while epoch < total:
    plan = schedule.epoch_plan(epoch, num_collect, total, cfg)
    calls.append((epoch, plan))
    epoch += plan[0]
  return calls


def test_initial_collection_stopping_rule():
  s = _cfg().schedule  # min 5000, max 10000, threshold 10
  assert not schedule.initial_collection_done(4900, 500, s)           # below the minimum
  assert schedule.initial_collection_done(5000, 10, s)                # enough minority rewards
  assert not schedule.initial_collection_done(5000, 9, s)
  assert not schedule.initial_collection_done(9900, 0, s)
  assert schedule.initial_collection_done(10_000, 0, s)               # the maximum
  assert not schedule.initial_collection_done(6000, [12, 3], s)       # packed: every seed must meet it
  assert schedule.initial_collection_done(6000, [12, 10], s)


def test_collect_epochs_reach_the_budget():
  s = _cfg().schedule
  assert schedule.num_collect_epochs(5000, s) == 950
  assert schedule.num_collect_epochs(5050, s) == 950  # 949.5 rounded up: the budget is always reached
  assert schedule.num_collect_epochs(100_000, s) == 0
  assert schedule.total_epochs(950, s) == 1000


def test_first_epoch_is_long_and_alone():
  cfg = _cfg()
  s = cfg.schedule
  assert schedule.epoch_plan(0, 950, 1000, cfg) == (1, 100, s.wm_updates_first_epoch, s.ac_updates_first_epoch)
  assert schedule.epoch_plan(1, 950, 1000, cfg) == (10, 100, 400, 400)
  assert schedule.epoch_plan(41, 950, 1000, cfg) == (9, 100, 400, 400)  # stops at the checkpoint at 50


def test_calls_stop_at_checkpoints_and_at_the_end_of_collection():
  cfg = _cfg(checkpoint_every=7, epochs_per_call=5)
  assert schedule.epoch_plan(5, 12, 15, cfg) == (2, 100, 400, 400)   # checkpoint at 7
  assert schedule.epoch_plan(7, 12, 15, cfg) == (5, 100, 400, 400)
  assert schedule.epoch_plan(10, 12, 15, cfg) == (2, 100, 400, 400)  # collection ends at 12
  assert schedule.epoch_plan(12, 12, 15, cfg) == (2, 0, 400, 400)    # final epochs, checkpoint at 14
  assert schedule.epoch_plan(14, 12, 15, cfg) == (1, 0, 400, 400)    # the last one
  assert [schedule.is_checkpoint(e, 15, 7) for e in (6, 7, 14, 15)] == [False, True, True, True]


@pytest.mark.parametrize("num_collect", [0, 1, 13, 950])
def test_every_checkpoint_interval_runs_the_same_epochs(num_collect):
  """Whatever `checkpoint_every` and `epochs_per_call`, the run is the same sequence of epochs (what each
  collects and updates); calls only group them differently, never across a checkpoint or the end of
  collection. With exact resume this makes results independent of the checkpoint interval."""
  reference = None
  for every, per_call in itertools.product([1, 2, 7, 50, 10_000], [1, 3, 10]):
    cfg = _cfg(every, per_call)
    total = schedule.total_epochs(num_collect, cfg.schedule)
    epochs = []
    for first, (n, steps, wm, ac) in _walk(cfg, num_collect):
      assert 1 <= n <= per_call
      last = first + n
      assert all(not schedule.is_checkpoint(e, total, every) for e in range(first + 1, last))
      assert first >= num_collect or last <= num_collect  # collecting and final epochs never share a call
      epochs += [(steps, wm, ac)] * n
    assert len(epochs) == total
    assert sum(steps for steps, _, _ in epochs[1:]) == 100 * max(num_collect - 1, 0)
    reference = reference or epochs
    assert epochs == reference


def test_eta_uses_the_update_rate_not_the_long_first_epoch():
  """After the first epoch (thousands of updates) the ETA is the remaining regular epochs' updates at the
  measured rate, whatever that first epoch's length; without updates it falls back to seconds per epoch."""
  first = {"perf/updates_per_s": 0.9}           # e.g. 450 updates in 500 s
  regular = {"perf/updates_per_s": 0.9}         # 20 updates in 22 s
  eta_first = schedule.eta_seconds(first, 1, 55, 20, seconds_per_epoch=500.0)
  eta_regular = schedule.eta_seconds(regular, 1, 55, 20, seconds_per_epoch=22.2)
  assert eta_first == eta_regular == pytest.approx(54 * 20 / 0.9)
  assert schedule.eta_seconds({}, 3, 5, 0, seconds_per_epoch=7.0) == 14.0
  assert schedule.eta_seconds(first, 55, 55, 20, seconds_per_epoch=500.0) == 0.0
  assert schedule.fmt_time(3725) == "1h02m05s"


@pytest.mark.parametrize("checkpoint_every,epochs_per_call", [(50, 10), (7, 3), (1000, 1000)])
def test_update_counts_of_a_whole_run(checkpoint_every, epochs_per_call):
  """The long first epoch, then the regular epochs (collecting and final alike), whatever the calls' grouping:
  the paper preset's 1,000 epochs after a 5,000-step initial collection."""
  cfg = _cfg(checkpoint_every, epochs_per_call)
  s = cfg.schedule
  assert schedule.update_counts(cfg) == (s.wm_updates_first_epoch + 999 * 400, s.ac_updates_first_epoch + 999 * 400)
  assert schedule.update_counts(cfg, 10_000) == (s.wm_updates_first_epoch + 949 * 400,
                                                  s.ac_updates_first_epoch + 949 * 400)


def test_calls_stop_at_interim_tests_which_skip_the_last_epoch():
  c = config_lib.atari100k()
  c.run.test_every = 25
  cfg = config_lib.freeze(c)
  calls = _walk(cfg, 950)
  ends = {first + plan[0] for first, plan in calls}
  assert set(range(25, 1001, 25)) <= ends  # a call ends at every test epoch
  assert [e for e in range(1, 1001) if schedule.is_interim_test(e, 1000, 25)] == list(range(25, 1000, 25))
  assert not any(schedule.is_interim_test(e, 1000, 0) for e in range(1, 1001))
  assert schedule.update_counts(cfg) == schedule.update_counts(_cfg())  # the same epochs, grouped otherwise
