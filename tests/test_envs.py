"""Tests of the Atari100k env protocol (jedi_jax/envs): envpool, ale-py and the stochastic variant.

Small and fast: N <= 3 envs and a few hundred agent steps at most per test.
"""

import envpool
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ale_py.vector_env import AtariVectorEnv

from jedi_jax import envs
from jedi_jax import loop
from jedi_jax import train
from jedi_jax.envs import ale_env
from jedi_jax.envs.envpool_env import envpool_options

from conftest import frozen_tiny_config

INFO_KEYS = {"lives": np.int32, "game_over": np.bool_, "is_reset": np.bool_,
             "episode_return": np.float32, "episode_length": np.int32}


def random_actions(num_actions, steps, num_envs, seed=0):
  """[T, N] int32 uniform random actions."""
  return np.random.default_rng(seed).integers(0, num_actions, (steps, num_envs)).astype(np.int32)


def rollout(env, actions):
  """Runs the gymnasium API over actions [T, N]; returns a dict of stacked [T, N, ...] arrays."""
  keys = ("obs", "reward", "terminated", "truncated") + tuple(INFO_KEYS)
  out = {k: [] for k in keys}
  for a in actions:
    obs, reward, terminated, truncated, info = env.step(a)
    for k, v in zip(keys, (obs, reward, terminated, truncated) + tuple(info[k] for k in INFO_KEYS)):
      out[k].append(v)
  return {k: np.stack(v) for k, v in out.items()}


def scan_rollout(env, path, actions):
  """Runs `env.functional(path)` inside jit + lax.scan; returns (initial obs, StepOutput [T, N])."""
  state, step_fn = env.functional(path)
  run = jax.jit(lambda s, a: jax.lax.scan(step_fn, s, a))
  _, out = run(state, jnp.asarray(actions))
  return np.asarray(state.obs), jax.tree.map(np.asarray, out)


def test_games_and_errors():
  assert len(envs.GAMES) == 26 and "Breakout" in envs.GAMES and "MsPacman" in envs.GAMES
  with pytest.raises(ValueError, match="valid Atari100k games: Alien, Amidar"):
    envs.make_env("breakout", 1, 0, train=True)
  with pytest.raises(ValueError, match="backend='ale'"):
    envs.make_env("Pong", 1, 0, train=True, stochastic_frameskip=True)
  with pytest.raises(ValueError, match="unknown env backend"):
    envs.make_env("Pong", 1, 0, train=True, backend="gym")


def test_envpool_config_follows_protocol():
  with envs.make_env("Breakout", 1, 0, train=True) as env:
    cfg = env.backend_config
  expected = dict(max_episode_steps=27_000, frame_skip=4, noop_max=30, use_fire_reset=False,
                  episodic_life=False, reward_clip=False, repeat_action_probability=0.0,
                  full_action_space=False, img_height=64, img_width=64, gray_scale=False,
                  stack_num=1, use_inter_area_resize=True)
  assert {k: cfg[k] for k in expected} == expected


@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_shapes_and_dtypes(backend):
  with envs.make_env("Pong", 3, 0, train=True, backend=backend) as env:
    assert env.num_envs == 3 and env.action_space.n == 6
    obs, info = env.reset()
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    assert env.observation_space.shape == obs.shape
    out = rollout(env, random_actions(6, 5, 3))
  assert out["obs"].shape == (5, 3, 64, 64, 3) and out["obs"].dtype == np.uint8
  assert out["reward"].dtype == np.float32
  assert out["terminated"].dtype == np.bool_ and out["truncated"].dtype == np.bool_
  for k, dtype in INFO_KEYS.items():
    assert info[k].shape == (3,) and info[k].dtype == dtype, k
    assert out[k].shape == (5, 3) and out[k].dtype == dtype, k
  np.testing.assert_array_equal(out["episode_length"][:, 0], np.arange(1, 6))


