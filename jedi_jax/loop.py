"""The host loop: build envs and the compiled epoch programs, call them, log, checkpoint, evaluate.

Nothing numerical happens here; it sequences the pure functions of `jedi_jax.train`:

  1. initial collection (untrained policy) in chunks of `steps_per_epoch`, until DIAMOND's stopping rule;
  2. epoch 1 with the long first-epoch update counts;
  3. regular epochs, K per compiled call, until 100k env steps are collected;
  4. the final update-only epochs;
  5. `num_test_episodes` full games with the test env (epsilon 0), written to `results.json`.

Segments and exact resume: envpool cannot snapshot its emulators, so a checkpoint cannot hold the env. Instead
every checkpoint ends an env *segment*: the open training episodes are truncated in the replay and the train
envs are re-created with a seed folded from (run seed, epoch). A resumed run restores the checkpoint and
starts the same next segment, so it replays the straight run bit for bit.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax import agent
from jedi_jax import checkpoint as ckpt_lib
from jedi_jax import config as config_lib
from jedi_jax import envs
from jedi_jax import parallel
from jedi_jax import replay as replay_lib
from jedi_jax import train
from jedi_jax.logs import MetricsLogger, describe_compiled


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a NaN loss); the last good checkpoint is kept."""


def env_seed(seed: int, segment: int, num_envs: int) -> int:
  """Seed of the first train env of an env segment (the segment starts at epoch `segment`); env i gets
  seed + i. Linear in `seed` with slope `num_envs`, so one pool of K x E envs seeded for seed s gives seed
  s + k exactly the envs of a single run with that seed (many-seed training)."""
  return (segment * 1_000_003 + seed * num_envs) % (2**31 - 1)


def test_env_seed(seed: int, num_envs: int) -> int:
  """Seed of the first test env (disjoint from the train env seeds in practice)."""
  return (2**30 + seed * num_envs) % (2**31 - 1)


def make_train_env(config, segment: int, num_seeds: int = 1):
  return envs.make_env(
      config.game, config.env.num_envs * num_seeds, env_seed(config.seed, segment, config.env.num_envs),
      train=True,
      backend=config.env.backend, stochastic_frameskip=config.env.stochastic_frameskip,
      max_episode_steps=config.env.max_episode_steps, noop_max=config.env.noop_max)


class Phases:
  """The compiled programs of one env segment (they embed that segment's env step).

  Two programs: the initial-collection chunk and `run_epochs`, whose epoch count, env steps and update
  counts are traced, so the first epoch, the regular epochs and the final update-only epochs all run the
  same executable. Each is compiled ahead of time on first use; its FLOPs, memory and compile time are
  printed then.
  """

  def __init__(self, config, env_step: Callable, log=print, *, many_seeds: bool = False):
    self.log = log
    collect, epochs = ((train.initial_collect_chunk_many, train.run_epochs_many) if many_seeds
                       else (train.initial_collect_chunk, train.run_epochs))
    self._fns = {
        "collect": functools.partial(collect, config=config, env_step=env_step),
        "epochs": functools.partial(epochs, config=config, env_step=env_step),
    }
    self._compiled = {}
    self.last_compile_s = 0.0
    self.last_call_s = 0.0
    self.env_step = env_step
    self.data_parallel = None  # built on first use when the run is data parallel

  def __call__(self, phase: str, *args):
    self.last_compile_s = 0.0
    if phase not in self._compiled:
      t0 = time.time()
      compiled = jax.jit(self._fns[phase], donate_argnums=0).lower(*args).compile()
      self.last_compile_s = time.time() - t0
      self.log(describe_compiled(phase, compiled, self.last_compile_s))
      self._compiled[phase] = compiled
    t0 = time.time()
    out = jax.block_until_ready(self._compiled[phase](*args))  # the loop reads its metrics right away
    self.last_call_s = time.time() - t0
    return out


