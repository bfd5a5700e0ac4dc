r"""Compile every program of a run for a TPU on a CPU host (no TPU needed) and report its HBM and FLOPs.

  python -m experiments.aot_check --target=tpu-v5e --preset=atari100k --game=Breakout --json=results/aot/v5e.json
  python -m experiments.aot_check --target=tpu-v5e --preset=debug --compute_dtypes=float32,bfloat16 --json=/tmp/a.json

JAX compiles for a TPU it does not have: with `jax[tpu]` (libtpu) installed, `jax.experimental.topologies`
describes a TPU slice whose devices programs can be lowered and compiled for (the route of MaxText's
`train_compile.py` and axlearn's `run_aot_compilation.py`). Each program of a run is built exactly as the loop
builds it, for the TPU's env step (the host step, `env.step_path = "auto"`), with arguments of the run's
shapes placed on one chip (the data-parallel ones replicated over a 4-chip mesh), and compiled:

  collect            a chunk of the initial collection (loop.Programs "collect")
  epochs             `schedule.epochs_per_call` epochs: collection, world-model and actor-critic updates
  restep             re-stepping fresh envs through the replay on resume (loop.Programs "restep")
  evaluate           a 100-step chunk of the final test in `env.num_test_envs` envs (evaluate.chunk_program)
  wm_update          one world-model update (the unit of the run-time projection below)
  ac_update          one actor-critic update (imagination, losses, AdamW)
  dp_collect_rows    data parallel: one epoch's collection on the first chip (parallel.DataParallelEpoch)
  dp_update          data parallel: one epoch's updates on the 4-chip mesh

The JSON gives per program its compile time here, its HBM footprint on one chip (`memory_analysis`: arguments +
outputs + temporaries - donated aliases, plus the code) and XLA's FLOP and byte counts (`cost_analysis`), and a
roofline estimate max(FLOPs / peak, bytes / HBM bandwidth) from the chip's published figures: a lower bound,
never a measurement (XLA's own `optimal_seconds` came out negative for these programs). XLA counts the body of
a loop whose trip count it cannot see once, so the loop programs' FLOPs are not a call's; the projection of a
whole run uses the one-update programs and the schedule's update counts.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from experiments.tpu_targets import TARGETS, Target, tpu_devices  # noqa: E402  (sets libtpu's variables first)
from jedi_jax import config as config_lib  # noqa: E402


PROGRAMS = ("collect", "epochs", "restep", "evaluate", "wm_update", "ac_update", "dp_collect_rows", "dp_update")
MESH_CHIPS = 4

_TARGET = flags.DEFINE_enum("target", "tpu-v5e", sorted(TARGETS), "TPU chip to compile for.")
_PRESET = flags.DEFINE_enum("preset", "atari100k", sorted(config_lib.PRESETS), "Config preset.")
_GAME = flags.DEFINE_string("game", None, "Game (default: the preset's).")
_JSON = flags.DEFINE_string("json", None, "Write the report here (rewritten after each program).")
_PROGRAMS = flags.DEFINE_list("programs", list(PROGRAMS), f"Programs to compile, of {', '.join(PROGRAMS)}.")
_DTYPES = flags.DEFINE_list(
    "compute_dtypes", ["float32"], "run.compute_dtype values to compile each program for (float32, bfloat16); "
    "programs of a dtype other than float32 are named '<program>@<dtype>'.")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "Config overrides FIELD=VALUE (JSON values): optim.batch_size=16.")
flags.mark_flag_as_required("json")


def make_envs(cfg, platform: str) -> dict:
  """The train and test envs of a run on `platform` and their functional steps (`env.functional`)."""
  from jedi_jax import envs, evaluate, loop
  path = envs.step_path(cfg, platform)
  train_env = loop.make_train_env(cfg)
  test_env = evaluate.make_test_env(cfg, min(cfg.env.num_test_envs, cfg.env.num_test_episodes))
  return {"train": (train_env,) + train_env.functional(path), "test": (test_env,) + test_env.functional(path)}


def build_programs(cfg, devices: list, names=PROGRAMS, platform: str = "tpu", run_envs: dict | None = None) -> dict:
  """{name: (jax.jit object, argument shapes)} of the programs of a run of `cfg` on `platform` (its env step
  path), its arguments placed on `devices[0]` (the data-parallel ones replicated over `devices[:MESH_CHIPS]`).
  The programs step `run_envs` (`make_envs`), or envs made and closed here (enough to compile)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding

  from jedi_jax import agent, evaluate, loop, parallel, run_files, train

  one = SingleDeviceSharding(devices[0])
  mesh = Mesh(np.array(devices[:MESH_CHIPS]), (parallel.AXIS,))
  replicated = NamedSharding(mesh, P())

  def on(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)

  own_envs = run_envs is None
  run_envs = make_envs(cfg, platform) if own_envs else run_envs  # on a TPU their step is a host callback
  _, env_state, env_step = run_envs["train"]
  states = jax.eval_shape(lambda: run_files.template_states(cfg))
  programs = loop.Programs(cfg, env_step, log=lambda _: None)
  s = cfg.schedule
  plan = jax.eval_shape(lambda: train.make_plan(s.epochs_per_call, s.steps_per_epoch, s.wm_updates_per_epoch,
                                                s.ac_updates_per_epoch))
  out = {}
  if "collect" in names:
    out["collect"] = (programs.jitted("collect"), on((states, env_state), one))
  if "epochs" in names:
    out["epochs"] = (programs.jitted("epochs"), on((states, env_state, plan), one))
  if "restep" in names:
    out["restep"] = (programs.jitted("restep"), on((env_state, states.replay, states.obs), one))
  if "wm_update" in names:
    out["wm_update"] = (jax.jit(lambda st: train.world_model_step(st, cfg), donate_argnums=0), on((states,), one))
  if "ac_update" in names:
    out["ac_update"] = (jax.jit(lambda st: train.actor_critic_step(st, cfg), donate_argnums=0), on((states,), one))
  if "evaluate" in names:
    n = min(cfg.env.num_test_envs, cfg.env.num_test_episodes)
    _, test_state, test_step = run_envs["test"]
    args = ((states.ac_params, states.wm_params), agent.ac_initial_state(cfg, n), test_state.obs,
            jnp.ones((n,), bool), test_state, states.key)
    out["evaluate"] = (evaluate.chunk_program(evaluate.trained_policy(cfg), test_step, 100),
                       on(jax.eval_shape(lambda: args), one))
  if {"dp_collect_rows", "dp_update"} & set(names):
    dp = parallel.DataParallelEpoch(cfg, mesh, env_step, log=lambda _: None)
    small = states.replace(replay=None, wm_opt_state=None, ac_opt_state=None, env_state=None)
    _, _, rows, _ = jax.eval_shape(dp.jitted("collect_rows"), small, env_state)
    if "dp_collect_rows" in names:
      out["dp_collect_rows"] = (dp.jitted("collect_rows"), on((small, env_state), one))
    if "dp_update" in names:
      out["dp_update"] = (dp.jitted("update"), on((states, rows, plan), replicated))
  if own_envs:
    run_envs["train"][0].close()
    run_envs["test"][0].close()
  return out


