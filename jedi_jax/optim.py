"""The optimiser of both learners: DIAMOND's AdamW, computed on flat vectors.

DIAMOND (`src/trainer.py`, `configure_opt` and `get_lr_sched`; `config/trainer.yaml`) trains each network
with AdamW after clipping its gradient to a global norm, with a linear learning-rate warm-up from 0 and
weight decay on the kernels of convolutions, linear layers and LSTMs only (not on biases, norms or
embeddings). The world model has three parameter groups (`world_model.world_model_optimizer`), the
actor-critic one (`agent.actor_critic_optimizer`).

`adamw_group` is that update for one group, with the same arithmetic as
`optax.chain(optax.clip_by_global_norm(n), optax.adamw(lr, eps=eps, weight_decay=wd, mask=...))` with the mask
true on the leaves `is_decayed` picks.
The difference is in the program, not the numbers: the group's leaves are raveled into two vectors (the
decayed kernels and the rest) and the moments live there, so an update is a few dozen operations whatever
the number of leaves. Per leaf, optax emits ~45 operations: 8,000 of the ~37,000 of a small preset's epoch
program (182 world-model leaves), which XLA:CPU compiles in time proportional to its size. The only
numerical difference is the order of the sum inside the gradient norm.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jedi_jax.types import PyTree

Schedule = Callable[[jax.Array], jax.Array]


def is_decayed(path) -> bool:
  """Weight decay applies to kernels only (DIAMOND `configure_opt`: no decay on biases, norm scales or
  embeddings). `path` is a key path from `jax.tree_util`."""
  return getattr(path[-1], "key", None) == "kernel"


def warmup_schedule(lr: float, warmup_steps: int) -> Schedule:
  """Linear warm-up from 0 at the first update to `lr` after `warmup_steps`, then constant (DIAMOND
  `get_lr_sched`)."""
  return optax.linear_schedule(0.0, lr, max(1, warmup_steps))


class AdamWState(NamedTuple):
  """Optimiser state of one group: update count and Adam's moments, raveled (decayed leaves first)."""
  count: jax.Array   # int32 scalar, updates applied so far
  mu: jax.Array      # [num_params] first moment
  nu: jax.Array      # [num_params] second moment


def _split(params: PyTree) -> tuple[np.ndarray, list]:
  """The decay flag of each leaf (in `jax.tree.leaves` order) and the order that puts decayed leaves first."""
  flags = np.array([is_decayed(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]], bool)
  return flags, list(np.argsort(~flags, kind="stable"))


def _ravel(tree: PyTree, order: list) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.concatenate([jnp.ravel(leaves[i]) for i in order]) if leaves else jnp.zeros((0,), jnp.float32)


def _unravel(flat: jax.Array, like: PyTree, order: list) -> PyTree:
  leaves, treedef = jax.tree.flatten(like)
  out, start = [None] * len(leaves), 0
  for i in order:
    out[i] = flat[start:start + leaves[i].size].reshape(leaves[i].shape).astype(leaves[i].dtype)
    start += leaves[i].size
  return jax.tree.unflatten(treedef, out)


def adamw_group(learning_rate: Schedule, *, max_grad_norm: float, weight_decay: float, eps: float,
                b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with decoupled weight decay on the kernels (see the module docstring).

  For update t = 0, 1, ...: g <- g * min(1, max_grad_norm / |g|); mu <- b1 mu + (1 - b1) g;
  nu <- b2 nu + (1 - b2) g^2; u = -learning_rate(t) * (mu_hat / (sqrt(nu_hat) + eps) + weight_decay * p
  on kernels), with mu_hat, nu_hat Adam's bias corrections at t + 1. Like optax, the learning rate of
  update t is the schedule at t, so a warm-up from 0 makes the first update zero.
  """
  def init(params):
    flat = _ravel(params, _split(params)[1])
    return AdamWState(count=jnp.zeros([], jnp.int32), mu=jnp.zeros_like(flat), nu=jnp.zeros_like(flat))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("adamw_group needs the params (weight decay)")
    flags, order = _split(params)
    num_decayed = sum(int(np.prod(jnp.shape(l))) for l, f in zip(jax.tree.leaves(params), flags) if f)
    g = _ravel(grads, order)
    g_norm = jnp.sqrt(jnp.sum(jnp.square(g)))
    g = jnp.where(g_norm < max_grad_norm, g, g / g_norm * max_grad_norm)
    mu = b1 * state.mu + (1 - b1) * g
    nu = b2 * state.nu + (1 - b2) * jnp.square(g)
    t = state.count + 1
    mu_hat = mu / (1 - b1 ** t.astype(mu.dtype))
    nu_hat = nu / (1 - b2 ** t.astype(nu.dtype))
    u = mu_hat / (jnp.sqrt(nu_hat) + eps)
    if weight_decay:
      p = _ravel(params, order)
      u = u.at[:num_decayed].add(weight_decay * p[:num_decayed])
    u = -learning_rate(state.count) * u
    return _unravel(u, grads, order), AdamWState(count=optax.safe_increment(state.count), mu=mu, nu=nu)

  return optax.GradientTransformation(init, update)


def per_group(groups: dict[str, optax.GradientTransformation]) -> optax.GradientTransformation:
  """One transformation per top-level key of a dict of params (the world model's networks)."""
  def init(params):
    return {k: groups[k].init(v) for k, v in params.items()}

  def update(grads, state, params=None):
    out = {k: groups[k].update(g, state[k], None if params is None else params[k]) for k, g in grads.items()}
    return {k: u for k, (u, _) in out.items()}, {k: s for k, (_, s) in out.items()}

  return optax.GradientTransformation(init, update)
