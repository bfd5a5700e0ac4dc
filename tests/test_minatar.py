"""Tests of the MinAtar games on the pure-JAX backend (jedi_jax/envs/minatar.py), with gymnax 1.0.1's
MinAtar as the reference implementation: frames against the channel grid, rewards and game overs against
gymnax's own `step` for the same keys and actions, and the auto-reset step after a game over."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import config as config_lib
from jedi_jax import envs
from jedi_jax.envs import jax_env, minatar

GAMES = minatar.GAMES
# gymnax's Asterix and Freeway steps take ~10 s to compile on a 2-core CPU (their rollouts ~30-45 s in all).
GAME_PARAMS = [pytest.param(g, marks=pytest.mark.slow) if g in ("MinAtar-Asterix", "MinAtar-Freeway") else g
               for g in GAMES]


def test_games_are_registered_with_gymnax_action_sets():
  assert set(GAMES) <= set(envs.JAX_GAMES) and set(GAMES) <= set(jax_env.JAX_GAMES)
  expected = {"MinAtar-Breakout": 3, "MinAtar-Asterix": 5, "MinAtar-Freeway": 3, "MinAtar-SpaceInvaders": 4}
  for game in GAMES:
    env, _ = minatar.gymnax_env(game)
    assert envs.num_actions(game, "jax") == env.num_actions == expected[game]
    assert envs.check_game(game, "jax") == game
    spec = minatar.SPECS[game]
    assert len(spec.palette) == env.obs_shape[-1] and sorted(spec.priority) == list(range(len(spec.palette)))
    assert len(set(spec.palette)) == len(spec.palette) and (0, 0, 0) not in spec.palette
  with pytest.raises(ValueError, match="needs env.backend 'jax'"):
    envs.make_env("MinAtar-Breakout", 1, 0, train=True)


def test_render_breakout_start_known_pixels():
  """Breakout's first frame, pixel by pixel. Cell (r, c) covers pixels y, x with y * 10 // 64 == r and
  x * 10 // 64 == c: rows/columns 0..9 start at pixels 0, 7, 13, 20, 26, 32, 39, 45, 52, 58."""
  spec = minatar.SPECS["MinAtar-Breakout"]
  game = jax_env.JAX_GAMES["MinAtar-Breakout"]
  paddle, ball, trail, brick = spec.palette
  reset_and_render = jax.jit(lambda key: (game.reset(key).ball_x, game.render(game.reset(key))))
  seen = set()
  for i in range(8):
    ball_x, frame = reset_and_render(jax.random.PRNGKey(i))
    ball_x, frame = int(ball_x), np.array(frame)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    seen.add(ball_x)
    ball_columns = slice(0, 7) if ball_x == 0 else slice(58, 64)
    # The paddle in row 9, column 4; nothing else in rows 0 and 4-9.
    assert (frame[58:64, 26:32] == paddle).all()
    frame[58:64, 26:32] = 0
    assert (frame[:7] == 0).all() and (frame[26:] == 0).all()
    # The ball starts in row 3 (over a brick and its own trail: both hidden); bricks fill rows 1-3.
    assert (frame[20:26, ball_columns] == ball).all()
    frame[20:26, ball_columns] = brick
    assert (frame[7:26] == brick).all()
    assert not (frame == trail).all(-1).any()
  assert seen == {0, 9}


def test_render_space_invaders_alien_colour_gives_the_direction():
  spec = minatar.SPECS["MinAtar-SpaceInvaders"]
  game = jax_env.JAX_GAMES["MinAtar-SpaceInvaders"]
  state = game.reset(jax.random.PRNGKey(0))                   # aliens in rows 0-3, columns 2-7, moving left
  frame = np.asarray(game.render(state))
  np.testing.assert_array_equal(frame[0:26, 13:51], np.broadcast_to(spec.palette[2], (26, 38, 3)))
  frame = np.asarray(game.render(state.replace(alien_dir=jnp.int32(1))))
  np.testing.assert_array_equal(frame[0:26, 13:51], np.broadcast_to(spec.palette[3], (26, 38, 3)))


