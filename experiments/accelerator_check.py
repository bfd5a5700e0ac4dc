r"""Measure the paper-size programs on a real GPU or TPU: compile and step times, env steps/s, peak memory.

  python -m experiments.accelerator_check --json=results/accelerator/h100_breakout.json
  python -m experiments.accelerator_check --preset=debug --allow_cpu --json=/tmp/a.json     # a smoke run on CPU

One command meant to finish in a few minutes on one accelerator: the programs of `experiments/aot_check.py`
that the run's time is made of (`collect`, `wm_update`, `ac_update`, `evaluate`), built exactly as the loop
builds them for this platform's env step, compiled on the first local device (compile time), then called
`--calls` times on a fresh training state (its replay holds only the first frames: the shapes and the work of
an update are those of a real one). Writes per program compile seconds and the median seconds per call, env
steps/s of the collection, the device's peak memory, and a projected full run (the schedule's update counts
times the measured per-update times, plus the env steps at the measured rate).

Never run by the sessions that wrote it (no accelerator): its figures in docs/benchmarks.md are pending.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags

from jedi_jax import config as config_lib

PROGRAMS = ("collect", "wm_update", "ac_update", "evaluate")

_PRESET = flags.DEFINE_enum("preset", "atari100k", sorted(config_lib.PRESETS), "Config preset.")
_GAME = flags.DEFINE_string("game", None, "Game (default: the preset's).")
_JSON = flags.DEFINE_string("json", None, "Write the measurements here.")
_CALLS = flags.DEFINE_integer("calls", 5, "Timed calls per program (after one warm-up call).", lower_bound=1)
_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", list(config_lib.COMPUTE_DTYPES), "run.compute_dtype.")
_ALLOW_CPU = flags.DEFINE_bool("allow_cpu", False, "Run on a CPU too (a smoke run; figures are not the point).")
flags.mark_flag_as_required("json")


def _timed_calls(compiled, args, calls: int, donated: bool):
  """Median seconds per call of `compiled` (one warm-up call first). A donated first argument is replaced by
  the call's first output, so every call gets a live buffer."""
  import jax
  import numpy as np
  times = []
  for i in range(calls + 1):
    t0 = time.time()
    out = jax.block_until_ready(compiled(*args))
    if i:
      times.append(time.time() - t0)
    if donated:
      args = (out[0],) + tuple(args[1:])
  return float(np.median(times))


def measure(cfg, log=print) -> dict:
  import jax
  import jax.numpy as jnp

  from experiments import aot_check
  from jedi_jax import agent, envs, run_files, schedule

  device = jax.local_devices()[0]
  platform = jax.default_backend()
  out = {"platform": platform, "device": device.device_kind, "preset": cfg.preset, "game": cfg.game,
         "compute_dtype": config_lib.compute_dtype(cfg), "env_step_path": envs.step_path(cfg, platform),
         "programs": {}}
  run_envs = aot_check.make_envs(cfg, platform)  # the programs step these envs: kept open until the end
  built = aot_check.build_programs(cfg, [device], PROGRAMS, platform=platform, run_envs=run_envs)
  states = jax.device_put(run_files.template_states(cfg), device)
  env_state = jax.device_put(run_envs["train"][1], device)
  states = states.replace(obs=jnp.copy(env_state.obs).reshape(states.obs.shape))
  n = min(cfg.env.num_test_envs, cfg.env.num_test_episodes)
  test_state = jax.device_put(run_envs["test"][1], device)
  args = {"collect": lambda: (states, env_state),
          "wm_update": lambda: (states,),
          "ac_update": lambda: (states,),
          "evaluate": lambda: ((states.ac_params, states.wm_params), agent.ac_initial_state(cfg, n), test_state.obs,
                               jnp.ones((n,), bool), test_state, states.key)}
  for name in PROGRAMS:
    jitted, _ = built[name]
    a = jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, args[name]())
    t0 = time.time()
    compiled = jitted.lower(*a).compile()
    compile_s = time.time() - t0
    seconds = _timed_calls(compiled, a, _CALLS.value, donated=name != "evaluate")
    out["programs"][name] = {"compile_seconds": compile_s, "seconds_per_call": seconds}
    log(f"{name}: compiled in {compile_s:.1f}s, {seconds * 1e3:.1f} ms per call")
  run_envs["train"][0].close()
  run_envs["test"][0].close()
  s = cfg.schedule
  out["env_steps_per_s"] = s.steps_per_epoch / out["programs"]["collect"]["seconds_per_call"]
  stats = device.memory_stats() or {}
  out["peak_device_bytes"] = stats.get("peak_bytes_in_use")
  wm, ac = schedule.update_counts(cfg)
  p = out["programs"]
  seconds = (wm * p["wm_update"]["seconds_per_call"] + ac * p["ac_update"]["seconds_per_call"]
             + s.total_env_steps / out["env_steps_per_s"])
  out["projected_run"] = {"wm_updates": wm, "ac_updates": ac, "env_steps": s.total_env_steps,
                          "seconds": seconds, "hours": seconds / 3600,
                          "note": "measured per-call times times the schedule's counts; evaluation, checkpoints "
                                  "and compiles not included"}
  log(f"env steps/s {out['env_steps_per_s']:.0f}, peak device memory {out['peak_device_bytes']}, "
      f"projected run {seconds / 3600:.2f} h")
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import jax
  if jax.default_backend() == "cpu" and not _ALLOW_CPU.value:
    print("error: no GPU or TPU visible (jax.default_backend() == 'cpu'); --allow_cpu for a smoke run",
          file=sys.stderr)
    sys.exit(1)
  config = config_lib.get_config(_PRESET.value)
  config.game = _GAME.value or config.game
  config.run.compute_dtype = _DTYPE.value
  config_lib.validate(config)
  out = measure(config_lib.freeze(config), log=lambda line: print(line, flush=True))
  os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
  with open(_JSON.value, "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
  app.run(main)