def test_minimal_action_sets():
  for game, n in (("Breakout", 4), ("Pong", 6), ("Boxing", 18), ("MsPacman", 9)):
    with envs.make_env(game, 1, 0, train=False) as env:
      assert env.action_space.n == n, game
    for backend in envs.ATARI_BACKENDS:
      assert envs.num_actions(game, backend) == n, (game, backend)


def test_no_sticky_actions():
  """With one no-op at most, the game is deterministic given the actions, whatever the seed.

  Sticky actions (p=0.25, the v5 default elsewhere) make two seeds diverge within a few steps: the
  negative control shows that the check can fail.
  """
  actions = random_actions(6, 60, 1)

  def frames(seed, repeat_action_probability):
    opts = envpool_options(27_000, noop_max=1)  # noop_max=1: exactly one no-op, no randomness
    opts["repeat_action_probability"] = repeat_action_probability
    pool = envpool.make_gymnasium("Pong-v5", num_envs=1, seed=seed, **opts)
    obs = [pool.reset()[0]] + [pool.step(a)[0] for a in actions]
    pool.close()
    return np.stack(obs)

  assert np.array_equal(frames(1, 0.0), frames(2, 0.0))
  assert not np.array_equal(frames(1, 0.25), frames(2, 0.25))
  # Our env: two instances with the same seed and actions give the same frames.
  runs = []
  for _ in range(2):
    with envs.make_env("Pong", 2, 7, train=True) as env:
      env.reset()
      runs.append(rollout(env, random_actions(6, 60, 2))["obs"])
  assert np.array_equal(*runs)


def test_no_fire_reset():
  """Breakout waits for FIRE to launch the ball: with NOOPs only nothing moves and no life is lost.

  With envpool's default FIRE reset the ball is launched and the unmoved paddle soon misses it.
  """
  with envs.make_env("Breakout", 2, 0, train=True) as env:
    obs0, _ = env.reset()
    out = rollout(env, np.zeros((150, 2), np.int32))
  assert (out["obs"] == obs0[None]).all()
  assert (out["lives"] == 5).all() and (out["reward"] == 0).all() and not out["terminated"].any()
  opts = envpool_options(27_000, 30)
  opts["use_fire_reset"] = True
  pool = envpool.make_gymnasium("Breakout-v5", num_envs=2, seed=0, **opts)
  pool.reset()
  lives = [pool.step(np.zeros(2, np.int32))[4]["lives"] for _ in range(150)]
  pool.close()
  assert (np.stack(lives)[-1] < 5).all()


def check_life_loss_and_game_over(train_out, test_out):
  """Shared checks of a Breakout rollout [T, N=1] that reaches a game over."""
  for k in ("obs", "reward", "lives", "game_over", "is_reset", "episode_return"):
    np.testing.assert_array_equal(train_out[k], test_out[k], err_msg=k)
  lives = train_out["lives"][:, 0]
  drop = int(np.argmax(lives < 5))                  # first life loss
  assert 0 < drop and lives[drop] == 4
  assert train_out["terminated"][drop, 0] and not test_out["terminated"][drop, 0]
  assert not train_out["game_over"][drop, 0]
  # The game continues: no reset, same lives, the step count goes on.
  assert not train_out["is_reset"][drop + 1, 0] and lives[drop + 1] == 4
  assert train_out["episode_length"][drop + 1, 0] == drop + 2
  # Before the game over, test-env terminations never happen; train-env ones only at life losses.
  end = int(np.argmax(train_out["game_over"][:, 0]))
  assert end > drop and train_out["game_over"][end, 0] and lives[end] == 0
  life_loss = np.concatenate([[False], lives[1:end + 1] < lives[:end]])
  np.testing.assert_array_equal(train_out["terminated"][:end + 1, 0], life_loss)
  np.testing.assert_array_equal(test_out["terminated"][:end + 1, 0], np.arange(end + 1) == end)
  # Episode totals at the game over, then the auto-reset dummy.
  assert train_out["episode_length"][end, 0] == end + 1
  assert train_out["episode_return"][end, 0] == train_out["reward"][:end + 1, 0].sum()
  assert train_out["is_reset"][end + 1, 0] and not train_out["is_reset"][:end + 1].any()
  assert train_out["lives"][end + 1, 0] == 5 and train_out["reward"][end + 1, 0] == 0
  assert train_out["episode_length"][end + 1, 0] == 0
  assert not train_out["terminated"][end + 1, 0] and not train_out["truncated"][end + 1, 0]
  assert train_out["episode_length"][end + 2, 0] == 1