def reference_rollout(game_name, keys, start_time, actions):
  """gymnax's own `reset` and `step` for every env, with the keys `jax_env.reset_all` and `raw_step` use
  and envpool's auto-reset on the step after a game over (gymnax's own auto-reset state is discarded).

  keys: [N, 2], each env's key before reset; start_time: [N], written into the first games' step counters
  (to reach gymnax's time limit quickly); actions: [T, N].
  Returns rewards [T, N], game overs [T, N], resets [T, N] (the step started a new game) and gymnax's
  observation grids [T, N, 10, 10, C] of the frame each step shows.
  """
  env, params = minatar.gymnax_env(game_name)
  strong = lambda x: jnp.asarray(x, jnp.asarray(x).dtype)     # noqa: E731  (a fixed scan carry)

  def one_env(key, start_time, actions):
    key, k_first = jax.random.split(key)                      # as jax_env.reset_all
    _, state = env.reset(k_first, params)
    state = jax.tree.map(strong, state.replace(time=start_time))

    def body(carry, action):
      state, key, ended = carry
      key, k_reset, k_step = jax.random.split(key, 3)         # as jax_env.raw_step
      _, stepped, reward, terminated, truncated, info = env.step(k_step, state, action, params)
      reset_obs, reset_state = env.reset(k_reset, params)
      # After a game over gymnax's `step` has already reset with its own key: that state is never used,
      # the next step starts a new game from its own reset key instead, as envpool does.
      new_state = jax.tree.map(lambda r, p, old: jnp.where(ended, r, p).astype(old.dtype),
                               reset_state, stepped, state)
      grid = jnp.where(ended, reset_obs, info["final_observation"])   # the played, not the reset, frame
      game_over = ~ended & (terminated | truncated)
      reward = jnp.where(ended, 0.0, reward)
      return (new_state, key, game_over), (reward, game_over, ended, grid)

    return jax.lax.scan(body, (state, key, jnp.bool_(False)), actions)[1]

  out = jax.jit(jax.vmap(one_env, in_axes=(0, 0, 1), out_axes=1))(keys, start_time, actions)
  return tuple(np.asarray(x) for x in out)


def expected_frames(grids, spec):
  """The frames the module docstring promises, in plain numpy: each cell of 6-7 x 6-7 pixels in the colour
  of its first set channel in `spec.priority`, black if none. grids: [..., 10, 10, C]."""
  grids = np.asarray(grids) != 0
  cells = np.zeros(grids.shape[:-1] + (3,), np.uint8)
  coloured = np.zeros(grids.shape[:-1], bool)
  for channel in spec.priority:
    take = grids[..., channel] & ~coloured
    cells[take] = spec.palette[channel]
    coloured |= take
  cell = np.arange(64) * 10 // 64
  return cells[..., cell, :, :][..., :, cell, :]


NUM_ENVS, NUM_STEPS = 4, 150


@functools.lru_cache(maxsize=None)
def rollouts(game_name):
  """The same random actions through make_env's functional step (jit + scan) and through gymnax.
  Env 0 starts 60 steps before gymnax's time limit (Freeway: every env, 60-120 steps before)."""
  game = jax_env.JAX_GAMES[game_name]
  env, params = minatar.gymnax_env(game_name)
  limit = params.max_steps_in_episode
  before = (60, 80, 100, 120) if game_name == "MinAtar-Freeway" else (60, limit, limit, limit)
  start_time = jnp.asarray([limit - b for b in before], jnp.int32)
  actions = jax.random.randint(jax.random.PRNGKey(3), (NUM_STEPS, NUM_ENVS), 0, game.num_actions)
  seed = 10
  with envs.make_env(game_name, NUM_ENVS, seed, train=True, backend="jax") as batch_env:
    assert batch_env.action_space.n == game.num_actions
    state, step_fn = batch_env.functional("xla")
    handle = state.handle
    state = state.replace(handle=handle.replace(game=handle.game.replace(time=start_time)))
    _, out = jax.jit(lambda s, a: jax.lax.scan(step_fn, s, a))(state, actions)
  out = jax.tree.map(np.asarray, out)
  keys = jnp.stack([jax.random.PRNGKey(seed + i) for i in range(NUM_ENVS)])   # JaxBatchEnv's seeding
  reference = reference_rollout(game_name, keys, start_time, actions)
  return np.asarray(state.obs), out, reference


