r"""Where the time of a training update goes on this CPU: an op profile of the paper-size updates.

For each model (JEDI's latent world model, DIAMOND's pixel baseline) and each training program
(`wm_update`: `train.world_model_step`; `ac_update`: `train.actor_critic_step`, the programs of
`experiments/benchmark_world_model.py`), it compiles the program at `--preset`'s sizes, runs it once to warm
up, then runs it `--calls` times under `jax.profiler.trace` and reads the trace back: every XLA operation the
CPU runtime executed (one trace event per HLO instruction: convolution, fusion, copy, ...), its time, and the
network it belongs to, from the instruction's metadata (the Flax module path JAX records in `op_name`).

  python -m experiments.profile_cpu [--preset=atari100k] [--batch_size=32] [--kinds=jedi,diamond]
      [--programs=wm_update,ac_update] [--json=PATH]

Per program the JSON holds the wall time of a call, the summed op time (XLA:CPU may run independent ops at
once on its threads, so it can exceed the wall time), and that op time split three ways: by network
(`Encoder`, `DenoiserNet`, `RewEndModel`, `ActorCritic`, or `other`: sampling the replay, the optimiser, the
loss arithmetic), by direction (`forward`, `backward`: ops of a transposed JVP), and by kind of operation (the
instruction's opcode, or a fusion's name without its number: `convolution`, `transpose_copy_fusion`, ...),
and the 15 costliest instructions. XLA flags (for example oneDNN's `--xla_cpu_use_onednn`, see
docs/benchmarks.md) go in the environment as usual: `XLA_FLAGS=... python -m experiments.profile_cpu`.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

from absl import app
from absl import flags

import jax
import jax.numpy as jnp

from experiments import benchmark_world_model as bwm
from jedi_jax import train

_PRESET = flags.DEFINE_string("preset", "atari100k", "Preset whose sizes to profile.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size of the updates.", lower_bound=1)
_NUM_ACTIONS = flags.DEFINE_integer("num_actions", 18, "Actions of the stand-in game.", lower_bound=2)
_KINDS = flags.DEFINE_list("kinds", ["jedi", "diamond"], "World-model kinds to profile.")
_PROGRAMS = flags.DEFINE_list("programs", ["wm_update", "ac_update"], "Programs: wm_update, ac_update.")
_CALLS = flags.DEFINE_integer("calls", 1, "Profiled calls per program, after one warm-up call.", lower_bound=1)
_SET = flags.DEFINE_multi_string("set", [], "Config overrides for both models, as in benchmark_world_model.")
_JSON = flags.DEFINE_string("json", None, "Where to write the profile (JSON).")

STEPS = {"wm_update": train.world_model_step, "ac_update": train.actor_critic_step}
# The networks, by the Flax module names JAX records in each instruction's op_name.
NETWORKS = ("Encoder", "DenoiserNet", "RewEndModel", "ActorCritic")
# Instructions that only run others (their trace events contain their body's): not counted.
CONTROL = ("while", "conditional", "call", "async-start", "async-done")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][a-z\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (opcode, op_name metadata)} of every instruction of a compiled HLO module's text."""
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if m:
      op_name = _OP_NAME.search(line)
      out[m.group(1)] = (m.group(2), op_name.group(1) if op_name else "")
  return out


def network(op_name: str) -> str:
  """The network an instruction belongs to: the innermost known module of its op_name path."""
  found = [(op_name.rfind(n), n) for n in NETWORKS if n in op_name]
  return max(found)[1] if found else "other"


def kind(name: str, opcode: str) -> str:
  """A fusion's name without its number (`transpose_copy_fusion`), else the opcode."""
  return re.sub(r"\.\d+$", "", name) if opcode == "fusion" else opcode


def read_trace(directory: str) -> list[tuple[str, float]]:
  """(event name, duration in s) of every complete event of the perfetto trace `jax.profiler` wrote."""
  paths = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
  if not paths:
    raise FileNotFoundError(f"no *.trace.json.gz under {directory}")
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  return [(e["name"], e.get("dur", 0.0) * 1e-6) for e in events if e.get("ph") == "X"]


def summarise(events, table: dict[str, tuple[str, str]], calls: int, wall: float, top: int = 15) -> dict:
  """The op time of `calls` calls split by network, direction and kind (seconds per call)."""
  by_network, by_direction, by_kind, by_instruction = (collections.Counter() for _ in range(4))
  for name, seconds in events:
    if name not in table or table[name][0] in CONTROL:
      continue
    opcode, op_name = table[name]
    seconds /= calls
    by_network[network(op_name)] += seconds
    by_direction["backward" if "transpose(" in op_name else "forward"] += seconds
    by_kind[kind(name, opcode)] += seconds
    by_instruction[name] += seconds
  rounded = lambda c: {k: round(v, 4) for k, v in c.most_common()}  # noqa: E731
  return {"wall_seconds": round(wall, 3), "op_seconds": round(sum(by_network.values()), 3),
          "by_network": rounded(by_network), "by_direction": rounded(by_direction),
          "by_kind": rounded(collections.Counter(dict(by_kind.most_common(20)))),
          "top_instructions": [{"name": n, "seconds": round(s, 4), "opcode": table[n][0],
                                "op_name": table[n][1][-160:]} for n, s in by_instruction.most_common(top)]}


def profile(kind_name: str, program: str, overrides: dict) -> dict:
  """Compile one program, warm it up, profile `--calls` calls; the summary of `summarise`."""
  config = bwm.model_config(kind_name, _PRESET.value, _BATCH_SIZE.value, overrides)
  state = bwm.filled_train_state(config, _NUM_ACTIONS.value)
  step = STEPS[program]
  res = bwm.analyse(lambda s: step(s, config), state, donate_argnums=0)
  compiled = res["compiled"]
  table = instructions(compiled.as_text())
  state, _ = compiled(jax.tree.map(jnp.copy, state))   # distinct buffers: the state is donated
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(_CALLS.value):
        state, metrics = compiled(state)
        jax.block_until_ready((state, metrics))
      wall = (time.perf_counter() - start) / _CALLS.value
    events = read_trace(directory)
  out = summarise(events, table, _CALLS.value, wall)
  out["compile_seconds"] = round(res["compile_s"], 1)
  return out


def print_summary(name: str, s: dict) -> None:
  print(f"{name}: {s['wall_seconds']:.2f} s per call, {s['op_seconds']:.2f} s of ops", flush=True)
  for field in ("by_network", "by_direction", "by_kind"):
    share = ", ".join(f"{k} {v:.2f} s ({v / max(s['op_seconds'], 1e-9):.0%})"
                      for k, v in list(s[field].items())[:8])
    print(f"  {field[3:]}: {share}", flush=True)


def main(argv):
  del argv
  overrides = bwm.parse_overrides(_SET.value)
  unknown = sorted(set(_PROGRAMS.value) - set(STEPS))
  if unknown:
    raise app.UsageError(f"--programs: unknown {unknown}; choose from {sorted(STEPS)}")
  out = {"setup": {"preset": _PRESET.value, "batch_size": _BATCH_SIZE.value, "calls": _CALLS.value,
                   "overrides": overrides, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                   "jax": jax.__version__}}
  for kind_name in _KINDS.value:
    for program in _PROGRAMS.value:
      summary = profile(kind_name, program, overrides)
      out.setdefault(kind_name, {})[program] = summary
      print_summary(f"{kind_name} {program}", summary)
      if _JSON.value:
        with open(_JSON.value, "w") as f:
          json.dump(out, f, indent=1)


if __name__ == "__main__":
  app.run(main)
