"""Learning diagnostics: why an agent does or does not learn, in every row of metrics.jsonl.

Accuracy alone says little: a reward model that never predicts +-1 is ~99% accurate on most Atari games. What
a run needs to learn is (1) a reward/end model that finds the rare classes, (2) imagined rewards as frequent
as real ones, (3) a dynamics model whose samples depend on the action, and (4) latents that neither collapse
nor saturate. The meaning of every metric and how to read it: docs/metrics.md.

Two kinds of quantities, both pure functions:
  * per-update class counts of the reward/end heads on the training batches (`classification_counts`),
    averaged over a call's updates like every other metric and turned into recall and precision on the host
    (`rates_from_counts`): ratios of means are ratios of sums, and a class absent from a call gives no NaN
    (its rates are left out and its count, 0, is logged);
  * a probe of the world model on a small real sub-batch, once per epoch (`world_model.probe_world_model`,
    which uses `masked_std` and the constants here): one-step
    samples from real contexts, the same context and noise with only the last action changed, and the
    statistics of sampled against encoded latents. It draws its randomness from `fold_in` of the training key
    and changes no state, so turning the probe on or off leaves a run's results identical.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

REWARD_CLASSES = ("neg", "zero", "pos")   # sign(r) + 1 = 0, 1, 2
SATURATION = 0.95                        # |z| >= 0.95 * 3 counts as saturated (C(z) = 3 tanh(z / 3))
COLLAPSE_THRESHOLD = 0.05                # wm/latent_std below this: the encoder's latents have collapsed


def _key(prefix: str, kind: str, name: str) -> str:
  return f"{prefix}_{kind}_{name}" if name else f"{prefix}_{kind}"


def classification_counts(logits: jax.Array, labels: jax.Array, mask: jax.Array, prefix: str,
                          class_names: tuple[str | None, ...]) -> dict:
  """Per class c: `{prefix}_count_{c}` (targets of c), `{prefix}_hits_{c}` (targets of c predicted as c) and
  `{prefix}_predicted_{c}` (argmax predictions of c), over the valid steps. logits [..., C], labels/mask [...].

  A class named None is skipped; a class named "" gives `{prefix}_count` etc. (a binary head's one class).
  """
  pred = jnp.argmax(logits, axis=-1)
  m = mask.astype(jnp.float32)
  out = {}
  for c, name in enumerate(class_names):
    if name is None:
      continue
    is_c, pred_c = (labels == c).astype(jnp.float32), (pred == c).astype(jnp.float32)
    out[_key(prefix, "count", name)] = jnp.sum(is_c * m)
    out[_key(prefix, "hits", name)] = jnp.sum(is_c * pred_c * m)
    out[_key(prefix, "predicted", name)] = jnp.sum(pred_c * m)
  return out


def rates_from_counts(row: dict) -> dict:
  """Host side: replaces `*_hits[_c]` / `*_predicted[_c]` counts by `*_recall[_c]` / `*_precision[_c]`.

  recall = hits / count, precision = hits / predicted; a rate whose denominator is 0 is left out (no NaN).
  The `*_count[_c]` keys stay (targets of the class per update batch, averaged over the call). Other keys pass
  unchanged.
  """
  def split(key):
    for kind in ("hits", "predicted"):
      for sep in (f"_{kind}_", f"_{kind}"):
        if sep in key and (sep.endswith("_") or key.endswith(sep)):
          head, name = key.split(sep, 1)
          return kind, head, name
    return None

  out = {k: v for k, v in row.items() if split(k) is None}
  for key, hits in row.items():
    parsed = split(key)
    if parsed is None or parsed[0] != "hits":
      continue
    _, head, name = parsed
    count = row.get(_key(head, "count", name), 0.0)
    predicted = row.get(_key(head, "predicted", name), 0.0)
    if count > 0:
      out[_key(head, "recall", name)] = hits / count
    if predicted > 0:
      out[_key(head, "precision", name)] = hits / predicted
  return out


def collapse_warning(row: dict, threshold: float = COLLAPSE_THRESHOLD) -> str | None:
  """A one-line warning when the encoder's latent spread `wm/latent_std` falls below `threshold`."""
  std = row.get("wm/latent_std")
  if std is not None and std < threshold:
    return (f"WARNING: latent collapse? wm/latent_std = {std:.3g} < {threshold} (the encoder maps frames to "
            f"nearly one point; see docs/metrics.md)")
  return None


def masked_mean(x: jax.Array, weight: jax.Array) -> jax.Array:
  """Mean of x [...] weighted by weight [...] (a mask: padding 0); 0 when no entry has weight."""
  weight = weight.astype(jnp.float32)
  return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def masked_std(x: jax.Array, weight: jax.Array) -> jax.Array:
  """Std over all entries of x [B, ...] with weights [B] per sample (or [B, T] per sample and step, ...)."""
  w = jnp.broadcast_to(weight.reshape(weight.shape + (1,) * (x.ndim - weight.ndim)), x.shape)
  n = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(x * w) / n
  return jnp.sqrt(jnp.sum(jnp.square(x - mean) * w) / n)


# --- Offline probes of a finished run (experiments/reward_density.py, experiments/reward_probe.py). ---------
#
# Host-side helpers: they live here, not in the launchers, so that tests and users import them without
# defining absl flags.

def reward_counts(config, steps: int, seed: int, max_lag: int = -1,
                  cycle: tuple[int, ...] | None = None) -> dict:
  """Steps `config.game`'s training envs with uniform random actions for at least `steps` agent steps in
  all; returns {"steps", "positive", "negative", "num_actions"}: how many steps were rewarded with each sign,
  and with `max_lag` >= 0 also "action_reward": `action_reward_information` of those steps.

  A world model learns to predict only the rewards its replay holds, and the first replay is random play:
  a game whose random play is rarely rewarded gives a small budget little to learn from.

  `cycle` replaces the random policy by a fixed sequence of action indices repeated in every env (CrazyClimber
  pays a climb, UP x3 and DOWN x3 with a side step now and then, 2.5x what random play earns, and DOWN alone
  nothing): does a pattern pay, and what a policy that learnt only part of it would score."""
  import numpy as np
  from jedi_jax import envs, loop   # pylint: disable=import-outside-toplevel  (loop imports this module)
  env = loop.make_train_env(config)
  rng = np.random.default_rng(seed)
  env.reset()
  actions, rewards = [], []
  done = 0
  if cycle is not None:
    envs.check_actions(config.game, env.num_actions, cycle)
  while done < steps:
    if cycle:
      action = np.full(env.num_envs, cycle[len(actions) % len(cycle)], np.int32)
    else:
      action = rng.integers(0, env.num_actions, size=env.num_envs).astype(np.int32)
    _, reward, _, _, _ = env.step(action)
    actions.append(action)
    rewards.append(np.sign(np.asarray(reward)).astype(np.int32))
    done += env.num_envs
  rewards = np.stack(rewards)
  out = {"steps": done, "positive": int(np.sum(rewards > 0)), "negative": int(np.sum(rewards < 0)),
         "num_actions": int(env.num_actions)}
  if max_lag >= 0:
    out["action_reward"] = action_reward_information(np.stack(actions), rewards, env.num_actions, max_lag)
  return out


def action_reward_information(actions, reward_signs, num_actions: int, max_lag: int) -> list[dict]:
  """How much the action taken `lag` steps before tells about the sign of a reward, under a random policy.

  actions, reward_signs [T, E] (time first, one column per env; signs in {-1, 0, 1}). For lag = 0..max_lag,
  pairs (a_{t - lag}, sign r_t) within each column; returns per lag {"lag", "bits": the plug-in mutual
  information I(a; sign r) in bits, "bias_bits": its expected value when the two are independent (Miller and
  Madow: (A - 1)(S - 1) / (2 N ln 2), S the reward signs seen), "reward_bits": the entropy of sign r,
  "positive_rate" and "negative_rate": P(sign r_t = +-1 | a_{t - lag} = a) per action a}.

  With a uniform random policy the actions are independent of the past, so an information above the bias is
  the action's own effect on the reward `lag` steps later: the part of the reward a one-step model of
  (state, action) -> reward can attribute to the action. Pairs across an episode boundary dilute it, they do
  not bias it. A game where it is large at a short lag (CrazyClimber) gives imagination an action-dependent
  reward even before the dynamics follow the action; where it is ~0 the policy learns only through the
  dynamics (docs/results.md, "Atari on this CPU").
  """
  import numpy as np
  actions, reward_signs = np.asarray(actions), np.asarray(reward_signs)
  table = []
  for lag in range(max_lag + 1):
    a = actions[:actions.shape[0] - lag].ravel()
    r = reward_signs[lag:].ravel() + 1                       # 0, 1, 2
    joint = np.zeros((num_actions, 3))
    np.add.at(joint, (a, r), 1.0)
    n = joint.sum()
    p = joint / n
    pa, pr = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    bits = float(np.sum(p[nz] * np.log2(p[nz] / (pa @ pr)[nz])))
    seen_signs = int(np.sum(pr > 0))
    per_action = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1.0)
    table.append({
        "lag": lag, "bits": bits,
        "bias_bits": (num_actions - 1) * (seen_signs - 1) / (2 * n * np.log(2)),
        "reward_bits": float(-np.sum(pr[pr > 0] * np.log2(pr[pr > 0]))),
        "positive_rate": per_action[:, 2].tolist(), "negative_rate": per_action[:, 0].tolist()})
  return table


