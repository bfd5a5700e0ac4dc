"""JEDI (latent) vs DIAMOND (pixel) world model: size, compiled cost and step time, side by side.

For each model at the chosen preset's sizes (default: the paper's), it compiles
  * the training steps the loop runs, `train.world_model_step` (sampling both segments DIAMOND's trainer
    samples from a full replay, loss, gradient, AdamW) and `train.actor_critic_step` (sampling start
    segments, imagination, loss, gradient, AdamW),
  * `sample_next` (the 3-step Euler sampler of one imagination step),
  * imagination: `imagine` with H = 1 (burn-in + one step of policy, sampler and reward/end) and the full
    H = 15 rollout,
at batch size 32, reads XLA's cost analysis (FLOPs) and memory analysis (argument + output + temporary
bytes) of the compiled programs, and times them on the local device (median over a few calls after one
warm-up call). The last column is the pixel / latent ratio (the paper's claims: ~3x faster sampling, ~2.5x
faster training, ~43% less accelerator memory).

  python -m experiments.benchmark_world_model [--preset=atari100k] [--batch_size=32] [--repeats=3]

`--repeats 0` compiles and analyses only (FLOPs, XLA memory, compile time; no timed call), for a machine
too slow or too small to run the programs.
"""

from __future__ import annotations

import math
import resource
import statistics
import time

from absl import app
from absl import flags
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


def analyse(fn, *args, donate_argnums=()) -> dict:
  """Compiles jit(fn)(*args); returns the compiled callable, compile time, FLOPs and memory (bytes)."""
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
  compile_s = time.perf_counter() - start
  costs = logs.compiled_costs(compiled)
  return {"compiled": compiled, "compile_s": compile_s, "flops": costs["flops"],
          "temp_bytes": costs["temp_size_in_bytes"], "total_bytes": costs["peak_bytes"]}


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
  """The figures of one model: the training steps of `jedi_jax.train` as the loop runs them (sampling from a
  full replay, gradient, AdamW), the sampler and imagination."""
  c = config_lib.get_config(preset)
  c.wm.kind = kind
  c.optim.batch_size = batch_size
  c.replay.capacity = REPLAY_STEPS
  config = config_lib.freeze(c)
  rng = np.random.default_rng(0)
  state = filled_train_state(config, num_actions)
  params, ac_params = state.wm_params, state.ac_params
  counts = {k: sum(math.prod(x.shape) for x in jax.tree.leaves(v)) for k, v in params.items()}
  counts["actor_critic"] = sum(math.prod(x.shape) for x in jax.tree.leaves(ac_params))
  key = jax.random.PRNGKey(1)
  out = {"counts": counts}

  # The updates: train.world_model_step and train.actor_critic_step themselves.
  for name, step in (("update", train.world_model_step), ("ac_update", train.actor_critic_step)):
    res = analyse(lambda s, step=step: step(s, config), state, donate_argnums=0)
    res["step_s"] = time_steps(res["compiled"], jax.tree.map(jnp.copy, state), repeats)
    out[name] = res
  # The world-model gradient with a 1-step reward/end segment: (almost) the denoising part alone.
  n, p = config.wm.num_cond, config.wm.num_predictions
  short = wm.WorldModelBatch(dynamics=random_segment(rng, batch_size, n + p, num_actions),
                             rew_end=random_segment(rng, batch_size, 1, num_actions))
  out["update_dynamics"] = analyse(lambda prm, b, k: train.world_model_grads(prm, b, k, config), params, short, key)

  start = random_segment(rng, batch_size, n, num_actions)
  cond = jax.jit(wm.encode, static_argnums=2)(params, start.obs[:, :n], config)
  sample = lambda params, cond, act, key: wm.sample_next(params, cond, act, key, config)
  smp = analyse(sample, params, cond, start.act, key)
  smp["step_s"] = time_calls(lambda: smp["compiled"](params, cond, start.act, key), repeats)
  out["sample"] = smp
  for horizon in (1, config.ac.horizon):
    c_h = config_lib.get_config(preset)
    c_h.wm.kind, c_h.ac.horizon = kind, horizon
    cfg_h = config_lib.freeze(c_h)
    rollout = lambda p, a, s, k, cfg_h=cfg_h: agent.imagine(p, a, s, k, cfg_h)
    res = analyse(rollout, params, ac_params, start, key)
    res["step_s"] = time_calls(lambda res=res: res["compiled"](params, ac_params, start, key), repeats)
    out[f"imagine_h{horizon}"] = res
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


def _define_flags() -> None:
  """The launcher's flags, defined only when it runs as a script (experiments.benchmark imports it)."""
  flags.DEFINE_string("preset", "atari100k", "atari100k (paper sizes) or debug (a quick check).")
  flags.DEFINE_integer("batch_size", 32, "Batch size of every program.", lower_bound=1)
  flags.DEFINE_integer("num_actions", 18, "Actions of the game.", lower_bound=2)
  flags.DEFINE_integer("repeats", 3, "Timed calls; 0: compile and analyse only.", lower_bound=0)


def main(argv):
  del argv
  f = flags.FLAGS
  run(f.preset, f.batch_size, f.num_actions, f.repeats)


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
        "'denoising part' = the world-model gradient (train.world_model_grads) with a 1-step reward/end segment\n"
        "(compiled, not timed).\n"
        "XLA's cost analysis counts the reward/end LSTM scan body once (its input projection and heads are\n"
        "outside the loop, so the undercount is small).")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
