"""Atari100k environments as DIAMOND runs them (src/envs/env.py), on envpool or ale-py; and pure-JAX
games (Catch, `jax_env.py`) behind the same interface and step protocol, for fast learning tests.

`make_env` returns a batch of N envs with gymnasium vector-env conventions (`reset`, `step`,
`action_space`, `num_envs`, `close`) and a functional step for the compiled training loop
(`env.functional("auto" | "xla" | "host") -> (env_state, step_fn)`; `step_path` says which one a config
takes on a platform: the XLA step on CPU and GPU, the host step on a TPU).

DIAMOND semantics kept here, and why:
* Training env: a life loss is a training end (`terminated`) but the game continues; the test env
  plays full games. Both backends play full games and derive the flag from a drop in `lives`:
  envpool's `episodic_life` adds 1-30 no-op frames after the loss, ale-py's resets the game.
* Auto-reset: the step after a game over or truncation is a dummy (action ignored, reward 0, first
  frame of the new game; envpool#194). `info["is_reset"]` / `StepOutput.is_reset` marks it: it must
  never be trained on.
* No FIRE at reset (envpool defaults to it), no sticky actions, minimal action set, frame skip 4
  with max-pool, 64x64 RGB INTER_AREA frames, 1-30 no-op starts, raw rewards, a 27,000-step cap.
"""

from __future__ import annotations

import importlib

from jedi_jax.envs.base import AtariBatchEnv
from jedi_jax.envs.protocol import GAMES, JAX_GAMES, EnvState, RawStep, StepOutput, advance, check_game

ATARI_BACKENDS = ("envpool", "ale")
BACKENDS = ATARI_BACKENDS + ("jax",)

# The backends are imported on first use: importing ale-py, envpool and gymnasium (which loads every
# installed env plugin, gymnax's plotting stack included) takes seconds, and a flag error or `--help` of a
# launcher needs none of them.
_BACKEND_CLASSES = {"AleVectorAtari": "ale_env", "StochasticAleAtari": "ale_env", "EnvpoolAtari": "envpool_env",
                    "JaxBatchEnv": "jax_env"}


def __getattr__(name: str):
  if name in _BACKEND_CLASSES:
    return getattr(importlib.import_module(f"jedi_jax.envs.{_BACKEND_CLASSES[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_env(game: str, num_envs: int, seed: int, *, train: bool, backend: str = "envpool",
             stochastic_frameskip: bool = False, max_episode_steps: int = 27_000,
             noop_max: int = 30) -> AtariBatchEnv:
  """Builds N Atari100k envs.

  Args:
    game: an Atari100k game name from `GAMES`, e.g. "Breakout" (envpool "Breakout-v5"), or with
      backend "jax" a pure-JAX game from `JAX_GAMES` ("Catch").
    num_envs: N, envs stepped together.
    seed: env i is seeded with seed + i.
    train: True for the training env (life loss flagged as `terminated`), False for the test env.
    backend: "envpool" (default; XLA step available), "ale" (ale-py) or "jax" (pure-JAX games:
      the step is a jit-able function of the env state, on any device).
    stochastic_frameskip: frame skip ~ U{2..6} per agent step (2605.13013); "ale" backend only.
    max_episode_steps: step cap in agent steps (27,000 = 108k frames).
    noop_max: at most this many no-op frames at reset.

  Returns:
    An `AtariBatchEnv`: obs [N, 64, 64, 3] uint8, reward [N] float32 (raw), etc.
  """
  check_game(game)
  cls = env_class(backend, stochastic_frameskip)
  check_game(game, backend)
  return cls(game, num_envs, seed, train=train, max_episode_steps=max_episode_steps, noop_max=noop_max)


def env_class(backend: str, stochastic_frameskip: bool = False) -> type[AtariBatchEnv]:
  """The class `make_env` builds for `backend` (imported on first use)."""
  if backend not in BACKENDS:
    raise ValueError(f"unknown env backend {backend!r}; valid: {', '.join(BACKENDS)}")
  if stochastic_frameskip:
    if backend != "ale":
      raise ValueError("stochastic_frameskip=True needs backend='ale': envpool cannot draw the "
                       "frame skip per step")
    return __getattr__("StochasticAleAtari")
  return __getattr__({"ale": "AleVectorAtari", "jax": "JaxBatchEnv", "envpool": "EnvpoolAtari"}[backend])


def step_path(config, platform: str | None = None) -> str:
  """The env step path (`env.functional`) a run of `config` takes on `platform` (default: JAX's default
  backend): "xla" or "host". Raises one ValueError for `env.step_path = "xla"` where it cannot run (a TPU)."""
  return env_class(config.env.backend, config.env.stochastic_frameskip).step_path(config.env.step_path, platform)


def is_pure(backend: str, step_path: str) -> bool:
  """Whether the train envs' whole state is a pytree of arrays stepped inside the compiled program: the
  pure-JAX backend on any path but "host" (whose state lives in Python). Such an env state is saved in
  checkpoints (nothing to re-step on resume), vmapped over packed seeds, and its programs can be cached."""
  return backend == "jax" and step_path != "host"


def num_actions(game: str, backend: str = "envpool") -> int:
  """The size of `game`'s minimal action set (what the policy chooses from), read from a 1-env instance."""
  with make_env(game, 1, 0, train=True, backend=backend) as env:
    return int(env.num_actions)


def check_actions(game: str, num_actions: int, actions) -> None:
  """Raises one clear ValueError unless `actions` is a non-empty sequence of `game`'s action indices
  0..num_actions - 1 (a fixed action list or cycle given by a user: `random_baseline --actions`,
  `reward_density --cycle`)."""
  if not actions or not all(0 <= a < num_actions for a in actions):
    raise ValueError(f"actions must be a non-empty list of {game}'s actions 0..{num_actions - 1}, got {list(actions)}")


__all__ = ["ATARI_BACKENDS", "AleVectorAtari", "AtariBatchEnv", "BACKENDS", "EnvState", "EnvpoolAtari",
           "GAMES", "JAX_GAMES", "JaxBatchEnv", "RawStep", "StepOutput", "StochasticAleAtari", "advance",
           "check_actions", "check_game", "env_class", "is_pure", "make_env", "num_actions", "step_path"]
