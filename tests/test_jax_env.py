"""Tests of the pure-JAX env backend (jedi_jax/envs/jax_env.py) and Catch with bsuite's rules
(jedi_jax/envs/catch.py): the rules, the Atari step protocol on top, and the functional step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jedi_jax import config as config_lib
from jedi_jax import envs
from jedi_jax.envs import catch, jax_env

# Centre pixel of every board cell, to read a frame back as a board.
CELL_Y = np.array([int(np.mean(np.nonzero(catch.PIXEL_ROW == r)[0])) for r in range(catch.ROWS)])
CELL_X = np.array([int(np.mean(np.nonzero(catch.PIXEL_COLUMN == c)[0])) for c in range(catch.COLUMNS)])


def read_board(frame):
  """[64, 64, 3] uint8 -> (ball (row, column) or None, paddle column or None)."""
  cells = np.asarray(frame)[CELL_Y][:, CELL_X]                     # [10, 5, 3]
  ball = np.argwhere((cells == catch.BALL_RGB).all(-1))
  paddle = np.argwhere((cells == catch.PADDLE_RGB).all(-1))
  assert len(ball) <= 1 and len(paddle) <= 1
  return (tuple(ball[0]) if len(ball) else None), (int(paddle[0][1]) if len(paddle) else None)


def play(state, actions):
  """Plays a Catch game with the pure step; returns the states after each step, rewards, game overs."""
  states, rewards, overs = [], [], []
  for a in actions:
    state, reward, over = catch.step(state, jnp.int32(a), jax.random.PRNGKey(0))
    states.append(state)
    rewards.append(float(reward))
    overs.append(bool(over))
  return states, rewards, overs


def test_reset_ball_top_row_uniform_column_paddle_middle():
  states = jax.vmap(catch.reset)(jax.random.split(jax.random.PRNGKey(0), 5000))
  assert (np.asarray(states.ball_row) == 0).all()
  assert (np.asarray(states.paddle_column) == 2).all()
  counts = np.bincount(np.asarray(states.ball_column), minlength=catch.COLUMNS)
  assert counts.shape == (5,) and (np.abs(counts / 5000 - 0.2) < 0.03).all(), counts


@pytest.mark.parametrize("ball_column", range(5))
def test_ball_falls_one_row_per_step_and_the_game_ends_after_9(ball_column):
  state = catch.CatchState(jnp.int32(0), jnp.int32(ball_column), jnp.int32(2))
  states, rewards, overs = play(state, [1] * 9)
  assert [int(s.ball_row) for s in states] == list(range(1, 10))
  assert [int(s.ball_column) for s in states] == [ball_column] * 9
  assert overs == [False] * 8 + [True]
  assert rewards[:8] == [0.0] * 8 and rewards[8] == (1.0 if ball_column == 2 else -1.0)


def test_paddle_moves_and_is_clipped_at_the_walls():
  state = catch.reset(jax.random.PRNGKey(1))
  states, _, _ = play(state, [0, 0, 0, 0, 2, 2, 2, 2, 2])
  assert [int(s.paddle_column) for s in states] == [1, 0, 0, 0, 1, 2, 3, 4, 4]


@pytest.mark.parametrize("ball_column", range(5))
def test_reward_is_plus_one_under_the_ball_else_minus_one(ball_column):
  for target in range(5):
    state = catch.CatchState(jnp.int32(0), jnp.int32(ball_column), jnp.int32(2))
    moves = [2 if target > 2 else 0] * abs(target - 2) + [1] * (9 - abs(target - 2))
    states, rewards, _ = play(state, moves)
    assert int(states[-1].paddle_column) == target
    assert rewards[-1] == (1.0 if target == ball_column else -1.0)


def test_render_shows_ball_and_paddle_in_distinct_colours():
  state = catch.CatchState(jnp.int32(3), jnp.int32(4), jnp.int32(1))
  frame = catch.render(state)
  assert frame.shape == (64, 64, 3) and frame.dtype == jnp.uint8
  assert read_board(frame) == ((3, 4), 1)
  # The ball in the bottom row over the paddle (a catch) hides it; beside it both show.
  assert read_board(catch.render(catch.CatchState(jnp.int32(9), jnp.int32(1), jnp.int32(1)))) == ((9, 1), None)
  assert read_board(catch.render(catch.CatchState(jnp.int32(9), jnp.int32(0), jnp.int32(1)))) == ((9, 0), 1)
  # Every pixel is background, ball or paddle colour; the cells cover the whole frame.
  colours = {tuple(c) for c in np.asarray(frame).reshape(-1, 3)}
  assert colours == {catch.BACKGROUND_RGB, catch.BALL_RGB, catch.PADDLE_RGB}
  assert (np.asarray(frame) == catch.BALL_RGB).all(-1).sum() >= 6 * 12


def random_returns(num_games, seed=0):
  """One game per env under the uniform random policy with the pure per-env functions, vmapped (no frames:
  the rules alone); 9 steps each."""
  k_reset, k_act = jax.random.split(jax.random.PRNGKey(seed))

  @jax.jit
  def play_all(keys, actions):
    def one(key, acts):
      state = catch.reset(key)
      total, over_at = jnp.float32(0), jnp.int32(-1)
      for t in range(9):
        state, reward, over = catch.step(state, acts[t], key)
        total, over_at = total + reward, jnp.where(over & (over_at < 0), t, over_at)
      return total, over_at
    return jax.vmap(one)(keys, actions)

  returns, over_at = play_all(jax.random.split(k_reset, num_games),
                              jax.random.randint(k_act, (num_games, 9), 0, 3))
  assert (np.asarray(over_at) == 8).all()
  return np.asarray(returns)


def test_random_play_scores_about_minus_0_6():
  # The catch probability of a random policy is exactly 1/5: mean -0.6, std 0.8 per game.
  returns = random_returns(20_000)
  assert set(np.unique(returns)) == {-1.0, 1.0}
  assert abs(returns.mean() + 0.6) < 0.025, returns.mean()   # 4 standard errors (0.8 / sqrt(20000))


def test_make_env_shapes_dtypes_and_errors():
  assert envs.num_actions("Catch", "jax") == 3 and "jax" in envs.BACKENDS
  assert envs.check_game("Catch") == "Catch" and envs.check_game("Catch", "jax") == "Catch"
  with envs.make_env("Catch", 3, 0, train=True, backend="jax") as env:
    assert env.num_envs == 3 and env.action_space.n == 3 and env.backend == "jax"
    obs, info = env.reset()
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8 and env.observation_space.shape == obs.shape
    obs, reward, terminated, truncated, info = env.step(np.array([0, 1, 2]))
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    assert reward.dtype == np.float32 and terminated.dtype == np.bool_ and truncated.dtype == np.bool_
    for k, dtype in (("lives", np.int32), ("game_over", np.bool_), ("is_reset", np.bool_),
                     ("episode_return", np.float32), ("episode_length", np.int32)):
      assert info[k].shape == (3,) and info[k].dtype == dtype, k
    with pytest.raises(ValueError, match="actions must lie in"):
      env.step(np.array([0, 1, 3]))
  with pytest.raises(ValueError, match="needs env.backend 'jax'"):
    envs.make_env("Catch", 1, 0, train=True)
  with pytest.raises(ValueError, match="needs env.backend 'envpool' or 'ale'"):
    envs.make_env("Pong", 1, 0, train=True, backend="jax")
  with pytest.raises(ValueError, match="unknown game 'catch'.*pure-JAX games .*Catch"):
    envs.make_env("catch", 1, 0, train=True, backend="jax")
  with pytest.raises(ValueError, match="backend='ale'"):
    envs.make_env("Catch", 1, 0, train=True, backend="jax", stochastic_frameskip=True)


def test_game_over_then_auto_reset_dummy_step():
  with envs.make_env("Catch", 2, 3, train=True, backend="jax") as env:
    obs, _ = env.reset()
    (ball0, paddle0), _ = read_board(obs[0]), None
    assert ball0[0] == 0 and paddle0 == 2
    rows = []
    for t in range(9):
      obs, reward, terminated, truncated, info = env.step(np.array([1, 1]))
      assert read_board(obs[0])[0] == (t + 1, ball0[1])
      rows.append((reward.copy(), terminated.copy(), info["game_over"].copy(), info["episode_length"].copy()))
    reward, terminated, game_over, length = rows[-1]
    assert terminated.all() and game_over.all() and (length == 9).all() and not truncated.any()
    assert (np.abs(reward) == 1).all() and all((r[0] == 0).all() and not r[1].any() for r in rows[:-1])
    np.testing.assert_array_equal(info["episode_return"], reward)
    # The dummy step: action ignored (env 0 presses left, env 1 right), reward 0, no flags, first frame.
    obs, reward, terminated, truncated, info = env.step(np.array([0, 2]))
    assert info["is_reset"].all() and (reward == 0).all() and not terminated.any() and not truncated.any()
    assert not info["game_over"].any() and (info["episode_length"] == 0).all()
    assert (info["episode_return"] == 0).all()
    for e in range(2):
      (row, _), paddle = read_board(obs[e])
      assert row == 0 and paddle == 2
    obs, _, _, _, info = env.step(np.array([0, 2]))
    assert not info["is_reset"].any() and (info["episode_length"] == 1).all()
    assert [read_board(o)[1] for o in obs] == [1, 3]


def test_step_cap_truncates_then_resets():
  with envs.make_env("Catch", 1, 0, train=True, backend="jax", max_episode_steps=4) as env:
    env.reset()
    outs = [env.step(np.array([1])) for _ in range(6)]
  truncated = [bool(o[3][0]) for o in outs]
  is_reset = [bool(o[4]["is_reset"][0]) for o in outs]
  assert truncated == [False, False, False, True, False, False]
  assert is_reset == [False, False, False, False, True, False]
  assert not any(bool(o[2][0]) for o in outs)


def test_env_i_is_seeded_with_seed_plus_i():
  with envs.make_env("Catch", 3, 10, train=True, backend="jax") as a, \
       envs.make_env("Catch", 1, 12, train=True, backend="jax") as b:
    obs_a, _ = a.reset()
    obs_b, _ = b.reset()
    np.testing.assert_array_equal(obs_a[2], obs_b[0])
    for _ in range(25):
      np.testing.assert_array_equal(a.step(np.array([0, 1, 2]))[0][2], b.step(np.array([2]))[0][0])


@pytest.mark.parametrize("max_episode_steps", [7, 1000])
def test_functional_xla_host_and_gym_paths_are_bit_identical(max_episode_steps):
  """Same seed and actions: the pure step (jit + scan), the host step through io_callback (jit + scan)
  and the Python step; games that end, and (cap 7 < 9) games that are truncated."""
  actions = np.random.default_rng(0).integers(0, 3, (25, 3)).astype(np.int32)
  kwargs = dict(train=True, backend="jax", max_episode_steps=max_episode_steps)
  outs = {}
  for path in ("xla", "host"):
    with envs.make_env("Catch", 3, 5, **kwargs) as env:
      state, step_fn = env.functional(path)
      obs0 = np.asarray(state.obs)
      _, out = jax.jit(lambda s, a: jax.lax.scan(step_fn, s, a))(state, jnp.asarray(actions))
      outs[path] = (obs0, jax.tree.map(np.asarray, out))
  with envs.make_env("Catch", 3, 5, **kwargs) as env:
    obs0, _ = env.reset()
    steps = [env.step(a) for a in actions]
  gym = {"obs": np.stack([s[0] for s in steps]), "reward": np.stack([s[1] for s in steps]),
         "terminated": np.stack([s[2] for s in steps]), "truncated": np.stack([s[3] for s in steps])}
  for k in ("lives", "game_over", "is_reset", "episode_return", "episode_length"):
    gym[k] = np.stack([s[4][k] for s in steps])
  xla, host = outs["xla"][1], outs["host"][1]
  assert xla.is_reset.any()
  if max_episode_steps < 9:
    assert xla.truncated.any() and not xla.game_over.any()
  else:
    assert xla.game_over.any() and (xla.reward != 0).any() and not xla.truncated.any()
  np.testing.assert_array_equal(outs["xla"][0], outs["host"][0])
  np.testing.assert_array_equal(outs["xla"][0], obs0)
  for field in envs.StepOutput._fields:
    a, b, c = getattr(xla, field), getattr(host, field), gym[field]
    assert a.dtype == b.dtype == c.dtype, field
    np.testing.assert_array_equal(a, b, err_msg=field)
    np.testing.assert_array_equal(a, c, err_msg=field)


def test_pure_step_is_a_function_of_the_state():
  """The env state carries its keys: stepping one state twice gives the same result, and the step
  works under vmap over a batch of env states (what many-seed training would need)."""
  with envs.make_env("Catch", 2, 0, train=True, backend="jax") as env:
    state, step_fn = env.functional("xla")
  step = jax.jit(step_fn)
  actions = jnp.array([0, 2], jnp.int32)
  for _ in range(9):
    state, _ = step(state, actions)
  s1, o1 = step(state, actions)   # the reset dummy: draws new games from the carried keys
  s2, o2 = step(state, actions)
  for a, b in zip(jax.tree.leaves((s1, o1)), jax.tree.leaves((s2, o2))):
    np.testing.assert_array_equal(a, b)
  stacked = jax.tree.map(lambda x: jnp.stack([x, x]), state)
  _, ov = jax.vmap(step_fn)(stacked, jnp.stack([actions, actions]))
  np.testing.assert_array_equal(ov.obs[1], o1.obs)


def test_catch_preset_validates_and_backend_is_checked():
  c = config_lib.get_config("catch")
  config_lib.validate(c)
  assert c.game == "Catch" and c.env.backend == "jax" and c.env.num_test_episodes == 100
  assert c.ac.epsilon_test == 0.0 and c.ac.epsilon_collect > 0
  c.env.backend = "gym"
  with pytest.raises(ValueError, match="env.backend must be 'envpool', 'ale' or 'jax'"):
    config_lib.validate(c)
  assert tuple(jax_env.JAX_GAMES) == envs.JAX_GAMES and "Catch" in envs.JAX_GAMES


def test_train_cli_refuses_a_game_of_another_backend(tmp_path):
  import subprocess
  import sys
  workdir = tmp_path / "w"
  proc = subprocess.run([sys.executable, "-m", "experiments.train", "--preset=catch", "--game=Pong",
                         f"--workdir={workdir}"], capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert "error: game 'Pong' needs env.backend 'envpool' or 'ale', got 'jax'" in proc.stderr, proc.stderr[-2000:]
  assert not workdir.exists()


def test_env_groups_are_the_pool_split_per_seed_and_step_under_vmap():
  """`functional(num_groups=K)`: the K x E envs as [K, E] (packed seeds), stepped by the one-group step under
  vmap, give exactly the K x E pool's frames; a backend whose state is not a pytree is refused."""
  actions = np.random.default_rng(1).integers(0, 3, (12, 2, 2)).astype(np.int32)
  with envs.make_env("Catch", 4, 3, train=True, backend="jax") as env:
    pool, pool_step = env.functional("xla")
  with envs.make_env("Catch", 4, 3, train=True, backend="jax") as env:
    groups, group_step = env.functional("xla", num_groups=2)
  assert groups.obs.shape == (2, 2, 64, 64, 3)
  np.testing.assert_array_equal(np.asarray(groups.obs).reshape(4, 64, 64, 3), np.asarray(pool.obs))
  _, pool_out = jax.lax.scan(pool_step, pool, jnp.asarray(actions.reshape(12, 4)))
  _, group_out = jax.lax.scan(jax.vmap(group_step), groups, jnp.asarray(actions))
  for a, b in zip(jax.tree.leaves(pool_out), jax.tree.leaves(group_out)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b).reshape(np.shape(a)))
  with envs.make_env("Catch", 4, 3, train=True, backend="jax") as env:
    with pytest.raises(ValueError, match="num_groups=3"):
      env.functional("xla", num_groups=3)
    with pytest.raises(ValueError, match="num_groups=2"):
      env.functional("host", num_groups=2)
