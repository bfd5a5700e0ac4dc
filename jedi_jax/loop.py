"""The host loop: one driver for a run of one seed or of K packed seeds, on one device or data parallel.

Nothing numerical happens here; it calls the compiled programs of `jedi_jax.train` along the schedule of
`jedi_jax.schedule`, logs, checkpoints, and finally evaluates (`jedi_jax.evaluate`):

  1. initial collection (untrained policy) in chunks of `steps_per_epoch`, until DIAMOND's stopping rule;
  2. epoch 1 with the long first-epoch update counts;
  3. regular epochs, K per compiled call, until 100k env steps are collected;
  4. the final update-only epochs;
  5. `num_test_episodes` full games with the test env (epsilon 0), written to `results.json` (`run_files`).

The train envs are created once per process and a checkpoint never cuts their games: games run across
checkpoints, and each program is compiled once per process (envpool's XLA step is bound to its pool, so a
new pool would mean a new program). A resumed run continues exactly like an uninterrupted one, whatever
`run.checkpoint_every`: a pure-JAX env state (`envs.is_pure`) is saved in the checkpoint and restored; Atari
envs (which cannot be snapshot) are created again and re-stepped with the replay's actions up to the
checkpoint (`jedi_jax.resume`).

Packed seeds (`run_seeds`): with a pure-JAX env, the one-seed programs are vmapped over the seeds, env state
included; envpool's step cannot be vmapped, so there one pool of K x E envs is stepped between a vmapped
policy and a vmapped replay write (`train.run_epochs_many`).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax import checkpoint as ckpt_lib
from jedi_jax import config as config_lib
from jedi_jax import diagnostics
from jedi_jax import envs
from jedi_jax import evaluate as evaluate_lib
from jedi_jax import parallel
from jedi_jax import resume
from jedi_jax import run_files
from jedi_jax import schedule
from jedi_jax import train
from jedi_jax.logs import MetricsLogger, compile_and_report


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a NaN loss); the last good checkpoint is kept."""


def env_seed(seed: int, num_envs: int) -> int:
  """Seed of the first train env of a run; env i gets seed + i. Linear in `seed` with slope `num_envs`, so
  one pool of K x E envs seeded for seed s gives seed s + k exactly the envs of a single run with that seed
  (packed seeds)."""
  return (seed * num_envs) % (2**31 - 1)


def make_train_env(config, num_seeds: int = 1):
  """The train envs of a run (of `num_seeds` packed seeds): created once per process."""
  return envs.make_env(
      config.game, config.env.num_envs * num_seeds, env_seed(config.seed, config.env.num_envs),
      train=True,
      backend=config.env.backend, stochastic_frameskip=config.env.stochastic_frameskip,
      max_episode_steps=config.env.max_episode_steps, noop_max=config.env.noop_max)


def _collect_one_seed(state, env_state, config, env_step):
  """`train.initial_collect_chunk` with the env state outside the TrainState (the packed seeds' signature)."""
  state, stats = train.initial_collect_chunk(state.replace(env_state=env_state), config, env_step)
  return state.replace(env_state=None), state.env_state, stats


def _epochs_one_seed(state, env_state, plan, config, env_step):
  """`train.run_epochs` with the env state outside the TrainState (the packed seeds' signature)."""
  state, metrics = train.run_epochs(state.replace(env_state=env_state), plan, config, env_step)
  return state.replace(env_state=None), state.env_state, metrics


def _restep_each_seed(env_state, replay, obs, env_step):
  """`resume.restep` vmapped over packed seeds that each have their own env state; reports the first
  diverging step over all seeds."""
  env_state, bad, what = jax.vmap(functools.partial(resume.restep, env_step=env_step))(env_state, replay, obs)
  first = jnp.argmin(jnp.where(bad < 0, jnp.iinfo(jnp.int32).max, bad))
  return env_state, bad[first], what[first]