def start_segment(state: train.TrainState, config, segment: int, *, first: bool, log=print):
  """Truncates open episodes (unless this is the run's first segment) and attaches fresh train envs."""
  env = make_train_env(config, segment)
  env_state, env_step = env.functional(config.env.step_path)  # resets the envs
  obs = jnp.copy(env_state.obs)  # a buffer of its own: the state is donated to the compiled calls
  if not first:
    state = state.replace(replay=replay_lib.truncate_open_episodes(state.replay, state.obs))
  state = state.replace(
      env_state=env_state, obs=jnp.asarray(obs), is_first=jnp.ones((obs.shape[0],), bool))
  return env, _unalias(state), Phases(config, env_step, log)


def _unalias(tree):
  """Copies leaves that share a buffer with an earlier leaf (e.g. cached constants): the compiled calls
  donate the state, and one buffer cannot be donated twice."""
  seen = set()

  def fix(x):
    if not isinstance(x, jax.Array):
      return x
    ptr = x.unsafe_buffer_pointer() if x.is_fully_addressable and len(x.devices()) == 1 else id(x)
    if ptr in seen:
      return jnp.copy(x)
    seen.add(ptr)
    return x
  return jax.tree.map(fix, tree)


class _CallClock:
  """Host side of every compiled call of a run: wall time, time inside compiled calls, compile time; and
  the per-call bookkeeping (finite check, JSONL row, progress line) shared by `run` and `run_seeds`."""

  def __init__(self, logger: MetricsLogger, log, cfg):
    self.logger, self.log = logger, log
    # Updates of a regular epoch, for the ETA.
    self.updates_per_epoch = cfg.schedule.wm_updates_per_epoch + cfg.schedule.ac_updates_per_epoch
    self.start = time.time()
    self.compiled_s = 0.0
    self.compile_s = 0.0

  def add(self, phases: Phases) -> None:
    self.compiled_s += phases.last_call_s
    self.compile_s += phases.last_compile_s

  def record(self, metrics, state, plan, t0: float, phases: Phases, total_epochs: int) -> int:
    """Checks and logs one `epochs` call that started at `t0`; returns the epoch reached."""
    self.add(phases)
    metrics = _host(metrics)
    dt = time.time() - t0 - phases.last_compile_s
    epoch = int(state.epoch)
    _check_finite({k: v for k, v in metrics.items() if not k.startswith("collect/")},
                  f"epochs {epoch - plan[0] + 1}-{epoch}")
    row = _summarise(metrics, state, plan, dt)
    wall = time.time() - self.start - self.compile_s
    row["perf/compiled_fraction"] = self.compiled_s / max(wall, 1e-9)  # of wall time since the start,
    row["perf/wall_seconds"] = wall                                       # compiles excluded
    row["perf/compile_seconds"] = self.compile_s
    self.logger.write(epoch, row)
    self.log(_progress_line(row, epoch, total_epochs,
                            eta_seconds(row, epoch, total_epochs, self.updates_per_epoch, dt / plan[0])))
    return epoch


def _host(metrics) -> dict:
  return {k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()}


def _check_finite(metrics: dict, where: str) -> None:
  bad = [k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v, dtype=np.float64)))]
  if bad:
    raise TrainingError(f"non-finite {', '.join(sorted(bad))} in {where}; stopping without saving this state")


def train_and_evaluate(config, workdir: str, *, log=print) -> dict:
  """Runs (or resumes) a whole training run in `workdir` and returns its results dict."""
  return run(config, workdir, log=log)[1]


