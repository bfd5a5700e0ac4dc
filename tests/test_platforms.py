"""What runs where: the env step path per platform ("auto": the XLA step on CPU and GPU, the host step on a
TPU), and config fields that cannot change results (step path) or were added later (compute dtype) keep the
config hashes of recorded runs."""

import json
import os

import numpy as np
import pytest

from jedi_jax import config as config_lib
from jedi_jax import envs

from conftest import FEWEST_STEPS, tiny_config


@pytest.mark.parametrize("backend, stochastic, auto", [
    ("envpool", False, {"cpu": "xla", "gpu": "xla", "tpu": "host"}),
    ("ale", False, {"cpu": "xla", "gpu": "xla", "tpu": "host"}),
    ("ale", True, {"cpu": "host", "gpu": "host", "tpu": "host"}),   # no XLA step at all
    ("jax", False, {"cpu": "xla", "gpu": "xla", "tpu": "xla"}),     # a pure-JAX step compiles anywhere
])
def test_auto_step_path_per_platform(backend, stochastic, auto):
  c = tiny_config()
  c.env.backend, c.env.stochastic_frameskip = backend, stochastic
  assert c.env.step_path == "auto"
  assert {p: envs.step_path(c, p) for p in auto} == auto
  c.env.step_path = "host"
  assert {envs.step_path(c, p) for p in auto} == {"host"}


def test_explicit_xla_step_on_a_tpu_is_refused_with_one_line():
  c = tiny_config()
  c.env.step_path = "xla"
  assert envs.step_path(c, "cpu") == envs.step_path(c, "gpu") == "xla"
  with pytest.raises(ValueError, match=r"^env.step_path='xla' cannot run on tpu: .* cpu and gpu only; use "
                     r"env.step_path='auto' or 'host'$"):
    envs.step_path(c, "tpu")
  c.env.step_path = "cuda"
  with pytest.raises(ValueError, match="env.step_path must be 'auto', 'xla' or 'host'"):
    config_lib.validate(c)


def test_step_path_and_float32_keep_recorded_hashes():
  """Records made before `env.step_path = "auto"` and `run.compute_dtype` existed say step_path "xla" and have
  no compute dtype: same settings, same hash (values of this stack's presets before the change)."""
  recorded = {"atari100k": "3cf41dac6479", "cpu": "0098b46a1830", "debug": "130b75651600"}
  for preset, digest in recorded.items():
    c = config_lib.get_config(preset)
    assert config_lib.config_hash(c) == digest
    old = config_lib.to_dict(c)
    old["env"]["step_path"] = "xla"
    del old["run"]["compute_dtype"]
    assert config_lib.config_hash(old) == digest
    c.run.compute_dtype = "bfloat16"
    assert config_lib.config_hash(c) != digest


def _operand_dtypes(jaxpr, names=("conv_general_dilated", "dot_general")):
  """The operand dtypes of every convolution and matmul of a jaxpr (sub-jaxprs included)."""
  out = []
  for e in jaxpr.eqns:
    if e.primitive.name in names:
      out.append(tuple(str(v.aval.dtype) for v in e.invars[:2]))
    for v in e.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else [v]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out += _operand_dtypes(inner, names)
  return out


