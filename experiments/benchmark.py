"""The project's benchmarks in one command (docs/benchmarks.md): world model (latent vs pixel), the whole training
loop, env collection.

Sections (`--sections`, repeatable; default all four):

  world_model  `experiments/benchmark_world_model.py`: JEDI vs the DIAMOND pixel baseline at the preset's
               sizes: world-model update, `sample_next`, imagination H = 1 and H = 15, actor-critic update;
               FLOPs and memory of the compiled programs, compile and median step times, parameter counts,
               peak device memory (GPU/TPU) or process RSS (CPU); pixel / latent ratios, the whole-update
               time ratio and the training programs' peak-memory ratio. `--json=PATH` writes the figures,
               `--target=tpu-v5e` compiles for one TPU chip deviceless instead of running here, `--set=
               FIELD=VALUE` overrides config fields for both models (`wm.remat=true`).
  loop         the real host loop (`jedi_jax.loop.run`) on the preset for a few 1-epoch calls after a short
               initial collection: env steps/s and updates/s per call, and the fraction of wall time spent
               inside compiled calls (the rest is the host: metrics transfer, logging, Python), compiles
               excluded. `--loop_updates` cuts the updates per epoch (a paper-size epoch, 400 + 400 updates,
               takes hours on a CPU); rates are per update, so they carry over.
  env          agent steps/s of envpool's XLA step inside jit + scan vs raw envpool (Python `step`).
  probe        the cost of the world-model probe on one regular epoch's updates.

  python -m experiments.benchmark                                   # everything, paper sizes
  python -m experiments.benchmark --sections=loop --loop_updates=4  # the loop on a CPU
  python -m experiments.benchmark --sections=world_model --repeats=0 --target=tpu-v5e --json=/tmp/v5e.json
"""

from __future__ import annotations

import tempfile

from absl import app
from absl import flags

from experiments import benchmark_world_model

SECTIONS = ("world_model", "loop", "env", "probe")


def loop_benchmark(preset: str, game: str, epochs: int, updates: int | None, initial_steps: int) -> None:
  """Runs `loop.run` for 1 + `epochs` one-epoch calls and prints its per-call speed figures."""
  from jedi_jax import config as config_lib
  from jedi_jax import logs
  from jedi_jax import loop

  c = config_lib.get_config(preset)
  c.game = game
  s = c.schedule
  if updates is not None:
    s.wm_updates_per_epoch = s.ac_updates_per_epoch = updates
  s.wm_updates_first_epoch, s.ac_updates_first_epoch = s.wm_updates_per_epoch, s.ac_updates_per_epoch
  s.initial_min_steps = s.initial_max_steps = initial_steps
  s.total_env_steps = initial_steps + (epochs + 1) * s.steps_per_epoch
  s.num_final_epochs, s.epochs_per_call = 0, 1
  c.run.checkpoint_every = epochs + 1
  config_lib.validate(c)
  print(f"loop: preset {preset} game {game}: {initial_steps} initial steps, then {epochs + 1} epochs of "
        f"{s.steps_per_epoch} env steps + {s.wm_updates_per_epoch} wm + {s.ac_updates_per_epoch} ac updates "
        f"(batch {c.optim.batch_size})", flush=True)
  with tempfile.TemporaryDirectory() as workdir:
    loop.run(c, workdir, stop_after_epoch=epochs + 1)
    rows = logs.read_metrics(workdir)
  steady = rows[1:] or rows  # the first call's rate includes its first-use effects
  mean = lambda k: sum(r[k] for r in steady) / len(steady)
  last = rows[-1]
  print(f"loop: env steps/s {mean('perf/env_steps_per_s'):.3g}, updates/s {mean('perf/updates_per_s'):.3g}, "
        f"seconds per epoch {mean('perf/seconds_per_epoch'):.1f} (mean of {len(steady)} calls after the first)")
  print(f"loop: {100 * last['perf/compiled_fraction']:.1f}% of {last['perf/wall_seconds']:.0f} s wall time "
        f"inside compiled calls, the rest on the host (compiles excluded: {last['perf/compile_seconds']:.0f} s)")


