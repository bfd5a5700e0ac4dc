"""The test protocol: `evaluate_random` (the random-policy baseline) against an independent Python loop over
the same test envs, and the per-env quota."""

import jax
import numpy as np

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
