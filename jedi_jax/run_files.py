"""A run's files besides checkpoints: `results.json` (with the final-state checksum), the metrics rows a
resumed run replaces, and `load_run` (a finished or running run's state, read-only, for analysis)."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jedi_jax import checkpoint as ckpt_lib
from jedi_jax import config as config_lib
from jedi_jax import envs
from jedi_jax import logs
from jedi_jax import train
from jedi_jax.types import FRAME_SHAPE

RESULTS_FILE = "results.json"


def final_state_checksum(state: train.TrainState) -> str:
  """SHA-256 of every checkpointed leaf of a (single-seed) `TrainState`: parameters, optimiser states,
  replay, and the keys, counters and policy LSTM state; two runs are exactly equal iff these match."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(ckpt_lib.saveable(state)):
    x = np.asarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}:{x.dtype}:{x.shape};".encode())
    h.update(np.ascontiguousarray(x).tobytes())
  return h.hexdigest()


def results(cfg, state: train.TrainState, returns: list[float]) -> dict:
  """The contents of `results.json`: deterministic (no timings), so that equal runs give equal files."""
  return {
      "game": cfg.game, "seed": int(cfg.seed), "score": float(np.mean(returns)),
      "score_std": float(np.std(returns)), "config_hash": config_lib.config_hash(cfg),
      "preset": cfg.preset, "wm_kind": cfg.wm.kind, "num_test_episodes": len(returns),
      "episode_returns": [float(r) for r in returns], "env_steps": int(state.env_steps),
      "epochs": int(state.epoch), "final_state_checksum": final_state_checksum(state),
  }


def write_results(workdir: str, results: dict) -> None:
  """`results.json` (read by experiments/tables.py) and a DIAMOND-format `{game: [score]}` file."""
  os.makedirs(workdir, exist_ok=True)
  for name, content in ((RESULTS_FILE, results),
                        ("scores_diamond_format.json", {results["game"]: [results["score"]]})):
    tmp = os.path.join(workdir, name + ".tmp")
    with open(tmp, "w") as f:
      json.dump(content, f, indent=1)
    os.replace(tmp, os.path.join(workdir, name))


def drop_metrics_after(workdir: str, epoch: int) -> None:
  """Drops the `metrics.jsonl` rows of epochs after `epoch`, the final test's row (a finished run that is
  rerun tests again) and a line cut by a kill: a resumed run writes them again. The interim tests of
  `run.test_every` up to `epoch` stay (`logs.is_interim_test`)."""
  path = os.path.join(workdir, logs.METRICS_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    final_test = any(k.startswith("test/") for k in row) and not logs.is_interim_test(row)
    if row.get("epoch", 0) <= epoch and not final_test:
      keep.append(line if line.endswith("\n") else line + "\n")
  if keep != lines:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)


def seed_config(config, seed: int):
  """The single-seed config of one packed seed (its results carry this config's hash)."""
  c = config_lib.to_config_dict(config)
  c.seed = seed
  return config_lib.freeze(c)


def template_states(cfg, num_seeds: int = 1) -> train.TrainState:
  """Fresh training state(s) without envs: seed `cfg.seed` alone, or seeds `cfg.seed + k` stacked.

  Initialised one seed at a time (not vmapped): the initialisers' RNG need not give a vmapped key the
  values it gives the same key alone, and packed seeds must start exactly like single runs.
  """
  num_actions = envs.num_actions(cfg.game, cfg.env.backend)
  per_seed = [train.init_train_state(cfg, num_actions, jax.random.PRNGKey(cfg.seed + k), env_state=None,
                                     obs=jnp.zeros((cfg.env.num_envs,) + FRAME_SHAPE, jnp.uint8))
              for k in range(num_seeds)]
  return per_seed[0] if num_seeds == 1 else jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed)


def load_run(workdir: str, num_seeds: int = 1, log=print):
  """(frozen config, TrainState, epoch) of a run's newest readable checkpoint, for analysis; read-only.

  `num_seeds` > 1 for a `--num_seeds` workdir: the state is then stacked over seeds (index it with
  `jax.tree.map(lambda x: x[k], state)`). The state has no env attached.
  """
  path = os.path.join(workdir, ckpt_lib.CONFIG_FILE)
  if not os.path.exists(path):
    raise ckpt_lib.WorkdirError(f"{workdir} holds no run ({ckpt_lib.CONFIG_FILE} missing)")
  with open(path) as f:
    cfg = config_lib.freeze(ml_collections.ConfigDict(json.load(f)))
  restored = ckpt_lib.Checkpointer(workdir, read_only=True, log=log).restore_latest(
      template_states(cfg, num_seeds), {"num_epochs_collect": np.int64(-1)})
  if restored is None:
    raise ckpt_lib.WorkdirError(f"no checkpoint in {workdir}")
  epoch, state, _ = restored
  return cfg, state, epoch


def load_run_or_exit(workdir: str):
  """`load_run` for the analysis commands (experiments/): a workdir without a readable run is one `error:`
  line on stderr and exit status 1."""
  try:
    return load_run(workdir, log=lambda *_: None)
  except (ckpt_lib.WorkdirError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
