"""Every absl launcher in experiments/ imports and answers --help in its own process (a broken import, a
missing module or two flags of one name fail here, not on a user's VM)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCHERS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py")
                   if p.stem not in ("__init__", "tpu_targets"))  # tpu_targets: a helper module, not a launcher


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_help(name):
  proc = subprocess.run([sys.executable, "-m", f"experiments.{name}", "--help"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=False)
  # absl prints its usage and exits 1 on --help, argparse exits 0; an import error or a flag clash is a
  # traceback instead.
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert proc.returncode in (0, 1) and ("flags:" in proc.stdout or "usage:" in proc.stdout), (proc.returncode, proc.stdout, proc.stderr)