def run(config, workdir: str, *, stop_after_epoch: int | None = None, log=print):
  """Runs (or resumes) a training run; returns (final TrainState, results), or None when stopped early.

  `stop_after_epoch` stops right after the checkpoint at that epoch (used to test exact resume).
  """
  cfg = config_lib.freeze(config)
  envs.check_game(cfg.game)  # before touching the workdir
  resumed = ckpt_lib.check_or_write_config(workdir, config)
  checkpointer = ckpt_lib.Checkpointer(workdir, cfg.run.checkpoints_to_keep)
  logger = MetricsLogger(workdir, enabled=parallel.is_main_process())
  s = cfg.schedule
  mesh = None if cfg.parallel.num_devices == 1 else parallel.make_mesh(cfg.parallel.num_devices)
  num_devices = 1 if mesh is None else mesh.devices.size
  log(f"jedi_jax: game={cfg.game} seed={cfg.seed} preset={cfg.preset} wm={cfg.wm.kind} "
      f"platform={jax.devices()[0].platform} devices used={num_devices} of {jax.device_count()} "
      f"global batch={cfg.optim.batch_size} per device={cfg.optim.batch_size // num_devices} workdir={workdir}")
  if mesh is not None:
    parallel.per_device_batch(cfg.optim.batch_size, mesh)  # validates before any work

  # Template state (also the fresh state of a new run).
  env, state, phases = start_segment(
      train.init_train_state(
          cfg, _num_actions(cfg), jax.random.PRNGKey(cfg.seed), env_state=None,
          obs=np.zeros((cfg.env.num_envs, 64, 64, 3), np.uint8)),
      cfg, segment=0, first=True, log=log)
  extra = {"num_epochs_collect": np.int64(-1)}
  restored = checkpointer.restore_latest(state, extra) if resumed else None
  if restored is not None:
    epoch, state, extra = restored
    log(f"resumed from the checkpoint at epoch {epoch} ({int(state.env_steps)} env steps)")
    env.close()
    env, state, phases = start_segment(state, cfg, segment=epoch, first=False, log=log)
  num_epochs_collect = int(extra["num_epochs_collect"])

  clock = _CallClock(logger, log, cfg)
  # 1. Initial collection.
  if num_epochs_collect < 0:
    while True:
      state, _ = phases("collect", state)
      clock.add(phases)
      steps = int(state.env_steps)
      minority = int(train.minority_reward_count(state.replay))
      if steps >= s.initial_min_steps and (minority >= s.initial_reward_threshold or steps >= s.initial_max_steps):
        break
    log(f"initial collection: {steps} env steps, {minority} transitions of minority reward classes")
    remaining = s.total_env_steps - steps
    num_epochs_collect = max(0, math.ceil(remaining / s.steps_per_epoch))
    extra = {"num_epochs_collect": np.int64(num_epochs_collect)}
  total_epochs = num_epochs_collect + s.num_final_epochs

  # 2-4. Epochs.
  while int(state.epoch) < total_epochs:
    epoch = int(state.epoch)
    plan = epoch_plan(epoch, num_epochs_collect, total_epochs, cfg)
    t0 = time.time()
    if mesh is None:
      state, metrics = phases("epochs", state, train.make_plan(*plan))
    else:
      state, metrics = _data_parallel_epochs(state, plan, cfg, mesh, phases, log)
    done = clock.record(metrics, state, plan, t0, phases, total_epochs)
    if done % cfg.run.checkpoint_every == 0 or done == total_epochs:
      checkpointer.save(done, state, extra)
      if stop_after_epoch is not None and done >= stop_after_epoch:
        env.close()
        logger.close()
        return None
      if done < num_epochs_collect and cfg.run.env_segments:
        env.close()
        env, state, phases = start_segment(state, cfg, segment=done, first=False, log=log)
  env.close()
  train_seconds = time.time() - clock.start
  if mesh is not None:  # evaluation acts on one device (the env step never enters the mesh)
    state = jax.device_put(state, jax.devices()[0])

  # 5. Evaluation.
  returns = evaluate(state, cfg, num_episodes=cfg.env.num_test_episodes)
  results = _results(cfg, state, returns, train_seconds)
  if parallel.is_main_process():
    write_results(workdir, results)
  logger.write(int(state.epoch), {"test/return_mean": results["score"], "test/return_std": results["score_std"]})
  logger.close()
  log(f"final score ({len(returns)} test episodes): {results['score']:.2f} +- {results['score_std']:.2f}")
  return state, results