class Programs:
  """The compiled programs of a process (they embed its train envs' step).

  `collect` (an initial-collection chunk), `epochs` (`run_epochs`: its epoch count, env steps and update
  counts are traced, so the first epoch, the regular epochs and the final update-only epochs all run the
  same executable) and, on resume, `restep`. Each takes `(states, env_state, ...)` and returns
  `(states, env_state, ...)`, for one seed or K packed seeds alike. Each is compiled ahead of time on
  first use; its FLOPs, memory and compile time are printed then, once per process.

  Packed seeds (`many_seeds`) with `vmap_env`: `env_state` has a leading seed axis and `env_step` steps one
  seed's envs, so the one-seed programs are vmapped whole; without it, `env_state` is one pool of every
  seed's envs (`train.run_epochs_many`).
  """

  def __init__(self, config, env_step: Callable, log=print, *, many_seeds: bool = False, vmap_env: bool = False):
    self.log = log
    bind = lambda f: functools.partial(f, config=config, env_step=env_step)
    if many_seeds and vmap_env:
      self._fns = {"collect": jax.vmap(bind(_collect_one_seed)),
                   "epochs": jax.vmap(bind(_epochs_one_seed), in_axes=(0, 0, None)),
                   "restep": functools.partial(_restep_each_seed, env_step=env_step)}
    else:
      collect, epochs = ((train.initial_collect_chunk_many, train.run_epochs_many) if many_seeds
                         else (_collect_one_seed, _epochs_one_seed))
      self._fns = {"collect": bind(collect), "epochs": bind(epochs),
                   "restep": functools.partial(resume.restep, env_step=env_step)}
    self._compiled = {}
    self.last_compile_s = 0.0
    self.last_call_s = 0.0
    self.env_step = env_step
    self.data_parallel = None  # built on first use when the run is data parallel

  def jitted(self, phase: str):
    """The program of `phase` as a `jax.jit` object (experiments/aot_check.py lowers it for a TPU)."""
    return jax.jit(self._fns[phase], donate_argnums=0)

  def __call__(self, phase: str, *args):
    self.last_compile_s = 0.0
    if phase not in self._compiled:
      self._compiled[phase], self.last_compile_s = compile_and_report(phase, self.jitted(phase), args, self.log)
    t0 = time.time()
    out = jax.block_until_ready(self._compiled[phase](*args))  # the loop reads its metrics right away
    self.last_call_s = time.time() - t0
    return out


def restore_envs(states: train.TrainState, env_state, programs: Programs, where: str, log=print):
  """Re-steps the freshly created train envs (`env_state`) through every step the replay recorded, checking
  each frame (`jedi_jax.resume`); returns their state at the checkpoint or raises `resume.ResumeError`."""
  replay = states.replay
  num_rows, capacity = int(np.ravel(replay.t)[0]), replay.act.shape[-1]
  resume.check_replay_holds_every_step(num_rows, capacity, where)
  env_state, bad, what = programs("restep", env_state, replay, states.obs)
  resume.check_restepped(bad, what, num_rows, where)
  log(f"re-stepped the train envs through the {num_rows} recorded steps per env in "
      f"{programs.last_call_s:.1f}s: every frame matches the replay")
  return env_state


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


