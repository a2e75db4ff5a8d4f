"""Two-process CPU DDP (gloo): both ranks prune identically and end with identical parameters.

Runs examples/ddp_digits.py in a subprocess: Lightning's DDP launcher re-executes the
script for rank 1, which does not mix with an in-process pytest run.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_ddp_ranks_end_identical():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "ddp_digits.py"), "--epochs", "4", "--check"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "DDP check passed" in out
    assert "pruned step 2/2" in out  # both scheduled prunes happened under DDP
