r"""What exact resume costs: re-stepping fresh train envs through N recorded env steps (`jedi_jax.resume`).

    python -m experiments.resume_benchmark [--steps=6000,30000] [--game=Breakout] [--step_path=xla]

For each N: records N steps of random play on the train env (1 env, as the presets; timed, for comparison),
then times `resume.restep` from a fresh env (compile and run separately) and checks it matches. The recorded frames
are held in memory (12 KiB per step).
"""

from __future__ import annotations

import time

from absl import app
from absl import flags

_STEPS = flags.DEFINE_list("steps", ["6000", "30000"], "Recorded env steps to re-step (one measurement each).")
_GAME = flags.DEFINE_string("game", "Breakout", "Atari game.")
_STEP_PATH = flags.DEFINE_enum("step_path", "xla", ["xla", "host"], "The env step inside the program or on the host.")


def measure(game: str, steps: int, step_path: str) -> tuple[float, float, float]:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jedi_jax import envs, replay as replay_lib, resume

  def fresh():
    env = envs.make_env(game, 1, 0, train=True)
    env_state, step = env.functional(step_path)
    return env, env_state, step

  env, env_state, step = fresh()
  actions = jnp.asarray(np.random.default_rng(0).integers(0, env.num_actions, (steps, 1)), jnp.int32)

  def one(env_state, act):
    obs = env_state.obs
    env_state, out = step(env_state, act)
    return env_state, (obs, out.reward, out.terminated, out.truncated, out.is_reset)

  record = jax.jit(lambda e: jax.lax.scan(one, e, actions)).lower(env_state).compile()
  t0 = time.time()
  final, (obs, rew, end, trunc, is_reset) = jax.block_until_ready(record(env_state))
  record_s = time.time() - t0
  swap = lambda x: jnp.swapaxes(x, 0, 1)
  replay = replay_lib.init_replay(1, 2).replace(
      obs=swap(obs), act=swap(actions), rew=swap(rew), end=swap(end), trunc=swap(trunc),
      episode_id=swap(jnp.where(is_reset, -1, 0)), t=jnp.asarray(steps, jnp.int32))
  final_obs = np.asarray(final.obs)
  env.close()

  env, env_state, step = fresh()
  t0 = time.time()
  compiled = jax.jit(lambda e, r, o: resume.restep(e, r, o, step)).lower(env_state, replay, final_obs).compile()
  t1 = time.time()
  _, bad, what = jax.block_until_ready(compiled(env_state, replay, final_obs))
  t2 = time.time()
  env.close()
  resume.check_restepped(bad, what, steps, "benchmark")
  return record_s, t1 - t0, t2 - t1


def main(argv):
  del argv
  for n in map(int, _STEPS.value):
    record_s, compile_s, run_s = measure(_GAME.value, n, _STEP_PATH.value)
    print(f"restep {_GAME.value} {n} env steps ({_STEP_PATH.value}): compile {compile_s:.1f}s, run {run_s:.1f}s "
          f"({n / run_s:.0f} steps/s; recording them with the same env step: {n / record_s:.0f} steps/s), "
          "every frame matches", flush=True)


if __name__ == "__main__":
  app.run(main)
