"""Resume by re-stepping (`jedi_jax.resume`) on a tiny deterministic env (no emulator): the rebuilt env
state equals the straight run's, and any divergence from the replay is found at its step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import replay as replay_lib
from jedi_jax import resume
from jedi_jax.envs import protocol

OBS = (2, 2, 3)


def _frame(pos):
  return jnp.broadcast_to(pos.astype(jnp.uint8)[:, None, None, None], pos.shape + OBS)


def toy_env(num_envs: int, seed: int):
  """(env_state, step_fn) of a deterministic game on the step protocol: a position moved by the actions,
  rewards, life losses, game overs (then an auto-reset step that ignores its action) and a step cap."""
  pos0 = (jnp.arange(num_envs, dtype=jnp.int32) + seed) % 97

  def raw(handle, actions, reset):
    pos, steps = handle
    moved = (pos * 7 + actions + 3) % 97
    pos = jnp.where(reset, (pos + 11) % 97, moved)
    steps = jnp.where(reset, 0, steps + 1)
    live = ~reset
    return (pos, steps), protocol.RawStep(
        obs=_frame(pos), reward=jnp.where(live & (pos % 5 == 0), pos % 3 - 1.0, 0.0).astype(jnp.float32),
        game_over=live & (pos % 13 == 0), truncated=live & (steps >= 9), lives=(pos % 4).astype(jnp.int32))

  state = protocol.initial_state((pos0, jnp.zeros_like(pos0)), _frame(pos0), (pos0 % 4).astype(jnp.int32),
                                 xp=jnp)

  def step_fn(env_state, actions):
    handle, r = raw(env_state.handle, actions, env_state.done)
    new_state, out = protocol.advance(env_state, r, train=True, xp=jnp)
    return new_state.replace(handle=handle), out

  return state, step_fn


def _play(num_envs, seed, steps, capacity=64):
  """A straight run: random actions, every step recorded as the collector records it (one scan)."""
  env_state, step_fn = toy_env(num_envs, seed)
  actions = jnp.asarray(np.random.default_rng(seed).integers(0, 4, (steps, num_envs)), jnp.int32)

  def one(env_state, act):
    obs = env_state.obs
    env_state, out = step_fn(env_state, act)
    return env_state, (obs, act, out.reward, out.terminated, out.truncated, out.is_reset)

  final, (obs, act, rew, end, trunc, is_reset) = jax.jit(lambda e: jax.lax.scan(one, e, actions))(env_state)
  pad = lambda x: jnp.zeros((num_envs, capacity) + x.shape[2:], x.dtype).at[:, :steps].set(jnp.swapaxes(x, 0, 1))
  replay = replay_lib.init_replay(num_envs, capacity, OBS).replace(
      obs=pad(obs), act=pad(act), rew=pad(rew), end=pad(end), trunc=pad(trunc),
      episode_id=pad(jnp.where(is_reset, -1, 0)).at[:, steps:].set(-1), t=jnp.asarray(steps, jnp.int32))
  return final, step_fn, replay


@pytest.fixture(scope="module")
def played():
  return _play(num_envs=4, seed=5, steps=40)


@pytest.fixture(scope="module")
def restep_fn(played):
  _, step_fn, _ = played
  return jax.jit(lambda env_state, replay, obs: resume.restep(env_state, replay, obs, step_fn))


def _same(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_restep_rebuilds_the_env_state_exactly(played, restep_fn):
  """Lives, the pending auto-reset, the game's return and length, the frame and the backend state."""
  final, _, replay = played
  assert int(jnp.sum(replay.episode_id < 0)) > 0 and bool(jnp.any(replay.end))  # auto-resets and ends happened
  fresh, _ = toy_env(4, 5)
  rebuilt, bad, what = restep_fn(fresh, replay, final.obs)
  assert int(bad) == -1 and int(what) == 0
  assert _same(rebuilt, final)
  resume.check_restepped(bad, what, 40, "w")  # no error


@pytest.mark.parametrize("field, step, flag", [
    ("obs", 7, resume.FRAME), ("rew", 12, resume.REWARD), ("end", 3, resume.END), ("trunc", 20, resume.END),
    ("episode_id", 30, resume.RESET)])
