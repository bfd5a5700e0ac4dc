"""How a compiled call's metrics become a JSONL row (milliseconds; no program is compiled): update figures
are averaged over the call's epochs and over packed seeds, collection statistics summed, counts turned into
rates, and a non-finite update figure stops the run."""

import numpy as np
import pytest

from jedi_jax import loop
from jedi_jax import train


class _State:
  env_steps, wm_updates, ac_updates = 330, 20, 18


def _stats(**values):
  fields = {k: 0 for k in train.CollectStats._fields}
  fields.update(values)
  return train.CollectStats(**{k: np.asarray(v, np.float32) for k, v in fields.items()})


def test_mean_over_epochs_divides_the_learners_and_keeps_collection_summed():
  sums = train.CallMetrics(wm={"loss": np.float32(6.0)}, ac={"loss": np.float32(3.0)},
                           collect=_stats(games_finished=4, reward_sum=7))
  out = train.mean_over_epochs(sums, np.int32(3))
  assert float(out.wm["loss"]) == 2.0 and float(out.ac["loss"]) == 1.0
  assert float(out.collect.games_finished) == 4 and float(out.collect.reward_sum) == 7
  # A call of 0 epochs (nothing summed) divides by 1, not 0.
  zero = train.mean_over_epochs(train.CallMetrics({"loss": np.float32(0)}, {}, _stats()), np.int32(0))
  assert float(zero.wm["loss"]) == 0.0


def test_row_of_two_packed_seeds():
  """Seed axis [2]: learners' figures averaged over the seeds, collection summed over them."""
  metrics = train.CallMetrics(
      wm={"loss": np.asarray([1.0, 3.0]), "rew_hits_pos": np.asarray([1.0, 1.0]),
          "rew_count_pos": np.asarray([2.0, 2.0]), "rew_predicted_pos": np.asarray([0.0, 0.0])},
      ac={"loss": np.asarray([0.5, 0.5])},
      collect=_stats(games_finished=[2, 1], games_return_sum=[3.0, -6.0], games_length_sum=[20, 10],
                     reward_sum=[3.0, -6.0], life_losses=[0, 1], reward_pos=[3, 0], reward_neg=[0, 6]))
  plan = (2, 50, 4, 4)   # epochs, collect steps per epoch, wm and ac updates per epoch
  means = loop._update_means(metrics)
  assert means == {"wm/loss": 2.0, "wm/rew_hits_pos": 1.0, "wm/rew_count_pos": 2.0,
                   "wm/rew_predicted_pos": 0.0, "ac/loss": 0.5}
  row = loop._summarise(means, metrics.collect, _State, plan, dt=4.0)
  assert row["wm/rew_recall_pos"] == 0.5 and "wm/rew_precision_pos" not in row  # no prediction: no rate
  assert not any("_hits" in k or "_predicted" in k for k in row)
  assert row["collect/games_finished"] == 3 and row["collect/life_losses"] == 1
  assert row["collect/game_return"] == -1.0 and row["collect/game_length"] == 10.0
  assert row["collect/reward_per_step"] == -3.0 / 100
  assert row["collect/reward_rate_pos"] == 3 / 100 and row["collect/reward_rate_neg"] == 6 / 100
  assert row["perf/env_steps_per_s"] == 25.0 and row["perf/updates_per_s"] == 4.0
  assert row["perf/seconds_per_epoch"] == 2.0
  assert (row["env_steps"], row["wm_updates"], row["ac_updates"]) == (330, 20, 18)


def test_update_only_call_has_no_collection_keys():
  metrics = train.CallMetrics({"loss": np.float32(1)}, {"loss": np.float32(1)}, _stats())
  row = loop._summarise(loop._update_means(metrics), metrics.collect, _State, (1, 0, 4, 4), dt=1.0)
  assert not any(k.startswith("collect/") or k == "perf/env_steps_per_s" for k in row)


def test_a_non_finite_update_figure_stops_the_run():
  loop._check_finite({"wm/loss": 1.0, "ac/loss": 2.0}, "epochs 1-2")
  with pytest.raises(loop.TrainingError, match=r"non-finite ac/value_loss, wm/loss in epochs 3-4"):
    loop._check_finite({"wm/loss": float("nan"), "ac/value_loss": float("inf"), "ac/loss": 0.0}, "epochs 3-4")