def action_history(replay, num_actions: int, window: int) -> list[dict]:
  """What a run's policy did over its training, from the actions its replay holds, window by window.

  `replay`: a `ReplayState` (host or device arrays). Its rows are the collected steps in order (the policy's
  own actions, epsilon-greedy at `ac.epsilon_collect`), the initial random ones first; the ring keeps the
  newest `capacity` rows per env. Windows of `window` env steps (all E envs together; a row of each env is
  one step each) cover the held rows from the oldest, the last may be shorter. Per window: {"first_step",
  "last_step" (absolute env steps, last exclusive), "steps" (training steps counted: auto-reset rows left
  out), "action_fraction" [A], "action_entropy_bits" (of that empirical distribution; log2 A is uniform),
  "reward_rate_pos", "reward_rate_neg", "end_rate"}. The policy's drift to one action shows here even when
  its entropy stays near uniform in `ac/policy_entropy` (docs/results.md, "Atari on this CPU").
  """
  import numpy as np
  act, rew, end = (np.asarray(x) for x in (replay.act, replay.rew, replay.end))
  valid = np.asarray(replay.episode_id) >= 0
  num_envs, capacity = act.shape
  t = int(np.asarray(replay.t))
  held = min(t, capacity)
  rows = (t - held + np.arange(held)) % capacity                # ring positions, oldest first
  act, rew, end, valid = (x[:, rows].T for x in (act, rew, end, valid))   # [held, E], time first
  rows_per_window = max(1, window // num_envs)
  table = []
  for lo in range(0, held, rows_per_window):
    sl = slice(lo, min(lo + rows_per_window, held))
    v = valid[sl]
    n = int(v.sum())
    counts = np.bincount(act[sl][v], minlength=num_actions)[:num_actions].astype(np.float64)
    frac = counts / max(n, 1)
    nz = frac[frac > 0]
    table.append({
        "first_step": (t - held + sl.start) * num_envs, "last_step": (t - held + sl.stop) * num_envs,
        "steps": n, "action_fraction": frac.tolist(),
        "action_entropy_bits": float(-np.sum(nz * np.log2(nz))),
        "reward_rate_pos": float(((rew[sl] > 0) & v).sum() / max(n, 1)),
        "reward_rate_neg": float(((rew[sl] < 0) & v).sum() / max(n, 1)),
        "end_rate": float((end[sl] & v).sum() / max(n, 1))})
  return table


def transition_rows(replay, num_cond: int, max_rows: int, rng, sign: int | None = None,
                    last: int | None = None) -> list[tuple[int, int]]:
  """Up to `max_rows` (env, absolute step) of replay transitions whose `num_cond` - 1 steps before and next
  frame belong to the same episode, drawn at random with `rng`: those with sign(reward) == `sign` (any reward
  when None), among the newest `last` steps of each env (all the held ones when None)."""
  import numpy as np
  rew, episode = np.asarray(replay.rew), np.asarray(replay.episode_id)
  capacity, written = rew.shape[1], int(replay.t)
  first = max(0, written - capacity) + num_cond - 1
  if last is not None:
    first = max(first, written - 1 - last)
  found = []
  for e in range(rew.shape[0]):
    for i in range(first, written - 1):
      ep = episode[e, i % capacity]
      if (ep >= 0 and (sign is None or np.sign(rew[e, i % capacity]) == sign)
          and all(episode[e, j % capacity] == ep for j in range(i - num_cond + 1, i + 2))):
        found.append((e, i))
  if len(found) > max_rows:
    found = [found[j] for j in rng.choice(len(found), max_rows, replace=False)]
  return found


def gather_windows(replay, rows, num_cond: int):
  """For (env, step i) rows: obs [N, K + 1, H, W, 3] (steps i - K + 1 .. i and the frame after step i) and
  act [N, K] (the actions of steps i - K + 1 .. i)."""
  import numpy as np
  obs, act = np.asarray(replay.obs), np.asarray(replay.act)
  capacity = obs.shape[1]
  idx = [[(i + d) % capacity for d in range(-num_cond + 1, 2)] for _, i in rows]
  envs = [e for e, _ in rows]
  return (np.stack([obs[e, ix] for e, ix in zip(envs, idx)]),
          np.stack([act[e, ix[:-1]] for e, ix in zip(envs, idx)]).astype(np.int32))


def probe_rows(probe, params, replay, rows, num_cond: int, batch_size: int, chunk_key) -> dict:
  """Runs `probe(params, obs, act, key)` (`make_reward_probe`, `make_action_probe`) over the windows of `rows`
  (`transition_rows`) in chunks of one compiled shape (the last padded with its last row, the padding
  dropped); chunk_key(start) -> the key of the chunk starting at row `start`. Returns each of the probe's
  outputs concatenated over the rows ({name: [len(rows), ...]})."""
  import numpy as np
  out = {}
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))
    obs, act = gather_windows(replay, chunk, num_cond)
    for name, p in probe(params, obs, act, chunk_key(start)).items():
      out.setdefault(name, []).append(np.asarray(p))
  return {name: np.concatenate(ps)[:len(rows)] for name, ps in out.items()}