@pytest.mark.after_suite
def test_bfloat16_compute_runs_convolutions_and_matmuls_in_bf16_with_float32_params_and_finite_losses():
  """run.compute_dtype="bfloat16": every convolution and matmul of the world-model and actor-critic losses
  multiplies bf16 operands; params and gradients stay float32; the world-model loss is finite and within bf16
  rounding of the float32 one (same params, batch and key). A whole debug-preset run in bf16: docs/benchmarks.md."""
  import jax
  import jax.numpy as jnp
  from jedi_jax import agent
  from jedi_jax import world_model as wm
  from test_imagination import make_start
  from test_world_model import make_batch, wm_config

  f32 = wm_config("jedi", **FEWEST_STEPS)
  c = config_lib.to_config_dict(f32)
  c.run.compute_dtype = "bfloat16"
  bf16 = config_lib.freeze(c)
  wm_params = wm.init_world_model(bf16, 4, jax.random.PRNGKey(0))
  ac_params = jax.jit(agent.init_actor_critic, static_argnums=(0, 1))(bf16, 4, jax.random.PRNGKey(1))
  assert {str(x.dtype) for x in jax.tree.leaves((wm_params, ac_params))} == {"float32"}
  batch, start = make_batch(bf16), make_start(jax.random.PRNGKey(2), 2)

  def losses(wm_params, ac_params, config):
    wm_loss = wm.world_model_loss(wm_params, batch, jax.random.PRNGKey(3), config)[0]
    ac_loss = agent.actor_critic_loss_fn(ac_params, wm_params, start, jax.random.PRNGKey(4), config)[0]
    return wm_loss + ac_loss, jnp.stack([wm_loss, ac_loss])

  ops = _operand_dtypes(jax.make_jaxpr(lambda w, a: losses(w, a, bf16))(wm_params, ac_params).jaxpr)
  assert len(ops) > 30 and set(ops) == {("bfloat16", "bfloat16")}
  grads = jax.eval_shape(jax.grad(lambda w, a: losses(w, a, bf16), argnums=(0, 1), has_aux=True), wm_params,
                         ac_params)[0]
  assert {str(x.dtype) for x in jax.tree.leaves(grads)} == {"float32"}
  # Values of the world-model loss (compiling the imagination too would double the test's time).
  values = jax.jit(lambda w: wm.world_model_loss(w, batch, jax.random.PRNGKey(3), bf16)[0])(wm_params)
  reference = jax.jit(lambda w: wm.world_model_loss(w, batch, jax.random.PRNGKey(3), f32)[0])(wm_params)
  assert np.isfinite(values).all() and not np.array_equal(values, reference)
  np.testing.assert_allclose(values, reference, rtol=0.05, atol=0.02)


@pytest.mark.after_suite
def test_aot_check_compiles_a_run_program_for_a_tpu_without_one(tmp_path):
  """experiments/aot_check.py on this CPU host: a program of a (tiny) Breakout run compiled for a v5e chip,
  with the host env step a TPU takes, and its report written (the atari100k figures: results/aot/)."""
  pytest.importorskip("libtpu")
  from experiments import aot_check
  path = tmp_path / "aot.json"
  out = aot_check.check({"float32": tiny_config(**FEWEST_STEPS)}, "tpu-v5e", str(path), ("restep",),
                        log=lambda _: None)
  assert json.loads(path.read_text()) == out and out["target"] == "tpu-v5e"
  row = out["programs"]["restep"]
  assert row["fits"] and 0 < row["hbm_bytes"] < 2**30 and row["bytes_accessed"] > 0
  assert row["estimated_seconds"] == max(row["flops"] / 197e12, row["bytes_accessed"] / 819e9)
  # Every other program of the run, the data-parallel ones included, is built and traced for the TPU (compiling
  # them all would take minutes): a change of a program's signature breaks this, not the atari100k command.
  cfg = config_lib.freeze(tiny_config(**FEWEST_STEPS, **{"optim.batch_size": 4}))  # a multiple of the 4 chips
  built = aot_check.build_programs(cfg, aot_check.tpu_devices(aot_check.TARGETS["tpu-v5e"]))
  assert set(built) == set(aot_check.PROGRAMS)
  for name, (jitted, args) in built.items():
    assert jitted.trace(*args).out_info is not None, name


@pytest.mark.after_suite
def test_two_processes_train_one_data_parallel_run_to_the_end(tmp_path):
  """`--multihost` with two processes on this host (CPU collectives, one device each): one data-parallel run of
  the tests' tiny Catch config trains to the end; process 0 alone writes metrics and results; both log 2
  processes."""
  import socket
  import subprocess
  import sys
  from test_train import ROOT, TEST_XLA_FLAGS, _tiny_flags
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  workdir = tmp_path / "w"
  args = _tiny_flags(**{"parallel.num_devices": 0, "run.probe_batch_size": 0}) + [
      f"--workdir={workdir}", "--multihost", f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {TEST_XLA_FLAGS}", PYTHONPATH=ROOT,
             PYTHONUNBUFFERED="1")
  procs = [subprocess.Popen([sys.executable, "-m", "experiments.train", *args, f"--process_id={i}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
  logs = [p.communicate(timeout=1200)[0] for p in procs]
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f"process {i}:\n{log[-3000:]}"
    assert "processes=2 devices used=2 of 2" in log and "final score" in log
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  epochs = [r["epoch"] for r in rows if "wm/loss" in r]
  assert epochs == sorted(set(epochs)) and len(epochs) >= 2       # one row per call: written by one process
  results = json.loads((workdir / "results.json").read_text())
  assert len(results["episode_returns"]) == 2 and np.isfinite(results["score"])
