"""JEDI (latent) vs DIAMOND (pixel) world model: size, compiled cost and step time, side by side.

For each model at the chosen preset's sizes (default: the paper's) it compiles four programs:
  wm_update    `train.world_model_step` as the loop runs it (sampling both segments DIAMOND's trainer samples
               from a full replay, loss, gradient, AdamW)
  ac_update    `train.actor_critic_step` (sampling start segments, H-step imagination, loss, gradient, AdamW)
  sample_next  the 3-step Euler sampler of one imagination step
  imagine      the full H-step imagination (burn-in, then policy, sampler and reward/end per step)
(on a timed CPU run also two extras for the printed table, `--timed=...,extras`: the world-model gradient with a
1-step reward/end segment, the denoising part, and imagination with H = 1), reads XLA's cost analysis (FLOPs)
and memory analysis of the compiled programs and, on the local CPU, times them (median over `repeats` calls
after one warm-up call).
It prints the pixel / latent ratios and the three figures of the paper's claims (~3x faster sampling, ~2.5x
faster training, ~43% less accelerator memory) as this repository states its targets (docs/benchmarks.md):
the whole-update time ratio (wm_update + ac_update), the peak memory of the training programs (the larger of
wm_update and ac_update) of JEDI over DIAMOND's, and the sampling ratio.

  python -m experiments.benchmark_world_model [--preset=atari100k] [--batch_size=32] [--repeats=3]
      [--target=cpu|tpu-v5e|...] [--set=wm.remat=true ...] [--json=PATH]

`--repeats 0` compiles and analyses only (FLOPs, XLA memory, compile time; `seconds` null), for a machine too
slow or too small to run the programs. `--target=tpu-v5e` (or another chip of experiments/tpu_targets.py)
compiles the programs deviceless for one chip of that TPU on this host (libtpu; nothing is run, `seconds` is
null): XLA:CPU's buffer assignment is not an accelerator's, so memory is reported for both. `--set`
overrides config fields for both models alike (JSON values). The JSON:
  {"jedi"|"diamond": {"wm_update"|"ac_update"|"sample_next"|"imagine":
                      {"memory_bytes", "gflop", "compile_seconds", "seconds"}},
   "setup": {target, preset, batch_size, num_actions, repeats, overrides}, "ratios": {...}}
memory_bytes = arguments + outputs + temporaries - donated aliases + generated code (XLA `memory_analysis`).
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import time

from absl import app
from absl import flags

from experiments import tpu_targets  # before JAX: libtpu's variables for a deviceless TPU target
import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax import agent
from jedi_jax import config as config_lib
from jedi_jax import logs
from jedi_jax import replay as replay_lib
from jedi_jax import train
from jedi_jax import world_model as wm

# Replay steps of the benchmark state: enough 100-step episodes for every sampled segment; a step's cost does
# not depend on the capacity (the paper's 110k would only add 1.3 GB of arguments to every program).
REPLAY_STEPS = 1_000


def random_segment(rng: np.random.Generator, b: int, t: int, num_actions: int) -> replay_lib.Segment:
  """A replay `Segment` of random frames, all steps real."""
  return replay_lib.Segment(
      obs=jnp.asarray(rng.integers(0, 256, (b, t + 1) + wm.FRAME_SHAPE, dtype=np.uint8)),
      act=jnp.asarray(rng.integers(0, num_actions, (b, t)), jnp.int32),
      rew=jnp.asarray(rng.integers(-1, 2, (b, t)), jnp.float32),
      end=jnp.zeros((b, t), bool),
      trunc=jnp.zeros((b, t), bool),
      mask=jnp.ones((b, t), bool),
  )


def filled_train_state(config, num_actions: int, seed: int = 0):
  """A `train.TrainState` of one env whose replay is full of random frames (`replay.capacity` steps in
  100-step episodes, random actions, a reward every 7 steps): the training steps sample it as in a run."""
  state = train.init_train_state(config, num_actions, jax.random.PRNGKey(seed), env_state=None,
                                 obs=np.zeros((1,) + wm.FRAME_SHAPE, np.uint8))
  steps = config.replay.capacity
  rng = np.random.default_rng(seed)
  t = np.arange(steps)
  rows = train.Row(
      obs=jnp.asarray(rng.integers(0, 256, (steps, 1) + wm.FRAME_SHAPE, dtype=np.uint8)),
      act=jnp.asarray(rng.integers(0, num_actions, (steps, 1)), jnp.int32),
      rew=jnp.asarray((t % 7 == 0)[:, None], jnp.float32), end=jnp.asarray((t % 100 == 99)[:, None]),
      trunc=jnp.zeros((steps, 1), bool), valid=jnp.ones((steps, 1), bool))
  return state.replace(replay=jax.jit(train.add_rows)(state.replay, rows))


def time_steps(compiled, state, repeats: int) -> float:
  """Median wall time (s) of `state, _ = compiled(state)` (the state donated and threaded through)."""
  holder = [state]

  def call():
    holder[0], metrics = compiled(holder[0])
    return metrics
  return time_calls(call, repeats)


def abstract_on(tree, device):
  """ShapeDtypeStructs of `tree`'s arrays placed on `device` (to compile for a device this host lacks)."""
  from jax.sharding import SingleDeviceSharding
  sharding = SingleDeviceSharding(device)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def analyse(fn, *args, donate_argnums=(), device=None) -> dict:
  """Compiles jit(fn)(*args), for `device` (another platform's, deviceless) when given; returns the compiled
  callable, compile seconds, FLOPs and memory (bytes)."""
  if device is not None:
    args = abstract_on(args, device)
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate_argnums).trace(*args).lower().compile()
  compile_s = time.perf_counter() - start
  costs = logs.compiled_costs(compiled)
  return {"compiled": compiled, "compile_s": compile_s, "flops": costs["flops"],
          "temp_bytes": costs["temp_size_in_bytes"],
          "total_bytes": costs["peak_bytes"] + costs.get("generated_code_size_in_bytes", 0.0)}