def make_reward_probe(config, frozen_rows: int):
  """jit(wm_params, obs, act, key) -> {"true" | "sampled" | "frozen": reward-class probabilities [N, 3] of
  the last transition}, for the windows of `gather_windows`. The next state is the encoded true frame, a
  one-step sample of the dynamics (what imagination feeds the reward model), or the true frame with its top
  `frozen_rows` pixel rows copied from the frame before (a reward model that reads the score misses these)."""
  from jedi_jax import world_model   # pylint: disable=import-outside-toplevel  (world_model imports this)
  k = config.wm.num_cond

  def probs(params, states, act):
    _, logits, _ = world_model.rew_end_sequence(
        params, world_model.rew_end_initial_state(config, act.shape[0]), states, act, config)
    return jax.nn.softmax(logits[:, -1])

  @jax.jit
  def probe(params, obs, act, key):
    states = world_model.encode(params, obs, config)
    sampled = world_model.sample_next(params, states[:, :k], act, key, config)
    frozen_obs = obs.at[:, k, :frozen_rows].set(obs[:, k - 1, :frozen_rows])
    frozen = world_model.encode(params, frozen_obs[:, k:], config)[:, 0]
    return {"true": probs(params, states, act),
            "sampled": probs(params, jnp.concatenate([states[:, :k], sampled[:, None]], 1), act),
            "frozen": probs(params, jnp.concatenate([states[:, :k], frozen[:, None]], 1), act)}

  return probe


