"""The test protocol: `evaluate_random` (the random-policy baseline) against an independent Python loop over
the same test envs, and the per-env quota."""

import jax
import numpy as np
import pytest

from jedi_jax import envs
from jedi_jax import evaluate

from conftest import frozen_tiny_config


def test_random_policy_evaluation_matches_a_python_loop():
  cfg = frozen_tiny_config(**{"env.max_episode_steps": 40, "env.num_test_envs": 2,
                                         "env.num_test_episodes": 3})
  got = evaluate.evaluate_random(cfg, num_episodes=3, chunk=16)

  # Independent: Python env.step on the test envs with the same action stream; env e plays quota[e] games.
  env = envs.make_env(cfg.game, 2, evaluate.test_env_seed(cfg.seed, 2), train=False,
                      max_episode_steps=cfg.env.max_episode_steps, noop_max=cfg.env.noop_max)
  env.reset()
  quota = [2, 1]
  want = [[], []]
  key = jax.random.PRNGKey(cfg.seed)
  while any(len(w) < q for w, q in zip(want, quota)):
    key, k_act = jax.random.split(key)
    actions = np.asarray(jax.random.randint(k_act, (2,), 0, env.num_actions))
    _, _, _, truncated, info = env.step(actions)
    for e in range(2):
      if (info["game_over"][e] or truncated[e]) and not info["is_reset"][e] and len(want[e]) < quota[e]:
        want[e].append(float(info["episode_return"][e]))
  env.close()
  assert got == want[0] + want[1]


def test_an_action_list_outside_the_game_is_one_error():
  cfg = frozen_tiny_config()
  num_actions = envs.num_actions(cfg.game, cfg.env.backend)
  for bad in ([], [0, num_actions]):
    with pytest.raises(ValueError, match="non-empty list of .* actions 0..") as e:
      evaluate.evaluate_random(cfg, num_episodes=1, actions=bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("action_list", [None, [3, 1, 1]])
def test_recorded_episodes_are_the_first_test_games_frame_for_frame(action_list):
  """`play_test_episodes(..., num_recorded=2)` (the loop behind `record_test_episodes`) returns the first two
  games of the test's env-major list: env 0's two games (quota [2, 1]), frame for frame as a Python loop over
  the same envs and action stream sees them (the loop `evaluate_random` is checked against above). The policy
  is `random_policy`: uniform over all actions, or over `action_list` (action 1 twice as often as 3)."""
  cfg = frozen_tiny_config(**{"env.max_episode_steps": 40, "env.num_test_envs": 2, "env.num_test_episodes": 3})
  num_actions = envs.num_actions(cfg.game, cfg.env.backend)
  act = evaluate.random_policy(cfg.game, cfg.env.backend, action_list)
  key = jax.random.PRNGKey(cfg.seed)
  got = evaluate.play_test_episodes(act, (), (), cfg, 3, key, chunk=16, num_recorded=2)
  assert [(e["index"], e["env"]) for e in got] == [(0, 0), (1, 0)]

  env = envs.make_env(cfg.game, 2, evaluate.test_env_seed(cfg.seed, 2), train=False,
                      max_episode_steps=cfg.env.max_episode_steps, noop_max=cfg.env.noop_max)
  obs, _ = env.reset()
  games, frames, actions, rewards = [], [obs[0]], [], []
  while len(games) < 2:
    key, k_act = jax.random.split(key)
    if action_list is None:
      a = np.asarray(jax.random.randint(k_act, (2,), 0, num_actions))
    else:
      a = np.asarray(action_list)[np.asarray(jax.random.randint(k_act, (2,), 0, len(action_list)))]
    obs, reward, _, truncated, info = env.step(a)
    if info["is_reset"][0]:
      frames, actions, rewards = [obs[0]], [], []
      continue
    frames.append(obs[0])
    actions.append(a[0])
    rewards.append(reward[0])
    if info["game_over"][0] or truncated[0]:
      games.append((np.stack(frames), actions, rewards, float(info["episode_return"][0])))
  env.close()
  for episode, (frames, actions, rewards, ret) in zip(got, games):
    assert episode["frames"].dtype == np.uint8 and episode["frames"].shape == frames.shape
    np.testing.assert_array_equal(episode["frames"], frames)
    np.testing.assert_array_equal(episode["actions"], actions)
    np.testing.assert_array_equal(episode["rewards"], rewards)
    assert episode["return"] == ret == float(np.sum(rewards))