def epoch_plan(epoch: int, num_epochs_collect: int, total_epochs: int, cfg) -> tuple[int, int, int, int]:
  """(epochs, env steps per epoch, wm updates, ac updates) of the next call, starting after `epoch`.

  Epoch 1 is DIAMOND's long first epoch; a call never crosses a checkpoint or the end of collection.
  """
  s = cfg.schedule
  if epoch == 0:
    return (1, s.steps_per_epoch, s.wm_updates_first_epoch, s.ac_updates_first_epoch)
  collecting = epoch < num_epochs_collect
  boundary = num_epochs_collect if collecting else total_epochs
  next_ckpt = (epoch // cfg.run.checkpoint_every + 1) * cfg.run.checkpoint_every
  n = min(s.epochs_per_call, boundary - epoch, next_ckpt - epoch)
  return (n, s.steps_per_epoch if collecting else 0, s.wm_updates_per_epoch, s.ac_updates_per_epoch)


def _results(cfg, state, returns, train_seconds: float) -> dict:
  return {
      "game": cfg.game, "seed": int(cfg.seed), "score": float(np.mean(returns)),
      "score_std": float(np.std(returns)), "config_hash": config_lib.config_hash(cfg),
      "preset": cfg.preset, "wm_kind": cfg.wm.kind, "num_test_episodes": len(returns),
      "episode_returns": [float(r) for r in returns], "env_steps": int(state.env_steps),
      "epochs": int(state.epoch), "train_seconds": round(train_seconds, 1),
  }


def _data_parallel_epochs(state, plan, cfg, mesh, phases, log):
  """`plan[0]` epochs, each a collect call on device 0 and an update call on the mesh (parallel.py)."""
  if phases.data_parallel is None:
    phases.data_parallel = parallel.DataParallelEpoch(cfg, mesh, phases.env_step)
  env_state = state.env_state
  state = parallel.replicate(state.replace(env_state=None), mesh)
  sums, t_collect, t_update = None, 0.0, 0.0
  num_epochs, collect_steps, wm_updates, ac_updates = plan
  for _ in range(num_epochs):
    state, env_state, metrics, tc, tu = phases.data_parallel(
        state, env_state, train.make_plan(1, collect_steps, wm_updates, ac_updates), collect=collect_steps > 0)
    t_collect, t_update = t_collect + tc, t_update + tu
    sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
  metrics = {k: v if k.startswith("collect/") else v / num_epochs for k, v in sums.items()}
  phases.last_compile_s, phases.last_call_s = 0.0, t_collect + t_update
  metrics["perf/collect_call_seconds"] = jnp.asarray(t_collect / num_epochs)
  metrics["perf/update_call_seconds"] = jnp.asarray(t_update / num_epochs)
  return state.replace(env_state=env_state), metrics


def _num_actions(cfg) -> int:
  return envs.num_actions(cfg.game, cfg.env.backend)


def _summarise(metrics: dict, state, plan, dt: float) -> dict:
  """One JSONL row per host call: mean losses, collection and speed figures."""
  num_epochs, collect_steps, wm_updates, ac_updates = plan
  row = {k: float(np.mean(v)) for k, v in metrics.items() if not k.startswith("collect/")}
  c = {k[len("collect/"):]: float(np.sum(v)) for k, v in metrics.items() if k.startswith("collect/")}
  if collect_steps:
    if c["games_finished"] > 0:
      row["collect/game_return"] = c["games_return_sum"] / c["games_finished"]
      row["collect/game_length"] = c["games_length_sum"] / c["games_finished"]
    row["collect/games_finished"] = int(c["games_finished"])
    row["collect/life_losses"] = int(c["life_losses"])
    row["collect/reward_per_step"] = c["reward_sum"] / (num_epochs * collect_steps)
    row["perf/env_steps_per_s"] = num_epochs * collect_steps / dt
  row["perf/updates_per_s"] = num_epochs * (wm_updates + ac_updates) / dt
  row["perf/seconds_per_epoch"] = dt / num_epochs
  row["env_steps"] = int(state.env_steps)
  row["wm_updates"] = int(state.wm_updates)
  row["ac_updates"] = int(state.ac_updates)
  return row


def eta_seconds(row: dict, epoch: int, total: int, updates_per_epoch: int, seconds_per_epoch: float) -> float:
  """Time left: the remaining epochs' updates at this call's update rate. Updates dominate an epoch's time,
  and the first epoch (thousands of updates) would otherwise be extrapolated to every remaining epoch; a
  schedule without updates falls back to this call's seconds per epoch."""
  rate = row.get("perf/updates_per_s", 0.0)
  if updates_per_epoch > 0 and rate > 0:
    return (total - epoch) * updates_per_epoch / rate
  return (total - epoch) * seconds_per_epoch


def _progress_line(row: dict, epoch: int, total: int, eta_s: float) -> str:
  parts = [f"epoch {epoch}/{total}", f"env_steps {row['env_steps']}"]
  for k in ("wm/loss", "ac/loss", "collect/game_return"):
    if k in row:
      parts.append(f"{k} {row[k]:.4g}")
  parts.append(f"{row['perf/updates_per_s']:.3g} upd/s")  # paper sizes on a CPU: ~0.02
  parts.append(f"ETA {_fmt_time(eta_s)}")
  return " | ".join(parts)


def _fmt_time(s: float) -> str:
  s = int(max(s, 0))
  return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s"


def write_results(workdir: str, results: dict) -> None:
  """`results.json` (read by experiments/tables.py) and a DIAMOND-format `{game: [score]}` file."""
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(workdir, "scores_diamond_format.json"), "w") as f:
    json.dump({results["game"]: [results["score"]]}, f, indent=1)