def make_action_probe(config):
  """jit((wm_params, ac_params), obs, act, key) -> what one imagined step offers each action, from real states.

  For the windows of `gather_windows` (obs [N, K + 1, H, W, 3], act [N, K]; frame K and action K - 1 unused):
  the K frames are encoded and both LSTMs burnt in on them as `imagination.burn_in` does, and at the last
  state s the policy gives pi(. | s) and V(s). Then, for every action a with the same sampler noise, the
  dynamics sample s'_a, the reward/end model reads (s, a, s'_a) and the critic values s'_a (its LSTM advanced
  by s, as at the next imagined step). Returns, each [N, A] over actions:
    "policy":   pi(a | s);
    "reward_pos", "reward_neg", "end": the reward/end model's P(r = +1), P(r = -1), P(end);
    "q":        the one-step imagined action value P(+1) - P(-1) + gamma (1 - P(end)) V(s'_a), whose
                differences between actions are what the actor-critic's advantages reward in imagination.
  With dynamics that ignore the action, s'_a is the same for every a, and only the reward/end model's
  reading of the action tells actions apart (docs/results.md, "Atari on this CPU").
  """
  from jedi_jax import imagination   # pylint: disable=import-outside-toplevel  (it imports world_model, which imports this)
  from jedi_jax import world_model   # pylint: disable=import-outside-toplevel  (world_model imports this)
  from jedi_jax.nets.actor_critic import ac_step   # pylint: disable=import-outside-toplevel
  k = config.wm.num_cond
  fns = imagination.default_world_model()

  @jax.jit
  def probe(params, obs, act, key):
    wm_params, ac_params = params
    states = world_model.encode(wm_params, obs[:, :k], config).astype(jnp.float32)
    init = imagination.burn_in(wm_params, ac_params, states, act[:, :k], config, fns)
    s = states[:, -1]
    ac_state, logits, _ = ac_step(ac_params, init.ac_state, s, config)

    def one_action(a):
      actions = act[:, :k].at[:, -1].set(a)
      next_state = world_model.sample_next(wm_params, states, actions, key, config).astype(jnp.float32)
      _, rew_logits, end_logits = world_model.rew_end_step(wm_params, init.rew_end_state, s, actions[:, -1],
                                                           next_state, config)
      _, _, next_value = ac_step(ac_params, ac_state, next_state, config)
      p_rew, p_end = jax.nn.softmax(rew_logits), jax.nn.softmax(end_logits)[:, 1]
      q = p_rew[:, 2] - p_rew[:, 0] + config.ac.gamma * (1.0 - p_end) * next_value
      return {"reward_pos": p_rew[:, 2], "reward_neg": p_rew[:, 0], "end": p_end, "q": q}

    per_action = jax.lax.map(one_action, jnp.arange(logits.shape[-1]))   # {name: [A, N]}
    return {"policy": jax.nn.softmax(logits), **{n: v.T for n, v in per_action.items()}}

  return probe


