"""JEDI (latent) vs DIAMOND (pixel) world model: size, compiled cost and step time, side by side.

For each model at the chosen preset's sizes (default: the paper's), it compiles
  * the world-model update step (loss + gradient + AdamW update, both segments DIAMOND's trainer samples), and
  * `sample_next` (the 3-step Euler sampler of one imagination step),
  * imagination: `imagine` with H = 1 (burn-in + one step of policy, sampler and reward/end) and the full
    H = 15 rollout, and the actor-critic update (imagination + loss + gradient),
at batch size 32, reads XLA's cost analysis (FLOPs) and memory analysis (argument + output + temporary
bytes) of the compiled programs, and times them on the local device (median over a few calls after one
warm-up call). The last column is the pixel / latent ratio (the paper's claims: ~3x faster sampling, ~2.5x
faster training, ~43% less accelerator memory).

  python -m experiments.benchmark_world_model [--preset atari100k] [--batch_size 32] [--repeats 3]

`--repeats 0` compiles and analyses only (FLOPs, XLA memory, compile time; no timed call), for a machine
too slow or too small to run the programs.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jedi_jax import agent
from jedi_jax import config as config_lib
from jedi_jax import world_model as wm


def random_segment(rng: np.random.Generator, b: int, t: int, num_actions: int) -> dict:
  """A Segment (docs/CONTRACTS.md) of random frames, all steps real."""
  return {
      "obs": jnp.asarray(rng.integers(0, 256, (b, t + 1) + wm.FRAME_SHAPE, dtype=np.uint8)),
      "act": jnp.asarray(rng.integers(0, num_actions, (b, t)), jnp.int32),
      "rew": jnp.asarray(rng.integers(-1, 2, (b, t)), jnp.float32),
      "end": jnp.zeros((b, t), bool),
      "trunc": jnp.zeros((b, t), bool),
      "mask": jnp.ones((b, t), bool),
  }


def make_update_step(config):
  """(params, opt_state, batch, key) -> (params, opt_state, loss): one world-model update."""
  opt = wm.world_model_optimizer(config)

  def update(params, opt_state, batch, key):
    (loss, _), grads = jax.value_and_grad(wm.world_model_loss, has_aux=True)(params, batch, key, config)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return opt, update


def analyse(fn, *args) -> dict:
  """Compiles jit(fn)(*args); returns the compiled callable, compile time, FLOPs and memory (bytes)."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
  return {"compiled": compiled, "compile_s": compile_s, "flops": float(cost.get("flops", float("nan"))),
          "temp_bytes": mem.temp_size_in_bytes, "total_bytes": total}


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


def benchmark(kind: str, preset: str, batch_size: int, num_actions: int, repeats: int) -> dict:
  c = config_lib.get_config(preset)
  c.wm.kind = kind
  config = config_lib.freeze(c)
  rng = np.random.default_rng(0)
  params = wm.init_world_model(config, num_actions, jax.random.PRNGKey(0))
  counts = {k: sum(math.prod(x.shape) for x in jax.tree.leaves(v)) for k, v in params.items()}
  opt, update = make_update_step(config)
  opt_state = opt.init(params)
  n, p = config.wm.num_cond, config.wm.num_predictions
  batch = {"dynamics": random_segment(rng, batch_size, n + p, num_actions),
           "rew_end": random_segment(rng, batch_size, config.ac.horizon + n, num_actions)}
  key = jax.random.PRNGKey(1)

  upd = analyse(update, params, opt_state, batch, key)
  upd["step_s"] = time_calls(lambda: upd["compiled"](params, opt_state, batch, key), repeats)
  # The same update with a 1-step reward/end segment: (almost) the denoising part alone (compiled only).
  short = dict(batch, rew_end=random_segment(rng, batch_size, 1, num_actions))
  dyn = analyse(update, params, opt_state, short, key)

  cond_obs = batch["dynamics"]["obs"][:, :n]
  cond = jax.jit(wm.encode, static_argnums=2)(params, cond_obs, config)
  cond_act = batch["dynamics"]["act"][:, :n]
  sample = lambda params, cond, act, key: wm.sample_next(params, cond, act, key, config)
  smp = analyse(sample, params, cond, cond_act, key)
  smp["step_s"] = time_calls(lambda: smp["compiled"](params, cond, cond_act, key), repeats)

  ac_params = agent.init_actor_critic(config, num_actions, jax.random.PRNGKey(2))
  counts["actor_critic"] = sum(math.prod(x.shape) for x in jax.tree.leaves(ac_params))
  start = random_segment(rng, batch_size, n, num_actions)
  out = {"counts": counts, "update": upd, "update_dynamics": dyn, "sample": smp}
  for horizon in (1, config.ac.horizon):
    c_h = config_lib.get_config(preset)
    c_h.wm.kind, c_h.ac.horizon = kind, horizon
    cfg_h = config_lib.freeze(c_h)
    rollout = lambda p, a, s, k, cfg_h=cfg_h: agent.imagine(p, a, s, k, cfg_h)
    res = analyse(rollout, params, ac_params, start, key)
    res["step_s"] = time_calls(lambda res=res: res["compiled"](params, ac_params, start, key), repeats)
    out[f"imagine_h{horizon}"] = res
  ac_opt = agent.actor_critic_optimizer(config)
  ac_opt_state = ac_opt.init(ac_params)

  def ac_update(ac_params, ac_opt_state, params, start, key):
    (loss, _), grads = jax.value_and_grad(agent.actor_critic_loss_fn, has_aux=True)(
        ac_params, params, start, key, config)
    updates, ac_opt_state = ac_opt.update(grads, ac_opt_state, ac_params)
    return optax.apply_updates(ac_params, updates), ac_opt_state, loss

  acu = analyse(ac_update, ac_params, ac_opt_state, params, start, key)
  acu["step_s"] = time_calls(lambda: acu["compiled"](ac_params, ac_opt_state, params, start, key), repeats)
  out["ac_update"] = acu
  return out