def probe_benchmark(preset: str, num_actions: int, repeats: int) -> None:
  """The cost of the world-model probe (`run.probe_batch_size`) on one regular epoch's updates at `preset`.

  One process, one state (a full replay of random frames in 100-step episodes), `train.update_phase`
  compiled with the probe on and off, timed alternately; collection is left out, so the ratio is an upper bound.
  """
  import time

  import jax
  import numpy as np

  from experiments import benchmark_world_model
  from jedi_jax import config as config_lib
  from jedi_jax import train

  def config(probe):
    c = config_lib.get_config(preset)
    c.run.probe_batch_size = probe
    c.replay.capacity = benchmark_world_model.REPLAY_STEPS
    return config_lib.freeze(c)

  base = config(0)
  state = benchmark_world_model.filled_train_state(base, num_actions)
  s = base.schedule
  plan = train.make_plan(1, s.steps_per_epoch, s.wm_updates_per_epoch, s.ac_updates_per_epoch)
  fns = {}
  for name, probe in (("without probe", 0), ("with probe", 4)):
    t0 = time.time()
    fns[name] = jax.jit(lambda st, pl, c=config(probe): train.update_phase(st, pl, c)).lower(state, plan).compile()
    print(f"{name}: compiled in {time.time() - t0:.1f} s", flush=True)
  times = {name: [] for name in fns}
  for _ in range(repeats + 1):   # the first round warms up
    for name, fn in fns.items():
      t0 = time.time()
      jax.block_until_ready(fn(state, plan))
      times[name].append(time.time() - t0)
  med = {name: float(np.median(ts[1:])) for name, ts in times.items()}
  print(f"probe: preset {preset}, one epoch's updates ({s.wm_updates_per_epoch} + {s.ac_updates_per_epoch}), "
        f"median of {repeats}: {med['without probe']:.3f} s without, {med['with probe']:.3f} s with the probe "
        f"({100 * (med['with probe'] / med['without probe'] - 1):+.1f}%)")


benchmark_world_model.define_flags()   # world_model section: --target, --set, --json
_SECTIONS = flags.DEFINE_multi_enum("sections", list(SECTIONS), list(SECTIONS),
                                    "Sections to run (repeat the flag); default all.")
_PRESET = flags.DEFINE_string("preset", "atari100k", "Preset whose sizes to measure.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "world_model section.", lower_bound=1)
_NUM_ACTIONS = flags.DEFINE_integer("num_actions", 18, "world_model section.", lower_bound=2)
_REPEATS = flags.DEFINE_integer("repeats", 3, "world_model section: timed calls (0: compile and analyse only).",
                                lower_bound=0)
_GAME = flags.DEFINE_string("game", "Breakout", "loop and env sections.")
_LOOP_EPOCHS = flags.DEFINE_integer("loop_epochs", 3, "loop section: timed calls after the first.", lower_bound=1)
_LOOP_UPDATES = flags.DEFINE_integer("loop_updates", None,
                                     "loop section: wm and ac updates per epoch (default: the preset's).")
_LOOP_INITIAL_STEPS = flags.DEFINE_integer("loop_initial_steps", 1000, "loop section: initial collection.")
_NUM_ENVS = flags.DEFINE_list("num_envs", ["1", "4", "16"], "env section.")
_ENV_STEPS = flags.DEFINE_integer("env_steps", 500, "env section: iterations per path.", lower_bound=1)


def main(argv):
  del argv
  sections = _SECTIONS.value
  import jax
  from experiments import env_benchmark
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {jax.device_count()} device(s)")
  if "world_model" in sections:
    print("\n== world model: JEDI (latent) vs DIAMOND (pixel) ==", flush=True)
    f = flags.FLAGS
    benchmark_world_model.run(_PRESET.value, _BATCH_SIZE.value, _NUM_ACTIONS.value, _REPEATS.value, f.target,
                              benchmark_world_model.parse_overrides(f.set), f.json, tuple(f.timed))
  if "loop" in sections:
    print("\n== whole training loop ==", flush=True)
    loop_benchmark(_PRESET.value, _GAME.value, _LOOP_EPOCHS.value, _LOOP_UPDATES.value, _LOOP_INITIAL_STEPS.value)
  if "probe" in sections:
    print("\n== world-model probe overhead ==", flush=True)
    probe_benchmark(_PRESET.value, _NUM_ACTIONS.value, max(_REPEATS.value, 1))
  if "env" in sections:
    print("\n== env collection: envpool XLA step in jit + scan vs raw envpool ==", flush=True)
    for n in (int(x) for x in _NUM_ENVS.value):
      xla = env_benchmark.benchmark("envpool-xla", _GAME.value, n, _ENV_STEPS.value, 0)
      raw = env_benchmark.benchmark("envpool-python", _GAME.value, n, _ENV_STEPS.value, 0)
      print(f"N={n:<3d} XLA in scan {xla:8.0f} steps/s   raw envpool {raw:8.0f} steps/s   ratio {xla / raw:.2f}",
            flush=True)


if __name__ == "__main__":
  app.run(main)