def report(name: str, jitted, args, target: Target) -> dict:
  """Compiles one program for the target; its row of the JSON."""
  from jedi_jax import logs
  t0 = time.time()
  compiled = jitted.trace(*args).lower().compile()
  seconds = time.time() - t0
  c = logs.compiled_costs(compiled)
  hbm = c["peak_bytes"] + c["generated_code_size_in_bytes"]
  row = {"compile_seconds": round(seconds, 1), "hbm_bytes": int(hbm), "flops": c["flops"],
         "bytes_accessed": c["bytes_accessed"],
         "estimated_seconds": max(c["flops"] / target.peak_flops, c["bytes_accessed"] / target.hbm_bytes_per_s),
         "fits": bool(hbm <= target.hbm_bytes)}
  for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes"):
    row[k] = int(c[k])
  if not row["fits"]:
    row["advice"] = advice(name, row, target)
  return row


def advice(name: str, row: dict, target: Target) -> str:
  """What to change when a program does not fit the chip's HBM."""
  over = (row["hbm_bytes"] - target.hbm_bytes) / 2**30
  return (f"{name} needs {row['hbm_bytes'] / 2**30:.2f} GiB, {over:.2f} GiB over the chip's "
          f"{target.hbm_bytes / 2**30:.0f} GiB: temporaries {row['temp_size_in_bytes'] / 2**30:.2f} GiB, "
          f"arguments {row['argument_size_in_bytes'] / 2**30:.2f} GiB. Lower optim.batch_size per chip "
          "(data parallel: more chips, parallel.num_devices), run.compute_dtype=bfloat16, or a smaller "
          "env.num_test_envs for evaluate")