def peak_memory() -> tuple[str, float]:
  """(what, MiB): the device's peak bytes in use where it reports them (GPU/TPU), else the process's peak RSS."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return "device peak", stats["peak_bytes_in_use"] / 2**20
  return "process peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def run(preset: str, batch_size: int, num_actions: int, repeats: int) -> None:
  """Benchmarks both models and prints the side-by-side table."""
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), preset {preset}, "
        f"batch {batch_size}, {num_actions} actions, "
        + (f"median of {repeats} after 1 warm-up" if repeats else "compile and analyse only (no timed call)"))
  results = {}
  for kind in ("jedi", "diamond"):  # latent first: a peak only grows, so the pixel model's shows after
    results[kind] = benchmark(kind, preset, batch_size, num_actions, repeats)
    what, mib = peak_memory()
    results[kind]["peak"] = mib
    print(f"  {kind} done; {what} so far {mib:.0f} MiB", flush=True)
  report(results, preset, what)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="atari100k", help="atari100k (paper sizes) or debug (a quick check)")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--num_actions", type=int, default=18)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls; 0: compile and analyse only")
  args = parser.parse_args()
  if args.repeats < 0 or args.batch_size < 1:
    parser.error("--repeats must be >= 0 and --batch_size >= 1")
  run(args.preset, args.batch_size, args.num_actions, args.repeats)


def report(results: dict, preset: str, peak_what: str) -> None:
  """Prints the table: one row per figure, JEDI / DIAMOND / pixel-over-latent ratio."""

  rows = []
  components = ("encoder", "denoiser", "rew_end", "actor_critic")
  for comp in components:
    rows.append((f"params {comp}", *(results[k]["counts"].get(comp, 0) for k in ("jedi", "diamond")), "int"))
  rows.append(("params total", *(sum(results[k]["counts"].values()) for k in ("jedi", "diamond")), "int"))
  horizon = config_lib.get_config(preset).ac.horizon
  parts = (("update", "wm update"), ("sample", "sample_next"), ("imagine_h1", "imagine H=1"),
           (f"imagine_h{horizon}", f"imagine H={horizon}"), ("ac_update", "ac update"))
  for part, label in parts:
    get = lambda k, f: results[k][part][f]
    rows.append((f"{label} GFLOP", get("jedi", "flops") / 1e9, get("diamond", "flops") / 1e9, "f"))
    rows.append((f"{label} memory MiB", get("jedi", "total_bytes") / 2**20, get("diamond", "total_bytes") / 2**20,
                 "f"))
    rows.append((f"{label} temp MiB", get("jedi", "temp_bytes") / 2**20, get("diamond", "temp_bytes") / 2**20, "f"))
    rows.append((f"{label} compile s", get("jedi", "compile_s"), get("diamond", "compile_s"), "f"))
    rows.append((f"{label} step s (median)", get("jedi", "step_s"), get("diamond", "step_s"), "f"))
    if part == "update":
      get = lambda k, f: results[k]["update_dynamics"][f]
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
  print("\nmemory = argument + output + temporary bytes of the compiled program (XLA memory_analysis).\n"
        "'denoising part' = the same update with a 1-step reward/end segment (compiled, not timed).\n"
        "XLA's cost analysis counts the reward/end LSTM scan body once (its input projection and heads are\n"
        "outside the loop, so the undercount is small).")


if __name__ == "__main__":
  main()
