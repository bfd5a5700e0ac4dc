"""The final test: full games (train=False env), epsilon 0, in parallel envs with a per-env episode quota
(taking the first N finished games of a parallel pool would favour short games)."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax import agent
from jedi_jax import envs


def test_env_seed(seed: int, num_envs: int) -> int:
  """Seed of the first test env (disjoint from the train env seeds in practice)."""
  return (2**30 + seed * num_envs) % (2**31 - 1)


def _eval_chunk(params, policy_state, obs, is_first, env_state, key, *, act, env_step, num_steps, record=False):
  """`num_steps` test steps; returns the carry and per step `done`, `episode_return` [num_steps, N], and with
  `record` also the frame after the step, the action, the reward and `is_reset`."""
  def one(carry, _):
    policy_state, obs, is_first, env_state, key = carry
    key, k_act = jax.random.split(key)
    policy_state, actions = act(params, policy_state, obs, is_first, k_act)
    env_state, out = env_step(env_state, actions)
    done = (out.game_over | out.truncated) & ~out.is_reset
    is_first = out.terminated | out.truncated | out.is_reset
    extra = (out.obs, actions, out.reward, out.is_reset) if record else ()
    return (policy_state, out.obs, is_first, env_state, key), (done, out.episode_return, *extra)
  carry, (done, ret, *extra) = jax.lax.scan(
      one, (policy_state, obs, is_first, env_state, key), None, length=num_steps)
  return (carry, done, ret, *extra)


def _test_policy(state, config, num_episodes: int):
  """(act, params, policy_state, key) of the final test: the agent with epsilon 0 and the run's test key."""
  n_envs = min(config.env.num_test_envs, num_episodes)
  return (trained_policy(config), (state.ac_params, state.wm_params), agent.ac_initial_state(config, n_envs),
          jax.random.fold_in(state.key, 1_000_003))


def make_test_env(config, num_envs: int):
  """The test envs (train=False: full games) of a run's final test."""
  return envs.make_env(
      config.game, num_envs, test_env_seed(config.seed, num_envs), train=False, backend=config.env.backend,
      stochastic_frameskip=config.env.stochastic_frameskip, max_episode_steps=config.env.max_episode_steps,
      noop_max=config.env.noop_max)


def chunk_program(act: Callable, env_step: Callable, chunk: int, record: bool = False):
  """The compiled program of the test: `chunk` steps of every test env, as a `jax.jit` object taking
  (params, policy_state, obs, is_first, env_state, key) and returning (carry, done [chunk, N], returns,
  and with `record` the frames, actions, rewards and reset marks)."""
  return jax.jit(functools.partial(_eval_chunk, act=act, env_step=env_step, num_steps=chunk, record=record))


def trained_policy(config) -> Callable:
  """The agent's `act` at `ac.epsilon_test`, with params `(ac_params, wm_params)` (see `evaluate_policy`)."""
  def act(params, policy_state, obs, is_first, key):
    ac_params, wm_params = params
    return agent.act(ac_params, wm_params, policy_state, obs, is_first, key, config.ac.epsilon_test, config)
  return act


def evaluate(state, config, num_episodes: int, chunk: int = 100) -> list[float]:
  """Mean-return protocol of DIAMOND's final test: `num_episodes` full games with epsilon 0.
  `state`: a (single-seed) `train.TrainState`."""
  act, params, policy_state, key = _test_policy(state, config, num_episodes)
  return evaluate_policy(act, params, policy_state, config, num_episodes, key, chunk)


def record_test_episodes(state, config, num_recorded: int, chunk: int = 100) -> list[dict]:
  """The frames of the first `num_recorded` episodes of `evaluate(state, config, env.num_test_episodes)`.

  The test is played again exactly as `evaluate` plays it (same env pool and seeds, same keys, same quotas),
  stopping once the recorded episodes have ended, so each recorded episode is the one whose return stands at
  the same index of `evaluate`'s list (and of results.json's `episode_returns`): env-major order, env 0's
  games first.

  Returns:
    One dict per episode, in that order: `frames` [T, 64, 64, 3] uint8 (the first frame of the game, then the
    frame after every agent step, the last one included), `actions` [T - 1] int32, `rewards` [T - 1] float32,
    `return` (the episode's raw return), `env` and `index` (its position in `evaluate`'s list).
  """
  num_episodes = config.env.num_test_episodes
  if not 1 <= num_recorded <= num_episodes:
    raise ValueError(f"can record 1 to env.num_test_episodes={num_episodes} test episodes, got {num_recorded}")
  act, params, policy_state, key = _test_policy(state, config, num_episodes)
  return play_test_episodes(act, params, policy_state, config, num_episodes, key, chunk, num_recorded)


