"""Agent steps per second of the Atari100k env paths, one line per (path, N).

Paths:
  envpool-xla       envpool's XLA step inside jit + lax.scan (`env.functional("xla")`)
  envpool-callback  the host step through io_callback inside jit + lax.scan (`functional("host")`)
  envpool-python    the gymnasium-style Python `env.step`
  ale-python        ale-py's vector env, Python `env.step`
  ale-xla           ale-py's XLA step inside jit + lax.scan
  ale-stochastic    the stochastic frame skip variant (per-env Python frame loop), Python `env.step`

"agent steps/s" counts env transitions: iterations x N. Random uniform actions (the game resets
whenever it ends, so resets are included).

Usage:
  python -m experiments.env_benchmark [--game=Breakout] [--num_envs=1,4,16] [--steps=500] [--paths=envpool-xla ...]
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from jedi_jax.envs import make_env

PATHS = ("envpool-xla", "envpool-callback", "envpool-python", "ale-python", "ale-xla",
         "ale-stochastic")


def time_python(env, actions: np.ndarray) -> float:
  """Seconds for len(actions) Python `env.step` calls (after a reset)."""
  env.reset()
  env.step(actions[0])
  start = time.perf_counter()
  for a in actions:
    env.step(a)
  return time.perf_counter() - start


def time_scan(env, path: str, actions: np.ndarray) -> float:
  """Seconds for one jit + lax.scan over actions [T, N] (compiled beforehand)."""
  state, step_fn = env.functional(path)
  run = jax.jit(lambda s, a: jax.lax.scan(step_fn, s, a))
  actions = jnp.asarray(actions)
  state, _ = jax.block_until_ready(run(state, actions))  # compile + warm up
  start = time.perf_counter()
  jax.block_until_ready(run(state, actions))
  return time.perf_counter() - start


def benchmark(path: str, game: str, num_envs: int, steps: int, seed: int) -> float:
  """Agent steps (transitions) per second of one path with num_envs envs."""
  backend = "envpool" if path.startswith("envpool") else "ale"
  env = make_env(game, num_envs, seed, train=True, backend=backend,
                 stochastic_frameskip=path == "ale-stochastic")
  actions = np.random.default_rng(seed).integers(0, env.num_actions, (steps, num_envs))
  actions = actions.astype(np.int32)
  try:
    if path in ("envpool-xla", "ale-xla"):
      seconds = time_scan(env, "xla", actions)
    elif path == "envpool-callback":
      seconds = time_scan(env, "host", actions)
    else:
      seconds = time_python(env, actions)
  finally:
    env.close()
  return steps * num_envs / seconds


def _define_flags() -> None:
  """The launcher's flags, defined only when it runs as a script (experiments.benchmark imports it)."""
  flags.DEFINE_string("game", "Breakout", "Atari game.")
  flags.DEFINE_list("num_envs", ["1", "4", "16"], "Numbers of parallel envs to measure.")
  flags.DEFINE_integer("steps", 500, "Iterations (agent steps per env).", lower_bound=1)
  flags.DEFINE_multi_enum("paths", list(PATHS), list(PATHS), "Step paths to measure (repeat the flag).")
  flags.DEFINE_integer("seed", 0, "Env seed.")


def main(argv):
  del argv
  f = flags.FLAGS
  print(f"game={f.game} steps={f.steps} backend={jax.default_backend()} devices={jax.device_count()}")
  for path in f.paths:
    for n in (int(x) for x in f.num_envs):
      rate = benchmark(path, f.game, n, f.steps, f.seed)
      print(f"{path:17s} N={n:<3d} {rate:9.0f} agent steps/s", flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
