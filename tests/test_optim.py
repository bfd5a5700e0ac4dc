"""`jedi_jax.optim` against optax's own chain (the reference it must equal) on a tree with kernels, biases,
norm scales and an embedding, over steps that cross the warm-up and the clipping threshold."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jedi_jax import optim


def _params(key):
  ks = jax.random.split(key, 6)
  return {
      "conv": {"kernel": jax.random.normal(ks[0], (3, 3, 4, 8)), "bias": jax.random.normal(ks[1], (8,))},
      "norm": {"scale": jax.random.normal(ks[2], (8,))},
      "emb": {"embedding": jax.random.normal(ks[3], (5, 8))},
      "lstm": {"ih": {"kernel": jax.random.normal(ks[4], (8, 32)), "bias": jnp.zeros((32,))}},
      "head": {"kernel": jax.random.normal(ks[5], (8, 3))},
  }


def decay_mask(params):
  """A tree of bools like `params`: True on the leaves that weight decay applies to (optax's `mask`)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: optim.is_decayed(path), params)


@pytest.mark.parametrize("weight_decay, max_norm", [(1e-2, 1.0), (0.0, 100.0)])
def test_flat_adamw_equals_optax_chain(weight_decay, max_norm):
  lr = optim.warmup_schedule(3e-3, 4)
  ours = optim.adamw_group(lr, max_grad_norm=max_norm, weight_decay=weight_decay, eps=1e-8)
  reference = optax.chain(optax.clip_by_global_norm(max_norm),
                          optax.adamw(lr, eps=1e-8, weight_decay=weight_decay, mask=decay_mask))
  params = ref_params = _params(jax.random.key(0))
  state, ref_state = ours.init(params), reference.init(params)
  for step in range(8):
    scale = 10.0 if step % 2 else 0.01   # above and below the clipping threshold
    grads = jax.tree.map(lambda x: scale * x, _params(jax.random.key(step + 1)))
    updates, state = jax.jit(ours.update)(grads, state, params)
    ref_updates, ref_state = reference.update(grads, ref_state, ref_params)
    for u, r in zip(jax.tree.leaves(updates), jax.tree.leaves(ref_updates)):
      np.testing.assert_allclose(np.asarray(u), np.asarray(r), rtol=2e-5, atol=1e-9)
    assert jax.tree.structure(updates) == jax.tree.structure(grads)
    params = optax.apply_updates(params, updates)
    ref_params = optax.apply_updates(ref_params, ref_updates)
  assert int(state.count) == 8


def test_decay_mask_marks_kernels_only():
  mask = decay_mask(_params(jax.random.key(0)))
  assert mask["conv"]["kernel"] and mask["lstm"]["ih"]["kernel"] and mask["head"]["kernel"]
  assert not (mask["conv"]["bias"] or mask["norm"]["scale"] or mask["emb"]["embedding"])


def test_per_group_runs_each_group_on_its_own_params():
  groups = {"a": optim.adamw_group(lambda c: 1.0, max_grad_norm=1.0, weight_decay=0.0, eps=1e-8),
            "b": optim.adamw_group(lambda c: 1.0, max_grad_norm=1e9, weight_decay=0.0, eps=1e-8)}
  tx = optim.per_group(groups)
  params = {"a": {"kernel": jnp.ones((3,))}, "b": {"kernel": jnp.ones((2,))}}
  grads = {"a": {"kernel": jnp.full((3,), 10.0)}, "b": {"kernel": jnp.full((2,), 10.0)}}
  state = tx.init(params)
  _, state = tx.update(grads, state, params)
  np.testing.assert_allclose(state["a"].mu, 0.1 * 10.0 / np.sqrt(300.0))   # clipped to norm 1
  np.testing.assert_allclose(state["b"].mu, 0.1 * 10.0)                     # not clipped
  assert set(tx.init({"b": params["b"]})) == {"b"}   # a missing group (the pixel model's encoder) is skipped
