"""Two-process CPU DDP (gloo): both ranks prune identically and end with identical parameters.

Runs examples/ddp_digits.py in a subprocess: Lightning's DDP launcher re-executes the
script for rank 1, which does not mix with an in-process pytest run. Each rank trains on
its own shard (DistributedSampler), so data-dependent criteria see different batches.
The default suite runs Hessian (it accumulates statistics, the hardest case); the slow
suite runs every built-in criterion and the refusal of an unseeded random one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def run_script(*args: str, timeout: int = 600) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "ddp_digits.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def test_ddp_hessian_ranks_agree_and_end_identical():
    out = run_script("--epochs", "3", "--importance", "hessian", "--check")
    assert "[hessian] DDP check passed" in out
    assert "pruned step 2/2" in out  # both scheduled prunes happened under DDP


@pytest.mark.slow
def test_ddp_every_builtin_importance():
    out = run_script("--epochs", "3", "--importance", "all", "--check", timeout=1200)
    for name in ("magnitude", "l1", "taylor", "hessian", "bn_scale", "lamp", "fpgm", "random"):
        assert f"[{name}] DDP check passed" in out, name


@pytest.mark.slow
def test_ddp_unseeded_random_is_refused_on_every_rank_with_the_model_unchanged():
    out = run_script("--unseeded-random")
    assert "rank 0: disagreement check passed" in out and "rank 1: disagreement check passed" in out