def project_run(cfg, programs: dict, target: Target) -> dict:
  """Roofline estimate of one whole run: the schedule's update counts times the one-update programs' estimates,
  plus the env steps' device share (the collect program per step). Env stepping on the host is not in it."""
  from jedi_jax import schedule
  s = cfg.schedule
  wm, ac = schedule.update_counts(cfg)
  per_step = programs["collect"]["estimated_seconds"] / s.steps_per_epoch
  seconds = (wm * programs["wm_update"]["estimated_seconds"] + ac * programs["ac_update"]["estimated_seconds"]
             + s.total_env_steps * per_step)
  return {"wm_updates": wm, "ac_updates": ac, "env_steps": s.total_env_steps,
          "initial_collection_steps_assumed": s.initial_min_steps, "estimated_seconds": seconds,
          "estimated_hours": seconds / 3600,
          "note": "roofline lower bound on one chip: max(FLOPs / peak bf16 FLOP/s, bytes / HBM bandwidth) per "
                  "program; host env steps, transfers and launch overheads not included"}


def check(configs: dict, target_name: str, path: str, names=PROGRAMS, log=print) -> dict:
  """Compiles `names` for every config of `configs` ({compute dtype: config}) for the target; writes the
  report to `path` after each program and returns it."""
  from jedi_jax import config as config_lib
  target = TARGETS[target_name]
  devices = tpu_devices(target)
  out = {"target": target_name, "topology": target.topology, "programs": {}, "config_hashes": {},
         "chip": {"peak_flops": target.peak_flops, "hbm_bytes": target.hbm_bytes,
                  "hbm_bytes_per_s": target.hbm_bytes_per_s}}
  for dtype, config in configs.items():
    cfg = config_lib.freeze(config)
    out["preset"], out["game"] = cfg.preset, cfg.game
    out["config_hashes"][dtype] = config_lib.config_hash(cfg)
    suffix = "" if dtype == "float32" else f"@{dtype}"
    rows = {}
    built = build_programs(cfg, devices, names)
    for name in names:  # in the order asked for
      jitted, args = built[name]
      r = rows[name] = out["programs"][name + suffix] = report(name, jitted, args, target)
      log(f"{name + suffix}: compiled in {r['compile_seconds']}s, HBM {r['hbm_bytes'] / 2**30:.2f} GiB"
          f"{'' if r['fits'] else ' (does NOT fit)'}, {r['flops'] / 1e9:.1f} GFLOP, "
          f"{r['bytes_accessed'] / 2**30:.2f} GiB accessed, roofline {r['estimated_seconds'] * 1e3:.2f} ms")
      if not r["fits"]:
        log(f"  {r['advice']}")
      if {"collect", "wm_update", "ac_update"} <= set(rows):
        out.setdefault("projected_run", {})[dtype] = project_run(cfg, rows, target)
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      with open(path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
  for dtype, p in out.get("projected_run", {}).items():
    log(f"projected run ({dtype}): {p['wm_updates']} wm + {p['ac_updates']} ac updates, {p['env_steps']} env "
        f"steps: roofline {p['estimated_hours']:.2f} h on one chip")
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  unknown = sorted(set(_PROGRAMS.value) - set(PROGRAMS)) + sorted(set(_DTYPES.value) - set(config_lib.COMPUTE_DTYPES))
  if unknown:
    print(f"error: unknown programs or compute dtypes: {', '.join(unknown)}", file=sys.stderr)
    sys.exit(1)
  configs = {}
  try:
    for dtype in _DTYPES.value:
      config = config_lib.get_config(_PRESET.value)
      config.game = _GAME.value or config.game
      for item in _OVERRIDES.value:
        field, value = item.split("=", 1)
        config_lib.set_field(config, field, json.loads(value))
      config.run.compute_dtype = dtype
      config_lib.validate(config)
      configs[dtype] = config
    tpu_devices(TARGETS[_TARGET.value])
  except (ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except Exception as e:  # libtpu missing or unusable: one line
    print(f"error: cannot describe a {_TARGET.value} slice ({type(e).__name__}: {str(e).splitlines()[0]}); "
          "install the tpu extra: pip install -e '.[tpu]'", file=sys.stderr)
    sys.exit(1)
  check(configs, _TARGET.value, _JSON.value, tuple(_PROGRAMS.value), log=lambda line: print(line, flush=True))


if __name__ == "__main__":
  app.run(main)