def time_calls(call, repeats: int) -> float:
  """Median wall time (s) of `call()` over `repeats` calls after one warm-up call; NaN (no call) if 0."""
  if repeats == 0:
    return float("nan")
  jax.block_until_ready(call())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


PROGRAMS = ("wm_update", "ac_update", "sample_next", "imagine")
TRAINING_PROGRAMS = ("wm_update", "ac_update")


def model_config(kind: str, preset: str, batch_size: int, overrides: dict | None = None, **fields):
  """The frozen config of one model at `preset`'s sizes with the benchmark's replay, `overrides` ({dotted
  field: value}, the same for both models) and `fields` set."""
  c = config_lib.get_config(preset)
  c.wm.kind = kind
  c.optim.batch_size = batch_size
  config_lib.set_fields(c, dict(overrides or {}))
  config_lib.set_fields(c, fields)
  config_lib.validate(c)
  # A stand-in replay, smaller than the preset's budget (which validate checks the real one against): the
  # programs' shapes do not depend on its length beyond the sampled segments.
  c.replay.capacity = REPLAY_STEPS
  return config_lib.freeze(c)


def benchmark(kind: str, preset: str, batch_size: int, num_actions: int, repeats: int, target: str = "cpu",
              overrides: dict | None = None, timed: tuple = PROGRAMS, log=print) -> dict:
  """The figures of one model: the training steps of `jedi_jax.train` as the loop runs them (sampling from a
  full replay, gradient, AdamW), the sampler and imagination. On a TPU target compiled only; on the CPU the
  programs of `timed` are timed (when `repeats` > 0), and with "extras" in `timed` the table's extras (the
  denoising part, imagination with H = 1) too."""
  config = model_config(kind, preset, batch_size, overrides)
  device = None if target == "cpu" else tpu_device(target)
  run = device is None and repeats > 0
  reps = lambda name: repeats if run and name in timed else 0  # noqa: E731
  rng = np.random.default_rng(0)
  state = filled_train_state(config, num_actions)
  params, ac_params = state.wm_params, state.ac_params
  counts = {k: sum(math.prod(x.shape) for x in jax.tree.leaves(v)) for k, v in params.items()}
  counts["actor_critic"] = sum(math.prod(x.shape) for x in jax.tree.leaves(ac_params))
  key = jax.random.PRNGKey(1)
  out = {"counts": counts}

  def done(name, res):
    out[name] = res
    log(f"  {kind} {name}: compiled in {res['compile_s']:.1f} s, {res['total_bytes'] / 2**30:.2f} GiB, "
        f"{res['flops'] / 1e9:.1f} GFLOP" + (f", {res['step_s']:.3f} s per call" if reps(name) else ""), flush=True)

  # The updates: train.world_model_step and train.actor_critic_step themselves.
  for name, step in (("wm_update", train.world_model_step), ("ac_update", train.actor_critic_step)):
    res = analyse(lambda s, step=step: step(s, config), state, donate_argnums=0, device=device)
    res["step_s"] = time_steps(res["compiled"], jax.tree.map(jnp.copy, state), reps(name))
    done(name, res)
  n, p = config.wm.num_cond, config.wm.num_predictions
  extras = run and "extras" in timed  # not in a compile-only run (the denoising part is a paper-size compile)
  if extras:
    # The world-model gradient with a 1-step reward/end segment: (almost) the denoising part alone.
    short = wm.WorldModelBatch(dynamics=random_segment(rng, batch_size, n + p, num_actions),
                               rew_end=random_segment(rng, batch_size, 1, num_actions))
    out["update_dynamics"] = analyse(lambda prm, b, k: train.world_model_grads(prm, b, k, config),
                                     params, short, key)

  start = random_segment(rng, batch_size, n, num_actions)
  cond = jax.jit(wm.encode, static_argnums=2)(params, start.obs[:, :n], config)
  sample = lambda params, cond, act, key: wm.sample_next(params, cond, act, key, config)  # noqa: E731
  smp = analyse(sample, params, cond, start.act, key, device=device)
  smp["step_s"] = time_calls(lambda: smp["compiled"](params, cond, start.act, key), reps("sample_next"))
  done("sample_next", smp)
  horizons = (1, config.ac.horizon) if extras else (config.ac.horizon,)
  for horizon in horizons:
    # (Imagination never reads wm.share_encoder_pass, which needs a reward/end segment longer than H = 1 gives.)
    cfg_h = model_config(kind, preset, batch_size, overrides,
                         **{"ac.horizon": horizon, "wm.share_encoder_pass": False})
    rollout = lambda p, a, s, k, cfg_h=cfg_h: agent.imagine(p, a, s, k, cfg_h)  # noqa: E731
    res = analyse(rollout, params, ac_params, start, key, device=device)
    res["step_s"] = time_calls(lambda res=res: res["compiled"](params, ac_params, start, key),
                               reps("imagine" if horizon == config.ac.horizon else "extras"))
    if horizon == config.ac.horizon:
      done("imagine", res)
    else:
      out["imagine_h1"] = res
  return out


