"""What runs where: the env step path per platform ("auto": the XLA step on CPU and GPU, the host step on a
TPU), and config fields that cannot change results (step path) or were added later (compute dtype) keep the
config hashes of recorded runs."""

import pytest

from jedi_jax import config as config_lib
from jedi_jax import envs

from conftest import tiny_config


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