def test_a_damaged_replay_is_found_at_its_step(played, restep_fn, field, step, flag):
  final, _, replay = played
  x = getattr(replay, field)
  if field == "episode_id":
    damaged = x.at[1, step].set(jnp.where(x[1, step] < 0, 0, -1))
  elif x.dtype == jnp.bool_:
    damaged = x.at[1, step].set(~x[1, step])
  else:
    damaged = x.at[1, step].add(1)
  fresh, _ = toy_env(4, 5)
  _, bad, what = restep_fn(fresh, replay.replace(**{field: damaged}), final.obs)
  # A damaged frame is seen before its step, the other fields after it.
  assert int(bad) == step and int(what) & flag
  with pytest.raises(resume.ResumeError, match=f"diverge from the replay at recorded step {step} of 40"):
    resume.check_restepped(bad, what, 40, "w")


def test_other_env_seed_or_final_frame_mismatch_is_found(played, restep_fn):
  final, _, replay = played
  other, _ = toy_env(4, 6)
  _, bad, what = restep_fn(other, replay, final.obs)
  assert int(bad) == 0 and int(what) & resume.FRAME
  fresh, _ = toy_env(4, 5)
  _, bad, what = restep_fn(fresh, replay, final.obs + 1)
  assert int(bad) == 40 and int(what) == resume.FRAME


def test_packed_seeds_restep_one_pool(played):
  """K stacked replays of E envs each are re-stepped as one pool of K*E envs (seed k owns envs k*E..)."""
  final, step_fn, replay = played
  stacked = jax.tree.map(lambda x: x.reshape((2, 2) + x.shape[1:]) if x.ndim >= 2 and x.shape[0] == 4
                         else jnp.stack([x, x]), replay)
  assert stacked.act.shape == (2, 2, 64)
  fresh, _ = toy_env(4, 5)
  rebuilt, bad, _ = jax.jit(lambda e, r, o: resume.restep(e, r, o, step_fn))(
      fresh, stacked, final.obs.reshape((2, 2) + OBS))
  assert int(bad) == -1 and _same(rebuilt, final)


def test_a_wrapped_ring_cannot_be_restepped():
  with pytest.raises(resume.ResumeError, match="ring wrapped"):
    resume.check_replay_holds_every_step(101, 100, "w")
  resume.check_replay_holds_every_step(100, 100, "w")


def test_a_recreated_envpool_pool_re_steps_a_recorded_breakout_run():
  """The envpool part of an exact resume: Breakout games (short step cap, so truncations and auto-resets
  happen) collected by the loop's own collect program; a pool created again with the run's seed and
  re-stepped with the recorded actions reproduces every frame and ends in the same state. A frame the
  emulator would not give (another ale-py version, a damaged replay) is refused at its step."""
  from conftest import frozen_tiny_config
  from jedi_jax import loop
  from jedi_jax import run_files

  cfg = frozen_tiny_config(**{"env.max_episode_steps": 30, "schedule.steps_per_epoch": 50})
  env = loop.make_train_env(cfg)
  env_state, env_step = env.functional(cfg.env.step_path)
  programs = loop.Programs(cfg, env_step, log=lambda *_: None)
  states = run_files.template_states(cfg)
  states = jax.tree.map(jnp.copy, states.replace(obs=env_state.obs.reshape(states.obs.shape)))  # donated
  for _ in range(3):
    states, env_state, _ = programs("collect", states, env_state)
  assert int(states.replay.t) == 150 and int(jnp.sum(states.replay.trunc)) >= 4
  final = jax.device_get(env_state)
  env.close()

  again = loop.make_train_env(cfg)
  fresh, step_again = again.functional(cfg.env.step_path)
  rebuilt = loop.restore_envs(states, fresh, loop.Programs(cfg, step_again, log=lambda *_: None), "w",
                              log=lambda *_: None)
  for name in ("obs", "lives", "done", "episode_return", "episode_length"):
    if hasattr(final, name):
      np.testing.assert_array_equal(np.asarray(getattr(rebuilt, name)), np.asarray(getattr(final, name)), name)
  again.close()

  third = loop.make_train_env(cfg)
  fresh, step_third = third.functional(cfg.env.step_path)
  damaged = states.replace(replay=states.replay.replace(obs=states.replay.obs.at[0, 77, 30, 30, 0].add(1)))
  with pytest.raises(resume.ResumeError, match="recorded step 77 of 150"):
    loop.restore_envs(damaged, fresh, loop.Programs(cfg, step_third, log=lambda *_: None), "w",
                      log=lambda *_: None)
  third.close()