def random_policy(game: str, backend: str, actions: Sequence[int] | None = None) -> Callable:
  """The `act` function (see `evaluate_policy`) of the uniform policy over all of `game`'s actions, or over the
  list `actions` (repeats weight an action)."""
  num_actions = envs.num_actions(game, backend)
  if actions is not None:
    envs.check_actions(game, num_actions, actions)
    table = jnp.asarray(actions, jnp.int32)

  def act(params, policy_state, obs, is_first, key):
    if actions is None:
      return policy_state, jax.random.randint(key, (obs.shape[0],), 0, num_actions)
    return policy_state, table[jax.random.randint(key, (obs.shape[0],), 0, table.shape[0])]
  return act


def evaluate_random(config, num_episodes: int, chunk: int = 100, actions: Sequence[int] | None = None) -> list[float]:
  """The uniform-random policy under exactly the protocol of `evaluate` (same test envs and seeds).

  `actions` (optional): draw uniformly from this list instead of from all actions; repeat an action to weight
  it (`[0, 1, 2, 2]`: action 2 half of the time). What a fixed action bias scores, e.g. how far a policy that
  only learnt "press UP more" would get (docs/results.md, "Atari on this CPU").
  """
  act = random_policy(config.game, config.env.backend, actions)
  return evaluate_policy(act, (), (), config, num_episodes, jax.random.PRNGKey(config.seed), chunk)


def evaluate_policy(act: Callable, params, policy_state, config, num_episodes: int, key: jax.Array,
                    chunk: int = 100) -> list[float]:
  """Returns of `num_episodes` full test games (train=False env) played by `act` in parallel envs.

  `act(params, policy_state, obs, is_first, key) -> (policy_state, actions)` is traced inside the scan.
  Each of the `env.num_test_envs` envs plays a fixed quota of games, so short games are not favoured.
  """
  return [e["return"] for e in play_test_episodes(act, params, policy_state, config, num_episodes, key, chunk, 0)]


def play_test_episodes(act: Callable, params, policy_state, config, num_episodes: int, key: jax.Array,
                       chunk: int = 100, num_recorded: int = 0) -> list[dict]:
  """The test loop of `evaluate_policy`: all `num_episodes` episodes as `{"return", "env", "index"}` dicts
  in env-major order, or, with `num_recorded` > 0, only the first `num_recorded` of them (the same games:
  the loop stops early) with their frames, actions and rewards (see `record_test_episodes`)."""
  n_envs = min(config.env.num_test_envs, num_episodes)
  quota = np.full(n_envs, num_episodes // n_envs) + (np.arange(n_envs) < num_episodes % n_envs)
  first_index = np.concatenate([[0], np.cumsum(quota)[:-1]])  # index in the env-major list of each env's game 0
  record = num_recorded > 0
  wanted = np.minimum(quota, np.clip(num_recorded - first_index, 0, None)) if record else quota
  env = make_test_env(config, n_envs)
  env_state, env_step = env.functional(config.env.step_path)
  obs = env_state.obs
  run = chunk_program(act, env_step, chunk, record)
  carry = (policy_state, jnp.asarray(obs), jnp.ones((n_envs,), bool), env_state, key)
  episodes: list[list[dict]] = [[] for _ in range(n_envs)]
  # Recording: the current game's frames, actions and rewards per env that still has games to record.
  current = [{"frames": [np.asarray(obs[e])], "actions": [], "rewards": []} if wanted[e] else None
             for e in range(n_envs)]
  while any(len(r) < q for r, q in zip(episodes, wanted)):
    carry, done, ret, *extra = run(params, *carry)
    done, ret = np.asarray(done), np.asarray(ret)
    if not record:
      for t, e in zip(*np.nonzero(done)):
        if len(episodes[e]) < wanted[e]:
          episodes[e].append({"return": float(ret[t, e]), "env": int(e), "index": int(first_index[e]) +
                              len(episodes[e])})
      continue
    frames, actions, rewards, is_reset = (np.asarray(x) for x in extra)
    for e in np.nonzero(wanted)[0]:
      for t in range(chunk):
        if len(episodes[e]) >= wanted[e]:
          break
        if is_reset[t, e]:  # the auto-reset step: its frame is the first of the next game
          current[e] = {"frames": [frames[t, e]], "actions": [], "rewards": []}
          continue
        if current[e] is None:  # every backend resets on the step after a game's end (envs/protocol.py)
          raise RuntimeError(f"test env {e} stepped on after its game ended without an auto-reset step")
        current[e]["frames"].append(frames[t, e])
        current[e]["actions"].append(actions[t, e])
        current[e]["rewards"].append(rewards[t, e])
        if done[t, e]:
          episodes[e].append({"frames": np.stack(current[e]["frames"]).astype(np.uint8),
                              "actions": np.asarray(current[e]["actions"], np.int32),
                              "rewards": np.asarray(current[e]["rewards"], np.float32),
                              "return": float(ret[t, e]), "env": int(e),
                              "index": int(first_index[e]) + len(episodes[e])})
          current[e] = None
  env.close()
  return [ep for per_env in episodes for ep in per_env]
