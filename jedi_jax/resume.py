"""Exact resume: bring freshly created train envs back to their state at a checkpoint by re-stepping them
with the actions the replay recorded.

A checkpoint of an Atari run holds everything but the envs (envpool cannot snapshot its emulators; a
pure-JAX env's state is checkpointed instead, `jedi_jax.checkpoint`). The train envs are
created once per process and a checkpoint never touches them, so a run's games go on across checkpoints.
To resume, the envs are created again with the run's env seed and stepped with every recorded action,
auto-reset dummy steps included: ALE (and any backend deterministic given its seed and actions) then goes
through exactly the same frames. The replay holds every step since the envs were created because its
capacity holds the whole budget (`config.validate`; checked again here). Every re-stepped frame, reward,
end/truncation flag and auto-reset mark is compared with the stored one, and the last frame with the
checkpointed `TrainState.obs`; what the env carries besides its emulator (`EnvState`: lives, the pending
auto-reset, the current game's return and length) is rebuilt by the same steps. The policy's LSTM state,
`is_first` and the keys are checkpointed with the `TrainState`.

Cost: one env step per recorded agent step, inside one compiled loop (about as fast as collection: ~2 s
for the 6k steps of the `cpu` preset on the 2-core CPU, see docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jedi_jax import checkpoint as ckpt_lib
from jedi_jax import replay as replay_lib
from jedi_jax.types import PyTree


# What `restep` found wrong at the first diverging step (bit flags).
FRAME, REWARD, END, RESET = 1, 2, 4, 8
_WHAT = {FRAME: "frame", REWARD: "reward", END: "end/truncation flag", RESET: "auto-reset step"}


class ResumeError(ckpt_lib.WorkdirError):
  """The re-stepped train envs do not reproduce the replay (another envpool/ale-py version, a damaged
  replay); nothing in the workdir was changed."""


def _rows(x: jax.Array, lead: int) -> jax.Array:
  """Folds the leading axes of a replay leaf ([..., E, C, ...], `lead` axes before C) into one env axis."""
  return x.reshape((-1,) + x.shape[lead:])


def restep(env_state: PyTree, replay: replay_lib.ReplayState, obs_now: jax.Array, env_step: Callable
           ) -> tuple[PyTree, jax.Array, jax.Array]:
  """Steps fresh envs through the replay's recorded rows and compares each step with the stored one.

  Args:
    env_state: the state right after the envs' creation (reset), N envs.
    replay: the run's replay, [E, C] rows per leaf, or [K, E, C] for K packed seeds (N = K * E envs,
      seed k owning envs k*E .. k*E+E-1).
    obs_now: [E, H, W, 3] (or [K, E, H, W, 3]) uint8, the frame the next action is taken on.
    env_step: the envs' functional step.

  Returns:
    (env_state after every recorded step, the first diverging step or -1, what diverged there as
    `FRAME | REWARD | END | RESET` bits). Step `t` (the number of recorded steps) is the final frame.
  """
  lead = replay.act.ndim - 1  # axes before C
  obs, act, rew = _rows(replay.obs, lead), _rows(replay.act, lead), _rows(replay.rew, lead)
  end, trunc, valid = _rows(replay.end, lead), _rows(replay.trunc, lead), _rows(replay.episode_id, lead) >= 0
  num_rows = replay.t.reshape(-1)[0]
  obs_now = obs_now.reshape(obs.shape[:1] + obs.shape[2:])

  def cond(carry):
    _, a, bad, _ = carry
    return (a < num_rows) & (bad < 0)

  def body(carry):
    env_state, a, _, _ = carry
    col = lambda x: jax.lax.dynamic_index_in_dim(x, a, axis=1, keepdims=False)
    frame_ok = jnp.all(env_state.obs == col(obs))
    env_state, out = env_step(env_state, col(act))
    what = (jnp.where(frame_ok, 0, FRAME)
            | jnp.where(jnp.all(out.reward == col(rew)), 0, REWARD)
            | jnp.where(jnp.all((out.terminated == col(end)) & (out.truncated == col(trunc))), 0, END)
            | jnp.where(jnp.all(out.is_reset != col(valid)), 0, RESET))
    return env_state, a + 1, jnp.where(what > 0, a, -1), what

  env_state, a, bad, what = jax.lax.while_loop(
      cond, body, (env_state, jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32), jnp.zeros((), jnp.int32)))
  final_ok = jnp.all(env_state.obs == obs_now)
  bad = jnp.where((bad < 0) & ~final_ok, a, bad)
  what = jnp.where((what == 0) & ~final_ok, FRAME, what)
  return env_state, bad, what


def check_restepped(bad, what, num_rows: int, where: str) -> None:
  """Raises one clear `ResumeError` when `restep` found a divergence (or could not have run)."""
  bad, what = int(bad), int(what)
  if bad < 0:
    return
  found = ", ".join(name for bit, name in _WHAT.items() if what & bit)
  raise ResumeError(
      f"cannot resume {where}: the re-created train envs diverge from the replay at recorded step "
      f"{bad} of {num_rows} ({found} differs); was the run made with another envpool/ale-py version, or is "
      "the replay damaged? Nothing in the workdir was changed")


def check_replay_holds_every_step(num_rows: int, capacity: int, where: str) -> None:
  if num_rows > capacity:
    raise ResumeError(
        f"cannot resume {where}: its replay ring wrapped ({num_rows} steps per env > replay.capacity "
        f"{capacity}), so the train envs cannot be re-stepped from the start")