# ------------------------------------------------------------------------------------------------
# Evaluation: full games (train=False env), epsilon 0, in parallel envs with a per-env episode quota
# (taking the first N finished games of a parallel pool would favour short games).
# ------------------------------------------------------------------------------------------------

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


def evaluate(state: train.TrainState, config, num_episodes: int, chunk: int = 100) -> list[float]:
  """Mean-return protocol of DIAMOND's final test: `num_episodes` full games with epsilon 0."""
  def act(params, policy_state, obs, is_first, key):
    ac_params, wm_params = params
    return agent.act(ac_params, wm_params, policy_state, obs, is_first, key, config.ac.epsilon_test, config)
  n_envs = min(config.env.num_test_envs, num_episodes)
  return evaluate_policy(act, (state.ac_params, state.wm_params), agent.ac_initial_state(config, n_envs),
                         config, num_episodes, jax.random.fold_in(state.key, 1_000_003), chunk)


def evaluate_random(config, num_episodes: int, chunk: int = 100) -> list[float]:
  """The uniform-random policy under exactly the protocol of `evaluate` (same test envs and seeds)."""
  num_actions = _num_actions(config)

  def act(params, policy_state, obs, is_first, key):
    return policy_state, jax.random.randint(key, (obs.shape[0],), 0, num_actions)
  return evaluate_policy(act, (), (), config, num_episodes, jax.random.PRNGKey(config.seed), chunk)