def summarize_action_probe(out: dict) -> dict:
  """Means over states of `make_action_probe`'s outputs ({name: [N, A]}), per action: "policy", "reward_pos",
  "reward_neg", "end", "q", "advantage" (q minus its mean under the policy at the same state) with its
  standard error over states "advantage_se", and "best" (the share of states where the action has the
  highest q)."""
  import numpy as np
  q = np.asarray(out["q"], np.float64)
  policy = np.asarray(out["policy"], np.float64)
  advantage = q - np.sum(policy * q, axis=1, keepdims=True)
  best = np.bincount(np.argmax(q, axis=1), minlength=q.shape[1]) / q.shape[0]
  table = {name: np.mean(np.asarray(out[name], np.float64), axis=0).tolist()
           for name in ("policy", "reward_pos", "reward_neg", "end", "q")}
  se = np.std(advantage, axis=0, ddof=1) / np.sqrt(q.shape[0]) if q.shape[0] > 1 else np.full(q.shape[1], np.nan)
  return {**table, "advantage": np.mean(advantage, axis=0).tolist(), "advantage_se": se.tolist(),
          "best": best.tolist()}


def make_fixed_action_rollout(config, horizon: int):
  """jit(wm_params, cond [N, K, *S], cond_actions [N, K], action, key) -> states [N, horizon, *S]: the dynamics
  alone, open loop from the context, with `action` (a scalar) held for `horizon` steps. cond_actions[:, -1] is
  replaced by `action`, as imagination replaces it by the policy's. Step h draws its noise from
  fold_in(key, h), so every action sees the same noise and the rollouts differ only by the action."""
  from jedi_jax import world_model   # pylint: disable=import-outside-toplevel  (world_model imports this)

  @jax.jit
  def rollout(wm_params, cond, cond_actions, action, key):
    held = jnp.full(cond_actions.shape[:1], action, jnp.int32)

    def step(carry, h):
      cond, acts = carry
      acts = acts.at[:, -1].set(held)
      next_state = world_model.sample_next(wm_params, cond, acts, jax.random.fold_in(key, h), config)
      next_state = next_state.astype(cond.dtype)
      cond = jnp.concatenate([cond[:, 1:], next_state[:, None]], axis=1)
      acts = jnp.concatenate([acts[:, 1:], held[:, None]], axis=1)
      return (cond, acts), next_state

    _, states = jax.lax.scan(step, (cond, cond_actions.astype(jnp.int32)), jnp.arange(horizon))
    return jnp.swapaxes(states, 0, 1)

  return rollout