@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_life_loss_terminates_only_the_training_env(backend):
  outs = []
  for train in (True, False):
    with envs.make_env("Breakout", 1, 3, train=train, backend=backend) as env:
      env.reset()
      outs.append(rollout(env, random_actions(4, 700, 1, seed=1)))
  check_life_loss_and_game_over(*outs)


@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_step_cap_truncates_exactly_and_marks_reset(backend):
  with envs.make_env("Pong", 2, 0, train=True, backend=backend, max_episode_steps=10) as env:
    env.reset()
    out = rollout(env, random_actions(6, 23, 2))
  truncated = np.zeros((23, 2), bool)
  truncated[[9, 20]] = True                     # steps 10 and 21: step 11 is the reset dummy
  np.testing.assert_array_equal(out["truncated"], truncated)
  assert not out["terminated"].any() and not out["game_over"].any()  # envpool flags both: fixed
  is_reset = np.zeros((23, 2), bool)
  is_reset[[10, 21]] = True
  np.testing.assert_array_equal(out["is_reset"], is_reset)
  np.testing.assert_array_equal(out["episode_length"][:, 0],
                                np.r_[np.arange(1, 11), np.arange(0, 11), 0, 1])


def test_rewards_are_raw():
  with envs.make_env("Asterix", 2, 0, train=True) as env:
    env.reset()
    out = rollout(env, random_actions(9, 60, 2))
  assert out["reward"].max() >= 50                # an Asterix object is worth 50 points or more
  np.testing.assert_allclose(out["episode_return"][-1], out["reward"].sum(0))


@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_xla_host_and_gym_paths_are_bit_identical(backend):
  """Same seed and actions: XLA step (jit+scan), host io_callback step (jit+scan), Python step."""
  # Asterix: rewards of 50 and early life losses; the cap adds a truncation and a reset.
  kwargs = dict(train=True, backend=backend, max_episode_steps=140)
  actions = random_actions(9, 170, 2)
  with envs.make_env("Asterix", 2, 0, **kwargs) as env:
    obs0_xla, xla = scan_rollout(env, "xla", actions)
  with envs.make_env("Asterix", 2, 0, **kwargs) as env:
    obs0_host, host = scan_rollout(env, "host", actions)
  with envs.make_env("Asterix", 2, 0, **kwargs) as env:
    obs0_gym, _ = env.reset()
    gym = rollout(env, actions)
  assert xla.is_reset.any() and xla.truncated.any() and xla.reward.any() and xla.terminated.any()
  np.testing.assert_array_equal(obs0_xla, obs0_host)
  np.testing.assert_array_equal(obs0_xla, obs0_gym)
  for field in envs.StepOutput._fields:
    a, b, c = getattr(xla, field), getattr(host, field), gym[field]
    assert a.dtype == b.dtype == c.dtype, field
    np.testing.assert_array_equal(a, b, err_msg=field)
    np.testing.assert_array_equal(a, c, err_msg=field)


