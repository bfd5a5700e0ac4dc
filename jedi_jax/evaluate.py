"""The final test: full games (train=False env), epsilon 0, in parallel envs with a per-env episode quota
(taking the first N finished games of a parallel pool would favour short games)."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax import agent
from jedi_jax import envs


def test_env_seed(seed: int, num_envs: int) -> int:
  """Seed of the first test env (disjoint from the train env seeds in practice)."""
  return (2**30 + seed * num_envs) % (2**31 - 1)


def _eval_chunk(params, policy_state, obs, is_first, env_state, key, *, act, env_step, num_steps):
  def one(carry, _):
    policy_state, obs, is_first, env_state, key = carry
    key, k_act = jax.random.split(key)
    policy_state, actions = act(params, policy_state, obs, is_first, k_act)
    env_state, out = env_step(env_state, actions)
    done = (out.game_over | out.truncated) & ~out.is_reset
    is_first = out.terminated | out.truncated | out.is_reset
    return (policy_state, out.obs, is_first, env_state, key), (done, out.episode_return)
  carry, (done, ret) = jax.lax.scan(
      one, (policy_state, obs, is_first, env_state, key), None, length=num_steps)
  return carry, done, ret


def trained_policy(config) -> Callable:
  """The agent's `act` at `ac.epsilon_test`, with params `(ac_params, wm_params)` (see `evaluate_policy`)."""
  def act(params, policy_state, obs, is_first, key):
    ac_params, wm_params = params
    return agent.act(ac_params, wm_params, policy_state, obs, is_first, key, config.ac.epsilon_test, config)
  return act


def evaluate(state, config, num_episodes: int, chunk: int = 100) -> list[float]:
  """Mean-return protocol of DIAMOND's final test: `num_episodes` full games with epsilon 0.
  `state`: a (single-seed) `train.TrainState`."""
  n_envs = min(config.env.num_test_envs, num_episodes)
  return evaluate_policy(trained_policy(config), (state.ac_params, state.wm_params),
                         agent.ac_initial_state(config, n_envs), config, num_episodes,
                         jax.random.fold_in(state.key, 1_000_003), chunk)


def evaluate_random(config, num_episodes: int, chunk: int = 100) -> list[float]:
  """The uniform-random policy under exactly the protocol of `evaluate` (same test envs and seeds)."""
  num_actions = envs.num_actions(config.game, config.env.backend)

  def act(params, policy_state, obs, is_first, key):
    return policy_state, jax.random.randint(key, (obs.shape[0],), 0, num_actions)
  return evaluate_policy(act, (), (), config, num_episodes, jax.random.PRNGKey(config.seed), chunk)


def make_test_env(config, num_envs: int):
  """The test envs (train=False: full games) of a run's final test."""
  return envs.make_env(
      config.game, num_envs, test_env_seed(config.seed, num_envs), train=False, backend=config.env.backend,
      stochastic_frameskip=config.env.stochastic_frameskip, max_episode_steps=config.env.max_episode_steps,
      noop_max=config.env.noop_max)


def chunk_program(act: Callable, env_step: Callable, chunk: int):
  """The compiled program of the test: `chunk` steps of every test env, as a `jax.jit` object taking
  (params, policy_state, obs, is_first, env_state, key) and returning (carry, done [chunk, N], returns)."""
  return jax.jit(functools.partial(_eval_chunk, act=act, env_step=env_step, num_steps=chunk))


def evaluate_policy(act: Callable, params, policy_state, config, num_episodes: int, key: jax.Array,
                    chunk: int = 100) -> list[float]:
  """Returns of `num_episodes` full test games (train=False env) played by `act` in parallel envs.

  `act(params, policy_state, obs, is_first, key) -> (policy_state, actions)` is traced inside the scan.
  Each of the `env.num_test_envs` envs plays a fixed quota of games, so short games are not favoured.
  """
  n_envs = min(config.env.num_test_envs, num_episodes)
  quota = np.full(n_envs, num_episodes // n_envs) + (np.arange(n_envs) < num_episodes % n_envs)
  env = make_test_env(config, n_envs)
  env_state, env_step = env.functional(config.env.step_path)
  obs = env_state.obs
  run = chunk_program(act, env_step, chunk)
  carry = (policy_state, jnp.asarray(obs), jnp.ones((n_envs,), bool), env_state, key)
  returns: list[list[float]] = [[] for _ in range(n_envs)]
  while any(len(r) < q for r, q in zip(returns, quota)):
    carry, done, ret = run(params, *carry)
    done, ret = np.asarray(done), np.asarray(ret)
    for t, e in zip(*np.nonzero(done)):
      if len(returns[e]) < quota[e]:
        returns[e].append(float(ret[t, e]))
  env.close()
  return [r for per_env in returns for r in per_env]
