"""experiments/action_effect.py: branches of the real game from a cloned emulator state
(`ale_env.BranchingAle`, `ale_env.branch_points`), and the command."""

import json
import os
import subprocess
import sys

import numpy as np

from jedi_jax.envs import ale_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_branch_is_the_game_played_on_with_that_action():
  """Branching leaves the emulator as it was, and the branch of action a is what playing a from that state
  gives; Breakout's paddle makes RIGHT and LEFT differ."""
  game = ale_env.BranchingAle("Breakout", 3)
  game.reset()
  for a in (1, 2, 3, 2, 0):                        # FIRE launches the ball; then move
    game.step(a)
  branches = game.branches(4)
  assert branches.shape == (4, 4, 64, 64, 3)
  for a in (3, 0, 2):
    saved, frames, slot = game.ale.cloneState(), game.frames.copy(), game.slot
    np.testing.assert_array_equal(np.stack([game.step(a)[0] for _ in range(4)]), branches[a])
    game.ale.restoreState(saved)
    game.frames[:], game.slot = frames, slot
  right, left = 2, 3                               # Breakout's minimal action set: NOOP, FIRE, RIGHT, LEFT
  assert np.abs(branches[right, -1].astype(int) - branches[left, -1]).sum() > 0


def test_branch_points_keep_the_context_of_one_episode():
  """Each point's context is its last K frames and the actions taken on them (the last, the branch's, is 0);
  a context of one frame has no earlier action."""
  data = ale_env.branch_points("Breakout", points=3, gap=5, horizon=2, num_cond=4, seed=0)
  assert data["obs"].shape == (3, 4, 64, 64, 3) and data["act"].shape == (3, 4)
  assert data["branches"].shape == (4, 3, 2, 64, 64, 3)
  assert (data["act"][:, -1] == 0).all() and (data["act"] < 4).all()
  one = ale_env.branch_points("Breakout", points=2, gap=5, horizon=1, num_cond=1, seed=0)
  assert one["act"].shape == (2, 1) and (one["act"] == 0).all()
  np.testing.assert_array_equal(one["obs"][:, 0], data["obs"][:2, -1])   # same play, same branch states


def test_the_command_reports_every_step_and_rejects_bad_input(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  out = tmp_path / "effect.json"
  cmd = [sys.executable, "-m", "experiments.action_effect", "--preset=debug", "--game=Breakout", "--points=2",
         "--horizon=2", "--gap=3", f"--json={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = json.loads(out.read_text())
  for key in ("pixels", "real_latent", "model", "model_error", "gain"):
    assert len(table[key]) == 2 and np.isfinite(table[key]).all(), key
  assert table["pixels"][0] > 0 and table["pixel_step"] > 0
  for bad in ("--game=Bogus", "--game=Catch"):
    proc = subprocess.run(cmd[:3] + [bad], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error:"), proc.stderr[-2000:]