def tpu_device(target: str):
  """The first chip of a `target` TPU slice, described deviceless (experiments/tpu_targets.py)."""
  return tpu_targets.tpu_devices(tpu_targets.TARGETS[target])[0]


def peak_memory() -> tuple[str, float]:
  """(what, MiB): the device's peak bytes in use where it reports them (GPU/TPU), else the process's peak RSS."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return "device peak", stats["peak_bytes_in_use"] / 2**20
  return "process peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def summary(results: dict) -> dict:
  """The JSON of `results` (both models): per program memory_bytes, gflop, compile_seconds, seconds."""
  def row(r):
    seconds = r["step_s"]
    return {"memory_bytes": int(r["total_bytes"]), "gflop": r["flops"] / 1e9,
            "compile_seconds": round(r["compile_s"], 2), "seconds": None if math.isnan(seconds) else seconds}
  return {kind: {name: row(results[kind][name]) for name in PROGRAMS} for kind in ("jedi", "diamond")}


def ratios(table: dict) -> dict:
  """Whole-update time ratio (pixel / latent, wm_update + ac_update), training peak memory JEDI / DIAMOND (the
  larger of wm_update and ac_update), sampling time ratio (pixel / latent); None where not timed."""
  def whole(kind):
    s = [table[kind][p]["seconds"] for p in TRAINING_PROGRAMS]
    return None if None in s else sum(s)
  peak = {k: max(table[k][p]["memory_bytes"] for p in TRAINING_PROGRAMS) for k in ("jedi", "diamond")}
  sj, sd = table["jedi"]["sample_next"]["seconds"], table["diamond"]["sample_next"]["seconds"]
  wj, wd = whole("jedi"), whole("diamond")
  return {"whole_update_speedup": None if wj is None else wd / wj,
          "whole_update_seconds": {"jedi": wj, "diamond": wd},
          "training_peak_memory_bytes": peak,
          "training_peak_memory_jedi_over_diamond": peak["jedi"] / peak["diamond"],
          "sample_next_speedup": None if sj is None else sd / sj}


def run(preset: str, batch_size: int, num_actions: int, repeats: int, target: str = "cpu",
        overrides: dict | None = None, json_path: str | None = None, timed: tuple = PROGRAMS + ("extras",)
        ) -> dict:
  """Benchmarks both models, prints the side-by-side table and the ratios, writes `json_path`; returns the JSON."""
  overrides = dict(overrides or {})
  is_timed = target == "cpu" and repeats > 0
  print(f"target: {target}" + (f" ({jax.devices()[0].device_kind}, {jax.default_backend()})" if target == "cpu"
                               else " (compiled deviceless, not run)")
        + f", preset {preset}, batch {batch_size}, {num_actions} actions, "
        + (f"median of {repeats} after 1 warm-up" if is_timed else "compile and analyse only (no timed call)")
        + (f", overrides {overrides}" if overrides else ""), flush=True)
  results = {}
  for kind in ("jedi", "diamond"):  # latent first: a peak only grows, so the pixel model's shows after
    results[kind] = benchmark(kind, preset, batch_size, num_actions, repeats, target, overrides, tuple(timed))
    what, mib = peak_memory()
    results[kind]["peak"] = mib
    print(f"  {kind} done; {what} so far {mib:.0f} MiB", flush=True)
  if target == "cpu":
    report(results, config_lib.get_config(preset).ac.horizon, what)
  table = summary(results)
  r = ratios(table)
  print_ratios(r, target)
  out = dict(table, setup={"target": target, "preset": preset, "batch_size": batch_size,
                           "num_actions": num_actions, "repeats": repeats, "overrides": overrides,
                           "timed": [p for p in PROGRAMS if is_timed and p in timed]}, ratios=r)
  if json_path:
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
      json.dump(out, f, indent=1, sort_keys=True)
    print(f"wrote {json_path}")
  return out


def print_ratios(r: dict, target: str) -> None:
  peak = r["training_peak_memory_bytes"]
  print(f"\ntraining programs' peak memory ({target}): JEDI {peak['jedi'] / 2**30:.2f} GiB, DIAMOND "
        f"{peak['diamond'] / 2**30:.2f} GiB: JEDI / DIAMOND = {r['training_peak_memory_jedi_over_diamond']:.2f} "
        f"(target <= 0.57)")
  if r["whole_update_speedup"] is None:
    print("whole update (wm_update + ac_update) time ratio: not timed")
  else:
    s = r["whole_update_seconds"]
    print(f"whole update (wm_update + ac_update): JEDI {s['jedi']:.3f} s, DIAMOND {s['diamond']:.3f} s: "
          f"DIAMOND / JEDI = {r['whole_update_speedup']:.2f}x (target >= 3)")
    print(f"sample_next: DIAMOND / JEDI = {r['sample_next_speedup']:.2f}x (target >= 15)")


def parse_overrides(items) -> dict:
  """["wm.remat=true", ...] -> {"wm.remat": True, ...} (JSON values; a bare word stays a string)."""
  out = {}
  for item in items:
    field, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
    try:
      out[field] = json.loads(value)
    except json.JSONDecodeError:
      out[field] = value
  return out


TARGETS = ("cpu",) + tuple(sorted(tpu_targets.TARGETS))   # this CPU, or a TPU chip compiled for deviceless


def define_flags() -> None:
  """The world-model benchmark's own flags (also used by experiments/benchmark.py)."""
  flags.DEFINE_enum("target", "cpu", TARGETS, "cpu: compile and time here; a TPU chip: compile deviceless only.")
  flags.DEFINE_multi_string("set", [], "Config override for both models, FIELD=VALUE (JSON value): wm.remat=true.")
  flags.DEFINE_string("json", None, "Write the figures here (schema in experiments/benchmark_world_model.py).")
  flags.DEFINE_list("timed", list(PROGRAMS) + ["extras"],
                    "Programs to time with --repeats (the others are compiled only, seconds null); 'extras': "
                    "also compile the table's denoising part and time imagination with H = 1.")