def branch_distances(x, y):
  """Mean squared difference between every branch of x and every branch of y, per step: x, y [A, N, H, ...]
  (branches that differ only by the action held) -> [A, A, H], entry (a, a') over the N points and the
  elements of x[a] - y[a']."""
  import numpy as np
  x, y = (np.asarray(v, np.float64) for v in (x, y))
  a, n, h = x.shape[:3]
  x, y = x.reshape(a, n, h, -1), y.reshape(a, n, h, -1)
  return np.array([[np.mean(np.square(x[i] - y[j]), axis=(0, 2)) for j in range(a)] for i in range(a)])


def _off_diagonal_mean(d):
  """Mean over the entries a != a' of [A, A, H] -> [H]."""
  import numpy as np
  a = d.shape[0]
  return d[~np.eye(a, dtype=bool)].mean(axis=0) if a > 1 else np.zeros(d.shape[2])


def action_spread(branches, scale: float):
  """RMS over pairs of actions, points and elements of the difference between branches that differ only by
  the action held, per step: branches [A, N, H, ...] -> [H], divided by `scale` (e.g. the latents' std, as in
  `wm/action_sensitivity`). 0 when every action leads to the same states."""
  import numpy as np
  return np.sqrt(_off_diagonal_mean(branch_distances(branches, branches))) / scale


def cross_action_gain(model, real):
  """Per step, RMS(model[a] - real[a']) over all pairs a != a', over RMS(model[a] - real[a]) over all a, minus 1;
  model and real [A, N, H, ...] hold branches that differ only by the action held. Above 0 when the model's
  branches differ by action as the real ones do (the multi-step `wm/action_error_gain`)."""
  import numpy as np
  d = branch_distances(model, real)
  same = np.mean(np.diagonal(d), axis=-1)         # np.diagonal of [A, A, H] is [H, A]
  return np.sqrt(_off_diagonal_mean(d) / np.maximum(same, 1e-12)) - 1.0