class _CallRecorder:
  """Host side of every compiled call of a run: wall time, time inside compiled calls, compile time; and
  the per-call bookkeeping (finite check, JSONL row, progress line)."""

  def __init__(self, logger: MetricsLogger, log, cfg):
    self.logger, self.log = logger, log
    # Updates of a regular epoch, for the ETA.
    self.updates_per_epoch = cfg.schedule.wm_updates_per_epoch + cfg.schedule.ac_updates_per_epoch
    self.start = time.time()
    self.compiled_s = 0.0
    self.compile_s = 0.0

  def add(self, programs: Programs) -> None:
    self.compiled_s += programs.last_call_s
    self.compile_s += programs.last_compile_s

  def record(self, metrics: train.CallMetrics, state, plan, t0: float, programs: Programs, total_epochs: int,
             perf: dict | None = None) -> int:
    """Checks and logs one `epochs` call that started at `t0`; returns the epoch reached. `perf`: extra
    timing figures of the call for its row."""
    self.add(programs)
    metrics = jax.device_get(metrics)
    dt = time.time() - t0 - programs.last_compile_s
    epoch = int(state.epoch)
    update_means = _update_means(metrics)
    _check_finite(update_means, f"epochs {epoch - plan[0] + 1}-{epoch}")
    row = _summarise(update_means, metrics.collect, state, plan, dt)
    row.update(perf or {})
    wall = time.time() - self.start - self.compile_s
    row["perf/compiled_fraction"] = self.compiled_s / max(wall, 1e-9)  # of wall time since the start,
    row["perf/wall_seconds"] = wall                                       # compiles excluded
    row["perf/compile_seconds"] = self.compile_s
    row["perf/process_start"] = round(self.start, 3)                       # one value per process
    self.logger.write(epoch, row)
    warning = diagnostics.collapse_warning(row)
    if warning:
      self.log(warning)
    self.log(_progress_line(row, epoch, total_epochs,
                            schedule.eta_seconds(row, epoch, total_epochs, self.updates_per_epoch, dt / plan[0])))
    return epoch


def _update_means(metrics: train.CallMetrics) -> dict:
  """The learners' figures of a call as `wm/...` and `ac/...` row keys (means over packed seeds)."""
  row = {f"wm/{k}": float(np.mean(v)) for k, v in metrics.wm.items()}
  row.update({f"ac/{k}": float(np.mean(v)) for k, v in metrics.ac.items()})
  return row


def _check_finite(row: dict, where: str) -> None:
  bad = [k for k, v in row.items() if not np.isfinite(v)]
  if bad:
    raise TrainingError(f"non-finite {', '.join(sorted(bad))} in {where}; stopping without saving this state")


def train_and_evaluate(config, workdir: str, *, log=print) -> dict:
  """Runs (or resumes) a whole training run in `workdir` and returns its results dict."""
  return run(config, workdir, log=log)[1]


def run(config, workdir: str, *, stop_after_epoch: int | None = None, log=print):
  """Runs (or resumes) a training run of one seed; returns (final TrainState, results), or None when
  stopped early. `stop_after_epoch` stops right after the checkpoint at that epoch (tests, benchmarks)."""
  out = _drive(config, workdir, 1, stop_after_epoch, log)
  return None if out is None else (out[0], out[1][0])


def run_seeds(config, workdir: str, num_seeds: int, *, stop_after_epoch: int | None = None, log=print):
  """Trains seeds config.seed .. config.seed + num_seeds - 1 together; returns (stacked state, [results]).

  Seed k's envs are envs k*E .. k*E+E-1 of one pool seeded so that they are exactly the envs of a
  single-seed run with that seed; its keys are `PRNGKey(seed + k)`. One difference from separate runs:
  the initial collection lasts until *every* seed meets DIAMOND's stopping rule (they share the env
  pool), so a seed may collect up to `initial_max_steps - initial_min_steps` more random steps than alone.
  Each seed writes `workdir/seed_<s>/results.json`; metrics.jsonl holds the mean over seeds.
  """
  return _drive(config, workdir, num_seeds, stop_after_epoch, log)


def _first(x) -> int:
  """A counter of one seed, or of the first packed seed (they all step together)."""
  return int(np.ravel(jax.device_get(parallel.local(x)))[0])