def _define_flags() -> None:
  """The launcher's flags, defined only when it runs as a script (experiments.benchmark imports it)."""
  flags.DEFINE_string("preset", "atari100k", "atari100k (paper sizes) or debug (a quick check).")
  flags.DEFINE_integer("batch_size", 32, "Batch size of every program.", lower_bound=1)
  flags.DEFINE_integer("num_actions", 18, "Actions of the game.", lower_bound=2)
  flags.DEFINE_integer("repeats", 3, "Timed calls; 0: compile and analyse only.", lower_bound=0)
  define_flags()


def main(argv):
  del argv
  f = flags.FLAGS
  run(f.preset, f.batch_size, f.num_actions, f.repeats, f.target, parse_overrides(f.set), f.json, tuple(f.timed))


def report(results: dict, horizon: int, peak_what: str) -> None:
  """Prints the table: one row per figure, JEDI / DIAMOND / pixel-over-latent ratio."""

  rows = []
  components = ("encoder", "denoiser", "rew_end", "actor_critic")
  for comp in components:
    rows.append((f"params {comp}", *(results[k]["counts"].get(comp, 0) for k in ("jedi", "diamond")), "int"))
  rows.append(("params total", *(sum(results[k]["counts"].values()) for k in ("jedi", "diamond")), "int"))
  parts = (("wm_update", "wm update"), ("sample_next", "sample_next"), ("imagine_h1", "imagine H=1"),
           ("imagine", f"imagine H={horizon}"), ("ac_update", "ac update"))
  for part, label in parts:
    if part not in results["jedi"]:
      continue
    get = lambda k, f: results[k][part][f]  # noqa: E731
    rows.append((f"{label} GFLOP", get("jedi", "flops") / 1e9, get("diamond", "flops") / 1e9, "f"))
    rows.append((f"{label} memory MiB", get("jedi", "total_bytes") / 2**20, get("diamond", "total_bytes") / 2**20,
                 "f"))
    rows.append((f"{label} temp MiB", get("jedi", "temp_bytes") / 2**20, get("diamond", "temp_bytes") / 2**20, "f"))
    rows.append((f"{label} compile s", get("jedi", "compile_s"), get("diamond", "compile_s"), "f"))
    rows.append((f"{label} step s (median)", get("jedi", "step_s"), get("diamond", "step_s"), "f"))
    if part == "wm_update" and "update_dynamics" in results["jedi"]:
      get = lambda k, f: results[k]["update_dynamics"][f]  # noqa: E731
      rows.append(("  denoising part GFLOP", get("jedi", "flops") / 1e9, get("diamond", "flops") / 1e9, "f"))
      rows.append(("  denoising part memory MiB", get("jedi", "total_bytes") / 2**20,
                   get("diamond", "total_bytes") / 2**20, "f"))

  rows.append((f"{peak_what} MiB (cumulative)", results["jedi"]["peak"], results["diamond"]["peak"], "f"))
  print(f"\n{'':28s}{'JEDI (latent)':>16s}{'DIAMOND (pixel)':>18s}{'pixel/latent':>14s}")
  for name, jedi, diamond, fmt in rows:
    ratio = f"{diamond / jedi:14.2f}" if jedi else f"{'-':>14s}"
    if fmt == "int":
      print(f"{name:28s}{jedi:16,d}{diamond:18,d}{ratio}")
    else:
      print(f"{name:28s}{jedi:16.3f}{diamond:18.3f}{ratio}")
  print("\nmemory = argument + output + temporary bytes - donated aliases + generated code of the compiled program\n"
        "(XLA memory_analysis). 'denoising part' = the world-model gradient (train.world_model_grads) with a 1-step\n"
        "reward/end segment (compiled, not timed).\n"
        "XLA's cost analysis counts the reward/end LSTM scan body once (its input projection and heads are\n"
        "outside the loop, so the undercount is small).")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