@pytest.mark.parametrize("game_name", GAME_PARAMS)
def test_rewards_and_game_overs_match_gymnax_step(game_name):
  """make_env's step vs gymnax's `step` on the same keys and actions: the same rewards and game overs
  (gymnax's terminated | truncated at its own time limit), through several games and resets."""
  _, out, (rewards, overs, resets, _) = rollouts(game_name)
  np.testing.assert_array_equal(out.reward, rewards)
  np.testing.assert_array_equal(out.game_over, overs)
  np.testing.assert_array_equal(out.is_reset, resets)
  assert not out.truncated.any() and (out.lives == 0).all()
  np.testing.assert_array_equal(out.terminated, out.game_over)    # no lives to lose
  assert out.game_over.any(axis=0).all()                         # every env finished a game
  if game_name == "MinAtar-Freeway":                             # it ends only at gymnax's time limit
    np.testing.assert_array_equal(np.argmax(out.game_over, axis=0), [59, 79, 99, 119])
    assert out.game_over.sum() == NUM_ENVS
  else:
    assert (out.reward != 0).any() and out.game_over.sum() > NUM_ENVS


@pytest.mark.parametrize("game_name", GAME_PARAMS)
def test_frames_match_the_channel_grid(game_name):
  """[N, 64, 64, 3] uint8 frames; every pixel is the colour of its cell's top channel in gymnax's grid."""
  obs0, out, (_, _, _, grids) = rollouts(game_name)
  spec = minatar.SPECS[game_name]
  assert obs0.shape == (NUM_ENVS, 64, 64, 3) and obs0.dtype == np.uint8
  assert out.obs.shape == (NUM_STEPS, NUM_ENVS, 64, 64, 3) and out.obs.dtype == np.uint8
  np.testing.assert_array_equal(out.obs, expected_frames(grids, spec))
  assert {tuple(c) for c in out.obs[::10].reshape(-1, 3)} <= {(0, 0, 0)} | set(spec.palette)
  if game_name == "MinAtar-SpaceInvaders":     # every alien sits in two channels: the priority decides
    assert ((grids != 0).sum(-1) > 1).any()


@pytest.mark.parametrize("game_name", GAME_PARAMS)
def test_auto_reset_step_follows_a_game_over(game_name):
  """The step after each game over ignores its action, gives reward 0 and no flags, and shows the first
  frame of a new game (gymnax's reset with the env's next key); the step after it plays."""
  _, out, (_, _, _, grids) = rollouts(game_name)
  over_t, over_e = np.nonzero(out.game_over[:-2])
  assert len(over_t) >= 1
  for t, e in zip(over_t, over_e):
    assert out.is_reset[t + 1, e] and out.reward[t + 1, e] == 0 and out.episode_return[t + 1, e] == 0
    assert not out.terminated[t + 1, e] and not out.game_over[t + 1, e] and out.episode_length[t + 1, e] == 0
    assert not out.is_reset[t + 2, e] and out.episode_length[t + 2, e] == 1
    assert not (out.obs[t + 1, e] == out.obs[t, e]).all()
  assert out.is_reset.sum() == out.game_over[:-1].sum()
  if game_name == "MinAtar-Breakout":          # a new game: three full rows of bricks, paddle in column 4
    t, e = over_t[0] + 1, over_e[0]
    assert grids[t, e, 1:4, :, 3].all() and grids[t, e, 9, 4, 0] and grids[t, e, 9].sum() == 1


def test_minatar_preset_validates():
  c = config_lib.get_config("minatar")
  config_lib.validate(c)
  assert c.game == "MinAtar-Breakout" and c.env.backend == "jax"
  assert c.env.max_episode_steps > 2500        # gymnax's own limits end every game first
  assert c.ac.epsilon_test == 0.0 and c.env.num_test_episodes == 100