def evaluate_policy(act: Callable, params, policy_state, config, num_episodes: int, key: jax.Array,
                    chunk: int = 100) -> list[float]:
  """Returns of `num_episodes` full test games (train=False env) played by `act` in parallel envs.

  `act(params, policy_state, obs, is_first, key) -> (policy_state, actions)` is traced inside the scan.
  Each of the `env.num_test_envs` envs plays a fixed quota of games, so short games are not favoured.
  """
  n_envs = min(config.env.num_test_envs, num_episodes)
  quota = np.full(n_envs, num_episodes // n_envs) + (np.arange(n_envs) < num_episodes % n_envs)
  env = envs.make_env(
      config.game, n_envs, test_env_seed(config.seed, n_envs), train=False, backend=config.env.backend,
      stochastic_frameskip=config.env.stochastic_frameskip, max_episode_steps=config.env.max_episode_steps,
      noop_max=config.env.noop_max)
  env_state, env_step = env.functional(config.env.step_path)
  obs = env_state.obs
  run = jax.jit(functools.partial(_eval_chunk, act=act, env_step=env_step, num_steps=chunk))
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


# ------------------------------------------------------------------------------------------------
# Many seeds of one game in one program (jax.vmap over the training state; one pooled env).
# ------------------------------------------------------------------------------------------------

def seed_config(config, seed: int):
  """The single-seed config of one packed seed (its results carry this config's hash)."""
  c = config_lib.to_config_dict(config)
  c.seed = seed
  return config_lib.freeze(c)


def run_seeds(config, workdir: str, num_seeds: int, *, stop_after_epoch: int | None = None, log=print):
  """Trains seeds config.seed .. config.seed + num_seeds - 1 together; returns (stacked state, [results]).

  Seed k's envs are envs k*E .. k*E+E-1 of one pool seeded so that they are exactly the envs of a
  single-seed run with that seed; its keys are `PRNGKey(seed + k)`. One difference from separate runs:
  the initial collection lasts until *every* seed meets DIAMOND's stopping rule (they share the env
  pool), so a seed may collect up to `initial_max_steps - initial_min_steps` more random steps than alone.
  Each seed writes `workdir/seed_<s>/results.json`; metrics.jsonl holds the mean over seeds.
  """
  cfg = config_lib.freeze(config)
  envs.check_game(cfg.game)
  resumed = ckpt_lib.check_or_write_config(workdir, config)
  checkpointer = ckpt_lib.Checkpointer(workdir, cfg.run.checkpoints_to_keep)
  logger = MetricsLogger(workdir, enabled=parallel.is_main_process())
  s = cfg.schedule
  seeds = [cfg.seed + k for k in range(num_seeds)]
  e = cfg.env.num_envs
  log(f"jedi_jax: game={cfg.game} seeds={seeds} (vmapped in one program) preset={cfg.preset} "
      f"wm={cfg.wm.kind} platform={jax.devices()[0].platform} workdir={workdir}")

  num_actions = _num_actions(cfg)
  # Initialised one seed at a time (not vmapped): the initialisers' RNG need not give a vmapped key the
  # values it gives the same key alone, and packed seeds must start exactly like single runs.
  per_seed = [train.init_train_state(cfg, num_actions, jax.random.PRNGKey(sd), env_state=None,
                                     obs=jnp.zeros((e, 64, 64, 3), jnp.uint8)) for sd in seeds]
  states = jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed)
  del per_seed

  def start(states, segment, first):
    env = make_train_env(cfg, segment, num_seeds)
    pool_state, env_step = env.functional(cfg.env.step_path)
    obs = jnp.copy(pool_state.obs).reshape((num_seeds, e, 64, 64, 3))
    if not first:
      states = states.replace(replay=jax.vmap(replay_lib.truncate_open_episodes)(states.replay, states.obs))
    states = states.replace(obs=obs, is_first=jnp.ones((num_seeds, e), bool))
    return env, _unalias(states), pool_state, Phases(cfg, env_step, log, many_seeds=True)

  env, states, pool_state, programs = start(states, 0, True)
  extra = {"num_epochs_collect": np.int64(-1)}
  restored = checkpointer.restore_latest(states, extra) if resumed else None
  if restored is not None:
    epoch, states, extra = restored
    log(f"resumed from the checkpoint at epoch {epoch}")
    env.close()
    env, states, pool_state, programs = start(states, epoch, False)
  num_epochs_collect = int(extra["num_epochs_collect"])

  clock = _CallClock(logger, log, cfg)
  if num_epochs_collect < 0:
    while True:
      states, pool_state, _ = programs("collect", states, pool_state)
      clock.add(programs)
      steps = int(states.env_steps[0])
      minority = np.asarray(jax.vmap(train.minority_reward_count)(states.replay))
      if steps >= s.initial_min_steps and (bool(np.all(minority >= s.initial_reward_threshold))
                                           or steps >= s.initial_max_steps):
        break
    log(f"initial collection: {steps} env steps per seed, minority reward transitions {minority.tolist()}")
    num_epochs_collect = max(0, math.ceil((s.total_env_steps - steps) / s.steps_per_epoch))
    extra = {"num_epochs_collect": np.int64(num_epochs_collect)}
  total_epochs = num_epochs_collect + s.num_final_epochs

  while int(states.epoch[0]) < total_epochs:
    epoch = int(states.epoch[0])
    plan = epoch_plan(epoch, num_epochs_collect, total_epochs, cfg)
    t0 = time.time()
    states, pool_state, metrics = programs("epochs", states, pool_state, train.make_plan(*plan))
    done = clock.record(metrics, jax.tree.map(lambda x: x[0], states), plan, t0, programs, total_epochs)
    if done % cfg.run.checkpoint_every == 0 or done == total_epochs:
      checkpointer.save(done, states, extra)
      if stop_after_epoch is not None and done >= stop_after_epoch:
        env.close()
        logger.close()
        return None
      if done < num_epochs_collect and cfg.run.env_segments:
        env.close()
        env, states, pool_state, programs = start(states, done, False)
  env.close()
  train_seconds = time.time() - clock.start

  all_results = []
  for k, sd in enumerate(seeds):
    state_k = jax.tree.map(lambda x: x[k], states)
    cfg_k = seed_config(config, sd)
    returns = evaluate(state_k, cfg_k, num_episodes=cfg.env.num_test_episodes)
    results = _results(cfg_k, state_k, returns, train_seconds)
    results["packed_seeds"] = seeds
    if parallel.is_main_process():
      os.makedirs(os.path.join(workdir, f"seed_{sd}"), exist_ok=True)
      write_results(os.path.join(workdir, f"seed_{sd}"), results)
    log(f"seed {sd}: final score ({len(returns)} test episodes): {results['score']:.2f}")
    all_results.append(results)
  logger.write(int(states.epoch[0]), {"test/return_mean": float(np.mean([r["score"] for r in all_results]))})
  logger.close()
  return states, all_results


