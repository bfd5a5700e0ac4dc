r"""Train a JEDI agent on one Atari100k game, then score it on 100 test episodes.

  python -m experiments.train --game=Breakout --seed=0 --workdir=runs/breakout_0
  python -m experiments.train --preset=debug --workdir=runs/debug            # ~2 min on a CPU
  python -m experiments.train --preset=debug --workdir=runs/px --config.wm.kind=diamond
  python -m experiments.train --game=Pong --seed=0 --workdir=runs/p --config.parallel.num_devices=0  # all devices

Any config field can be overridden with --config.<section>.<field>=<value> (see jedi_jax/config.py).
Rerunning the same command with the same --workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jedi_jax import config as config_lib
from jedi_jax import videos

_GAME = flags.DEFINE_string("game", None, "Atari100k game, e.g. Breakout, Pong, MsPacman, or a pure-JAX game "
                           "(Catch); default: the preset's game (Breakout; Catch for --preset=catch).")
_SEED = flags.DEFINE_integer("seed", None, "Run seed (required for the atari100k preset; debug defaults to 0).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config, logs, checkpoints and results.")
_PRESET = flags.DEFINE_enum("preset", "atari100k", sorted(config_lib.PRESETS), "Named config preset.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first (TPU pod slices, multi-node GPU, several CPU "
    "processes); the three flags below default to auto-detection (TPU VM, SLURM, Open MPI).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "--multihost: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "--multihost: number of processes.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "--multihost: index of this process.", lower_bound=0)
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "~/.cache/jedi_jax/xla",
    "Directory of JAX's persistent compilation cache, used by runs whose programs can be cached (pure-JAX "
    "envs, e.g. Catch; see jedi_jax/compilation_cache.py). Empty: off.")
_NUM_SEEDS = flags.DEFINE_integer(
    "num_seeds", 1, "Train seeds seed .. seed+K-1 of the game together in one program (jax.vmap); each "
    "writes workdir/seed_<s>/results.json.", lower_bound=1)


def _unknown_field_exit(e: Exception):
  field = str(e).strip("\"'")
  print(f"error: unknown config field {field!r} in a --config.* flag (see jedi_jax/config.py)", file=sys.stderr)
  sys.exit(1)


try:  # ml_collections parses the --config.* overrides right here, when the flag is defined
  _CONFIG = config_flags.DEFINE_config_dict(
      "config", config_lib.atari100k(), "Overrides of single fields: --config.optim.batch_size=64.")
except (AttributeError, KeyError) as e:
  _unknown_field_exit(e)
flags.mark_flag_as_required("workdir")


def resolve_config():
  """The preset with the command line's --config.* overrides, --game and --seed applied and checked."""
  config = config_lib.get_config(_PRESET.value)
  overrides = config_flags.get_override_values(flags.FLAGS["config"])
  for path in ("game", "seed"):
    if path in overrides:
      raise ValueError(f"set {path} with --{path}, not --config.{path}")
  config_lib.set_fields(config, overrides)
  if _SEED.value is None and config.preset == "atari100k":
    raise ValueError("--seed is required for the atari100k preset (runs of the paper's tables are per seed)")
  config.game = _GAME.value or config.game
  config.seed = 0 if _SEED.value is None else _SEED.value
  config_lib.validate(config)
  videos.check_record_test_episodes(config)
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if _MULTIHOST.value:
    from jedi_jax import parallel
    parallel.initialize_multihost(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)  # before any JAX call
  elif any(f.value is not None for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)):
    print("error: --coordinator_address, --num_processes and --process_id need --multihost", file=sys.stderr)
    sys.exit(1)
  # Imported here, and the training modules only once the flags are checked: --help and flag errors stay fast.
  from jedi_jax import envs
  try:
    config = resolve_config()
    envs.check_game(config.game, config.env.backend)
    envs.step_path(config)  # an explicit "xla" step on a TPU is refused here, before the workdir is touched
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  from jedi_jax import checkpoint, compilation_cache, logs, loop, parallel
  wandb_run = None
  try:
    if _COMPILATION_CACHE.value and compilation_cache.cacheable(config):
      print(f"compilation cache: {compilation_cache.enable(_COMPILATION_CACHE.value)} "
            "(--compilation_cache= turns it off)")
    workdir = os.path.abspath(_WORKDIR.value)
    if config.run.wandb_project and parallel.is_main_process():  # mirrors metrics.jsonl's rows (logs.py)
      wandb_run = logs.start_wandb(config.run.wandb_project, workdir, config_lib.to_dict(config))
    if _NUM_SEEDS.value > 1:
      states, _ = loop.run_seeds(config, workdir, _NUM_SEEDS.value)
    else:
      states, _ = loop.run(config, workdir)
    if config.run.record_test_episodes:
      videos.record_test_videos(config, workdir, states, _NUM_SEEDS.value)
  except (ValueError, checkpoint.WorkdirError, loop.TrainingError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  finally:
    if wandb_run is not None:
      wandb_run.finish()


if __name__ == "__main__":
  app.run(main)
