"""Run logs: JSONL metrics (one line per host call) and TensorBoard event files, plus compiled-program facts;
optionally mirrored to Weights & Biases."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id"


class MetricsLogger:
  """Appends `{"epoch": e, **scalars}` lines to `workdir/metrics.jsonl` and mirrors them to TensorBoard.

  TensorBoard files are written with tensorboardX (pure Python, no TensorFlow) under `workdir/tb/`. While a
  Weights & Biases run is active in this process (`start_wandb`, called by experiments/train.py for
  `--config.run.wandb_project`), every row also goes there: the same numeric scalars, W&B step = epoch.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled  # multi-host: only process 0 writes
    self._tb = None
    if tensorboard and enabled:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30)
      except ImportError:  # optional: the JSONL file holds everything
        self._tb = None

  def write(self, epoch: int, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"epoch": int(epoch), **scalars}, sort_keys=True) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        if isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, global_step=int(epoch))
    wandb_run = _active_wandb_run()
    if wandb_run is not None:
      numeric = {k: v for k, v in scalars.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
      wandb_run.log({"epoch": int(epoch), **numeric}, step=int(epoch))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _active_wandb_run():
  """The W&B run of this process, if wandb is imported and a run is active (never imports wandb itself)."""
  wandb = sys.modules.get("wandb")
  return getattr(wandb, "run", None) if wandb is not None else None


def start_wandb(project: str, workdir: str, config: dict):
  """Starts (or, for a resumed workdir, continues) the W&B run of `workdir` in `project`; returns it.

  The run's id is kept in `workdir/wandb_run_id`, so rerunning the command resumes the same W&B run; its
  files go under `workdir/wandb/`. W&B's own settings apply (`WANDB_MODE=offline` logs without network; `wandb
  sync` uploads later). Raises ValueError when wandb is not installed (the `[wandb]` extra).
  """
  try:
    import wandb  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError("run.wandb_project needs the wandb package: pip install -e '.[wandb]'") from None
  os.makedirs(workdir, exist_ok=True)
  id_path = os.path.join(workdir, WANDB_ID_FILE)
  if os.path.exists(id_path):
    with open(id_path) as f:
      run_id = f.read().strip()
  else:
    run_id = uuid.uuid4().hex[:12]  # W&B run ids: lowercase letters and digits
    with open(id_path, "w") as f:
      f.write(run_id + "\n")
  return wandb.init(project=project, id=run_id, resume="allow", dir=workdir, config=config,
                    name=os.path.basename(os.path.normpath(workdir)))


def log_media(media: dict) -> None:
  """Adds files to the active W&B run, if any: {key: path or list of paths}; GIFs (test episodes, open-loop
  grids) go as videos, PNGs as images. All keys in one row (W&B's current step)."""
  wandb_run = _active_wandb_run()
  if wandb_run is None or not media:
    return
  wandb = sys.modules["wandb"]
  as_media = lambda p: wandb.Video(p, format="gif") if p.endswith(".gif") else wandb.Image(p)
  wandb_run.log({key: [as_media(p) for p in paths] if isinstance(paths, (list, tuple)) else as_media(paths)
                 for key, paths in media.items() if paths})


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`, oldest first."""
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


def is_interim_test(row: dict) -> bool:
  """A `metrics.jsonl` row of an interim test (`run.test_every`): it has `test/episodes`, which the final
  test's row (`test/return_mean`, `perf/train_seconds`) does not."""
  return "test/episodes" in row


def run_wall_seconds(rows: list[dict]) -> float | None:
  """Wall seconds a run took, from its `metrics.jsonl` rows, over every process that trained it.

  A resumed run's rows hold one segment per process, told apart by `perf/process_start` (rows written before
  it was logged: by `perf/wall_seconds` starting again). The rows a killed process wrote after its last
  checkpoint are dropped on resume, so time lost to a kill is not counted. A segment counts its last
  `perf/wall_seconds` (compiles excluded) plus its `perf/compile_seconds`; the last one, where the final
  test's row holds them, its `perf/train_seconds` (compiles included) plus the final test's
  `perf/test_seconds`. None when no row has timings.
  """
  def new_process(row, last):
    if "perf/process_start" in row and "perf/process_start" in last:
      return row["perf/process_start"] != last["perf/process_start"]
    return row["perf/wall_seconds"] < last["perf/wall_seconds"]

  total, last = 0.0, None
  for row in rows:
    if "perf/wall_seconds" in row:
      if last is not None and new_process(row, last):
        total += last["perf/wall_seconds"] + last.get("perf/compile_seconds", 0.0)
      last = row
    elif "perf/train_seconds" in row:  # the final test's row ends the last segment
      return total + row["perf/train_seconds"] + row.get("perf/test_seconds", 0.0)
  if last is None:
    return None
  return total + last["perf/wall_seconds"] + last.get("perf/compile_seconds", 0.0)


def interim_test_curves(rows: list[dict], results: list[dict]) -> list[tuple[list, list]]:
  """Per seed, (env steps, test return) from a run's `metrics.jsonl` rows and its per-seed results.json
  dicts: the interim tests of `run.test_every` (mean over their games), then the final test. A run stopped
  before its final test (`results` empty) gives its interim tests alone, one curve per packed seed."""
  tests = [r for r in rows if is_interim_test(r)]
  if results:
    num_seeds = len(results)
  elif tests:
    num_seeds = len(tests[0].get("test/return_mean_per_seed", [None]))
  else:
    num_seeds = 0
  curves = []
  for k in range(num_seeds):
    steps = [r["env_steps"] for r in tests]
    means = [r["test/return_mean_per_seed"][k] if "test/return_mean_per_seed" in r else r["test/return_mean"]
             for r in tests]
    if results:
      steps, means = steps + [results[k]["env_steps"]], means + [results[k]["score"]]
    curves.append((steps, means))
  return curves


def compiled_costs(compiled) -> dict[str, float]:
  """FLOPs, bytes accessed and memory (bytes) of an XLA-compiled program, from `cost_analysis` /
  `memory_analysis`. XLA counts the body of a loop whose trip count it cannot see once."""
  out: dict[str, float] = {}
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    out["flops"] = float(cost.get("flops", float("nan")))
    out["bytes_accessed"] = float(cost.get("bytes accessed", float("nan")))
  except Exception:  # not every backend reports costs
    out["flops"] = out["bytes_accessed"] = float("nan")
  try:
    mem = compiled.memory_analysis()
    for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                 "generated_code_size_in_bytes", "alias_size_in_bytes"):
      out[name] = float(getattr(mem, name))
    out["peak_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                         + out["temp_size_in_bytes"] - out["alias_size_in_bytes"])
  except Exception:
    pass
  return out


def compile_and_report(name: str, jitted, args, log) -> tuple[Any, float]:
  """Compiles `jitted` (a `jax.jit` object) ahead of time for `args` and logs its `describe_compiled` line;
  returns (the executable, seconds spent)."""
  t0 = time.time()
  compiled = jitted.lower(*args).compile()
  seconds = time.time() - t0
  log(describe_compiled(name, compiled, seconds))
  return compiled, seconds


def describe_compiled(name: str, compiled, compile_seconds: float) -> str:
  c = compiled_costs(compiled)
  gb = lambda k: f"{c[k] / 2**30:.2f} GiB" if k in c else "n/a"
  return (f"compiled {name} in {compile_seconds:.1f}s: {c['flops'] / 1e9:.1f} GFLOP, "
          f"args {gb('argument_size_in_bytes')}, temp {gb('temp_size_in_bytes')}, peak~{gb('peak_bytes')}")