def _drive(config, workdir: str, num_seeds: int, stop_after_epoch: int | None, log):
  """The host loop of `run` and `run_seeds`; returns (states, [results per seed]) or None."""
  cfg = config_lib.freeze(config)
  envs.check_game(cfg.game)  # before touching the workdir
  step_path = envs.step_path(cfg)  # refuses an explicit "xla" env step on a TPU
  packed = num_seeds > 1
  if packed and cfg.parallel.num_devices != 1:
    raise ValueError("--num_seeds > 1 trains on one device: set --config.parallel.num_devices=1 (packed seeds "
                     "are not data parallel)")
  mesh = None if cfg.parallel.num_devices == 1 else parallel.make_mesh(cfg.parallel.num_devices)
  num_devices = 1 if mesh is None else mesh.devices.size
  if mesh is not None:
    parallel.per_device_batch(cfg.optim.batch_size, mesh)  # validates before any work
  resumed = ckpt_lib.check_or_write_config(workdir, config)
  checkpointer = ckpt_lib.Checkpointer(workdir, cfg.run.checkpoints_to_keep, log=log)
  s = cfg.schedule
  seeds = [cfg.seed + k for k in range(num_seeds)]
  who = f"seeds={seeds} (vmapped in one program)" if packed else f"seed={cfg.seed}"
  log(f"jedi_jax: game={cfg.game} {who} preset={cfg.preset} wm={cfg.wm.kind} "
      f"platform={jax.devices()[0].platform} env step={step_path} processes={jax.process_count()} "
      f"devices used={num_devices} of {jax.device_count()} "
      f"global batch={cfg.optim.batch_size} per device={cfg.optim.batch_size // num_devices} workdir={workdir}")

  # The train envs, once per process; the state starts fresh or from the newest checkpoint.
  states = run_files.template_states(cfg, num_seeds)
  env = make_train_env(cfg, num_seeds)
  # A pure-JAX env state is checkpointed, and vmapped with the rest of the state over packed seeds.
  pure_env = envs.is_pure(cfg.env.backend, step_path)
  env_state, env_step = env.functional(  # resets the envs
      step_path, num_groups=num_seeds if pure_env else 1)
  programs = Programs(cfg, env_step, log, many_seeds=packed, vmap_env=pure_env)
  # The env state goes into checkpoints in one-process runs (orbax cannot save a process's own arrays in a
  # multi-process run: that resume re-steps the envs).
  save_env = pure_env and jax.process_count() == 1
  # Data parallel with a pure-JAX env: each device steps its own group of envs (parallel.sharded_collect_rows).
  group_step = (env.group_step(num_devices) if mesh is not None and pure_env and jax.process_count() == 1
                and cfg.env.num_envs % num_devices == 0 else None)
  extra = {"num_epochs_collect": np.int64(-1)}
  # Checkpoints written before env states were saved have none: they are resumed by re-stepping.
  restored = (checkpointer.restore_latest(states, dict(extra, env_state=env_state) if save_env else extra,
                                          optional=("env_state",)) if resumed else None)
  start_epoch = 0
  # Every input of the compiled programs is committed to this process's first device, fresh or restored
  # (orbax restores committed arrays, and a committed input lowers to different HLO): a resumed process
  # then builds exactly the fresh run's programs and finds them in the persistent compilation cache.
  # Re-stepping and collection run there in data-parallel runs too.
  device = jax.local_devices()[0]
  env_state = jax.device_put(env_state, device)
  if restored is None:
    # A buffer of its own: the states are donated to the compiled calls, the env state is not.
    states = jax.device_put(states.replace(obs=jnp.copy(env_state.obs).reshape(states.obs.shape)), device)
  else:
    start_epoch, states, extra = restored
    states = jax.device_put(states, device)
    log(f"resuming from the checkpoint at epoch {start_epoch} ({_first(states.env_steps)} env steps per seed)")
    if "env_state" in extra:
      env_state = jax.device_put(extra.pop("env_state"), device)
      log("restored the train envs' state from the checkpoint: nothing to re-step")
    else:  # Atari envs, or a pure-JAX run checkpointed before env states were saved
      try:
        env_state = restore_envs(states, env_state, programs, f"{workdir} at epoch {start_epoch}", log)
      except resume.ResumeError:
        env.close()
        raise
  if resumed and parallel.is_main_process():
    run_files.drop_metrics_after(workdir, start_epoch)  # rows the interrupted process wrote after it
  logger = MetricsLogger(workdir, enabled=parallel.is_main_process())
  states = _unalias(states)
  num_epochs_collect = int(extra["num_epochs_collect"])

  recorder = _CallRecorder(logger, log, cfg)
  # 1. Initial collection.
  if num_epochs_collect < 0:
    minority_count = jax.vmap(train.minority_reward_count) if packed else train.minority_reward_count
    while True:
      states, env_state, _ = programs("collect", states, env_state)
      recorder.add(programs)
      steps = _first(states.env_steps)
      minority = np.asarray(minority_count(states.replay))
      if schedule.initial_collection_done(steps, minority, s):
        break
    log(f"initial collection: {steps} env steps per seed, minority reward transitions {minority.tolist()}")
    num_epochs_collect = schedule.num_collect_epochs(steps, s)
    extra = {"num_epochs_collect": np.int64(num_epochs_collect)}
  total_epochs = schedule.total_epochs(num_epochs_collect, s)

  # 2-4. Epochs.
  while (epoch := _first(states.epoch)) < total_epochs:
    plan = schedule.epoch_plan(epoch, num_epochs_collect, total_epochs, cfg)
    t0 = time.time()
    if mesh is None:
      states, env_state, metrics = programs("epochs", states, env_state, train.make_plan(*plan))
      perf = None
    else:
      states, env_state, metrics, perf = _data_parallel_epochs(states, env_state, plan, cfg, mesh, programs,
                                                               group_step)
    seed0 = jax.tree.map(lambda x: x[0], states) if packed else parallel.local(states)
    done = recorder.record(metrics, seed0, plan, t0, programs, total_epochs, perf)
    if schedule.is_interim_test(done, total_epochs, cfg.run.get("test_every", 0)):
      t_test = time.time()
      tested = _test_seeds(states, config, seeds, mesh, device)
      means = [float(np.mean(returns)) for _, _, returns in tested]
      row = {"test/return_mean": float(np.mean(means)), "test/episodes": len(tested[0][2]),
             "env_steps": _first(states.env_steps), "perf/test_seconds": round(time.time() - t_test, 1)}
      if packed:
        row["test/return_mean_per_seed"] = means
      else:
        row["test/return_std"] = float(np.std(tested[0][2]))
      logger.write(done, row)
      log(f"interim test at epoch {done}: mean return {row['test/return_mean']:.2f} over "
          f"{row['test/episodes']} games{' per seed' if packed else ''}")
    if schedule.is_checkpoint(done, total_epochs, cfg.run.checkpoint_every):
      checkpointer.save(done, states, dict(extra, env_state=env_state) if save_env else extra)
      log(f"checkpoint saved at epoch {done}")
      if stop_after_epoch is not None and done >= stop_after_epoch:
        env.close()
        logger.close()
        return None
  env.close()
  train_seconds = time.time() - recorder.start
  if mesh is not None:  # evaluation acts on one device (the env step never enters the mesh)
    states = jax.device_put(parallel.local(states), device)

  # 5. Evaluation.
  all_results = []
  t_test = time.time()
  tested = _test_seeds(states, config, seeds)
  test_seconds = time.time() - t_test
  for (state_k, cfg_k, returns), sd in zip(tested, seeds):
    results = run_files.results(cfg_k, state_k, returns)
    if packed:
      results["packed_seeds"] = seeds
    if parallel.is_main_process():
      run_files.write_results(os.path.join(workdir, f"seed_{sd}") if packed else workdir, results)
    log(f"{f'seed {sd}: ' if packed else ''}final score ({len(returns)} test episodes): "
        f"{results['score']:.2f} +- {results['score_std']:.2f}")
    all_results.append(results)
  row = {"test/return_mean": float(np.mean([r["score"] for r in all_results])),
         "perf/train_seconds": round(train_seconds, 1), "perf/test_seconds": round(test_seconds, 1)}
  if not packed:
    row["test/return_std"] = all_results[0]["score_std"]
  logger.write(_first(states.epoch), row)
  logger.close()
  return states, all_results