def test_ale_config_and_resize_match_ale():
  with envs.make_env("Pong", 1, 0, train=True, backend="ale") as env:
    cfg = env.backend_config
  assert cfg["max_num_frames_per_episode"] == 4 * 27_000 and cfg["reward_clipping"] is False
  assert cfg["use_fire_reset"] is False and cfg["repeat_action_probability"] == 0.0
  # Our INTER_AREA port (used by the stochastic variant) equals ale-py's OpenCV resize.
  kwargs = dict(grayscale=False, stack_num=1, frameskip=4, maxpool=True, noop_max=30,
                repeat_action_probability=0.0, reward_clipping=False, use_fire_reset=False)
  full = AtariVectorEnv("ms_pacman", 1, img_height=210, img_width=160, **kwargs)
  small = AtariVectorEnv("ms_pacman", 1, img_height=64, img_width=64, **kwargs)
  rows = ale_env.area_resize_taps(210, 64)
  cols = ale_env.area_resize_taps(160, 64)
  np.testing.assert_allclose(ale_env.area_resize_weights(210, 64).sum(1), 1.0, rtol=1e-6)
  frames, expected = [full.reset(seed=4)[0][:, 0]], [small.reset(seed=4)[0][:, 0]]
  for a in random_actions(9, 10, 1):
    frames.append(full.step(a)[0][:, 0])
    expected.append(small.step(a)[0][:, 0])
  full.close()
  small.close()
  np.testing.assert_array_equal(ale_env.area_resize(np.concatenate(frames), rows, cols),
                                np.concatenate(expected))


def test_stochastic_frameskip():
  kwargs = dict(train=True, backend="ale", max_episode_steps=12)
  actions = random_actions(4, 30, 2, seed=2)
  with envs.make_env("Breakout", 2, 0, stochastic_frameskip=True, **kwargs) as env:
    obs0, _ = env.reset()
    assert obs0.shape == (2, 64, 64, 3) and env.action_space.n == 4
    out, skips = {k: [] for k in ("obs", "truncated", "is_reset")}, []
    for a in actions:
      obs, _, _, truncated, info = env.step(a)
      out["obs"].append(obs)
      out["truncated"].append(truncated)
      out["is_reset"].append(info["is_reset"])
      skips.append(env.last_frame_skips.copy())
    skips, is_reset = np.stack(skips), np.stack(out["is_reset"])
    assert np.array_equal(skips == 0, is_reset)                 # dummy steps play no frames
    assert set(np.unique(skips[~is_reset])) <= {2, 3, 4, 5, 6} and len(np.unique(skips)) > 2
    assert np.stack(out["truncated"])[11].all() and is_reset[12].all()
    # The functional host path runs the same protocol inside jit + scan.
    _, fout = scan_rollout(env, "host", actions[:5])
    assert fout.obs.shape == (5, 2, 64, 64, 3) and fout.obs.dtype == np.uint8
    with pytest.raises(ValueError, match="functional\\('host'\\)"):
      env.functional("xla")
  with envs.make_env("Breakout", 2, 0, **kwargs) as fixed:
    fixed.reset()
    fixed_obs = rollout(fixed, actions)["obs"]
  assert not np.array_equal(np.stack(out["obs"]), fixed_obs)


def test_reward_density_counts_the_sign_of_each_rewarded_step():
  """diagnostics.reward_counts (experiments/reward_density.py): Pong pays the random player only -1s (it never
  scores), and counts cover every env step."""
  from jedi_jax import diagnostics
  from jedi_jax import config as config_lib
  c = config_lib.get_config("atari_cpu")
  c.game = "Pong"
  counts = diagnostics.reward_counts(config_lib.freeze(c), 600, seed=0)
  assert counts["steps"] >= 600 and counts["steps"] % c.env.num_envs == 0
  assert counts["positive"] == 0 and 0 < counts["negative"] < counts["steps"]
  assert counts["num_actions"] == 6