def load_run(workdir: str, num_seeds: int = 1):
  """(frozen config, TrainState, epoch) of a run's newest readable checkpoint, for analysis; read-only.

  `num_seeds` > 1 for a `run_seeds` workdir: the state is then stacked over seeds (index it with
  `jax.tree.map(lambda x: x[k], state)`). The state has no env attached.
  """
  path = os.path.join(workdir, ckpt_lib.CONFIG_FILE)
  if not os.path.exists(path):
    raise ckpt_lib.WorkdirError(f"{workdir} holds no run ({ckpt_lib.CONFIG_FILE} missing)")
  with open(path) as f:
    import ml_collections  # pylint: disable=import-outside-toplevel
    cfg = config_lib.freeze(ml_collections.ConfigDict(json.load(f)))
  num_actions = _num_actions(cfg)
  per_seed = [train.init_train_state(cfg, num_actions, jax.random.PRNGKey(cfg.seed + k), env_state=None,
                                     obs=jnp.zeros((cfg.env.num_envs, 64, 64, 3), jnp.uint8))
              for k in range(num_seeds)]
  template = per_seed[0] if num_seeds == 1 else jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed)
  restored = ckpt_lib.Checkpointer(workdir, read_only=True).restore_latest(
      template, {"num_epochs_collect": np.int64(-1)})
  if restored is None:
    raise ckpt_lib.WorkdirError(f"no checkpoint in {workdir}")
  epoch, state, _ = restored
  return cfg, state, epoch