def _test_seeds(states, config, seeds: list[int], mesh=None, device=None) -> list[tuple]:
  """[(state, config, test returns)] of each seed of `states` (stacked over seeds when there are several):
  `env.num_test_episodes` games of the final test (`evaluate.evaluate`: its envs, seeds, keys and epsilon).
  Reads the states only; a data-parallel state (`mesh`) is copied to `device` first."""
  if mesh is not None:
    states = jax.device_put(parallel.local(states), device)
  out = []
  for k, seed in enumerate(seeds):
    state_k = jax.tree.map(lambda x: x[k], states) if len(seeds) > 1 else states
    cfg_k = run_files.seed_config(config, seed) if len(seeds) > 1 else config_lib.freeze(config)
    out.append((state_k, cfg_k, evaluate_lib.evaluate(state_k, cfg_k, num_episodes=cfg_k.env.num_test_episodes)))
  return out


def _data_parallel_epochs(state, env_state, plan, cfg, mesh, programs, group_step=None):
  """`plan[0]` epochs, each a collect call (on device 0, or on the mesh with `group_step`) and an update call
  on the mesh (parallel.py); returns the state, the env state, the call's `CallMetrics` and the time spent in
  each kind of call."""
  if programs.data_parallel is None:
    programs.data_parallel = parallel.DataParallelEpoch(cfg, mesh, programs.env_step, programs.log, group_step)
  state = parallel.replicate(state, mesh)
  sums, t_collect, t_update, t_compile = None, 0.0, 0.0, 0.0
  num_epochs, collect_steps, wm_updates, ac_updates = plan
  for _ in range(num_epochs):
    state, env_state, metrics, tc, tu = programs.data_parallel(
        state, env_state, train.make_plan(1, collect_steps, wm_updates, ac_updates), collect=collect_steps > 0)
    t_collect, t_update = t_collect + tc, t_update + tu
    t_compile += programs.data_parallel.compile_seconds
    sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
  programs.last_compile_s, programs.last_call_s = t_compile, t_collect + t_update
  perf = {"perf/collect_call_seconds": t_collect / num_epochs, "perf/update_call_seconds": t_update / num_epochs}
  return state, env_state, train.mean_over_epochs(parallel.local(sums), num_epochs), perf