def test_reward_counts_of_a_fixed_action_cycle():
  """reward_density --cycle: CrazyClimber pays a climb (UP x3, DOWN x3), never DOWN alone (its only actions paid
  on the step they are taken, results/atari_cpu/action_reward.json); an action the game lacks is refused."""
  from jedi_jax import diagnostics
  from jedi_jax import config as config_lib
  c = config_lib.get_config("atari_cpu")
  c.game = "CrazyClimber"
  up, down = 1, 4                                  # minimal action set: NOOP, UP, RIGHT, LEFT, DOWN, ...
  assert diagnostics.reward_counts(config_lib.freeze(c), 300, seed=0, cycle=(up,) * 3 + (down,) * 3)["positive"] > 5
  assert diagnostics.reward_counts(config_lib.freeze(c), 300, seed=0, cycle=(down,))["positive"] == 0
  with pytest.raises(ValueError, match="actions 0..8"):
    diagnostics.reward_counts(config_lib.freeze(c), 10, seed=0, cycle=(9,))


@pytest.mark.parametrize("backend", ["envpool", "ale"])
def test_an_action_shows_in_the_next_frame(backend):
  """No off-by-one between an action and the frame it produces (the replay pairs a frame with the action
  taken on it, `train.transition`): in Boxing the white boxer moves right under RIGHT and left under LEFT
  from the first frame after the action (~1.5 pixels of 64 per agent step)."""
  right, left = 3, 4                               # Boxing's minimal action set: NOOP, FIRE, UP, RIGHT, LEFT, ...
  actions = np.array([[right]] * 8 + [[left]] * 8, np.int32)
  with envs.make_env("Boxing", 1, 0, train=True, backend=backend) as env:
    obs0, out = scan_rollout(env, "xla", actions)
  frames = np.concatenate([obs0[None], out.obs], axis=0)[:, 0].astype(np.int32)   # [T + 1, 64, 64, 3]
  white = frames.min(axis=-1) > 200
  x = np.array([np.nonzero(w)[1].mean() for w in white])
  dx = np.diff(x)                                  # dx[t]: frame t -> t + 1, produced by actions[t]
  assert (dx[:6] > 0.5).all(), dx                   # RIGHT moves right at once (the ring's edge may stop it later)
  assert dx[8] < -0.2 and (dx[9:14] < -0.5).all(), dx   # the first LEFT already moves left (partly: the
                                                          # max-pool of the last two frames): no lag of a step


def test_the_replay_pairs_each_frame_with_the_action_taken_on_it():
  """The collect path (`train.collect`, envpool in XLA) keeps the alignment of the test above in the replay:
  Breakout's paddle moves between obs[t] and obs[t + 1] with act[t] (RIGHT / LEFT, ~3 pixels of 64 per agent
  step; the move continues a step later, so act[t - 1] shows too), and never with act[t + 1]. An off-by-one
  here would leave the dynamics no action to learn."""
  cfg = frozen_tiny_config(game="Breakout", **{"replay.capacity": 700})
  env = loop.make_train_env(cfg)
  env_state, env_step = env.functional(cfg.env.step_path)
  state = train.init_train_state(cfg, env.num_actions, jax.random.key(0), env_state, jnp.copy(env_state.obs))
  state = jax.jit(lambda s: train.collect(s, 600, 1.0, env_step, cfg)[0])(state)
  obs, act = np.asarray(state.replay.obs[0, :600]), np.asarray(state.replay.act[0, :600])
  episode = np.asarray(state.replay.episode_id[0, :600])

  def paddle_x(frame):                             # the paddle: the red pixels of row 58 inside the walls
    cols = np.nonzero(frame[58, 2:60, 0] > 100)[0]
    return cols.mean() if len(cols) else np.nan
  x = np.array([paddle_x(f) for f in obs])
  dx, same = x[1:] - x[:-1], episode[1:] == episode[:-1]
  right, left = 2, 3                               # Breakout's minimal action set: NOOP, FIRE, RIGHT, LEFT

  def mean_move(actions, a):
    return np.nanmean(dx[same & (actions == a)])
  now, after = act[:-1], act[1:]
  assert mean_move(now, right) > 1.5 and mean_move(now, left) < -1.5, (mean_move(now, right), mean_move(now, left))
  assert abs(mean_move(after, right)) < 0.7 and abs(mean_move(after, left)) < 0.7