def _summarise(update_means: dict, collected: train.CollectStats, state, plan, dt: float) -> dict:
  """One JSONL row per host call: the learners' means, collection and speed figures."""
  num_epochs, collect_steps, wm_updates, ac_updates = plan
  row = diagnostics.rates_from_counts(update_means)
  c = {k: float(np.sum(v)) for k, v in collected._asdict().items()}  # summed over packed seeds too
  if collect_steps:
    if c["games_finished"] > 0:
      row["collect/game_return"] = c["games_return_sum"] / c["games_finished"]
      row["collect/game_length"] = c["games_length_sum"] / c["games_finished"]
    row["collect/games_finished"] = int(c["games_finished"])
    row["collect/life_losses"] = int(c["life_losses"])
    row["collect/reward_per_step"] = c["reward_sum"] / (num_epochs * collect_steps)
    # Compare with ac/imagined_reward_rate_{pos,neg} (docs/metrics.md).
    row["collect/reward_rate_pos"] = c["reward_pos"] / (num_epochs * collect_steps)
    row["collect/reward_rate_neg"] = c["reward_neg"] / (num_epochs * collect_steps)
    row["perf/env_steps_per_s"] = num_epochs * collect_steps / dt
  row["perf/updates_per_s"] = num_epochs * (wm_updates + ac_updates) / dt
  row["perf/seconds_per_epoch"] = dt / num_epochs
  row["env_steps"] = int(state.env_steps)
  row["wm_updates"] = int(state.wm_updates)
  row["ac_updates"] = int(state.ac_updates)
  return row


def _progress_line(row: dict, epoch: int, total: int, eta_s: float) -> str:
  parts = [f"epoch {epoch}/{total}", f"env_steps {row['env_steps']}"]
  for k in ("wm/loss", "ac/loss", "collect/game_return"):
    if k in row:
      parts.append(f"{k} {row[k]:.4g}")
  parts.append(f"{row['perf/updates_per_s']:.3g} upd/s")  # paper sizes on a CPU: ~0.02
  parts.append(f"ETA {schedule.fmt_time(eta_s)}")
  return " | ".join(parts)
