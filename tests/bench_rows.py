"""Synthetic benchmark rows with known latencies, speedups and widths, for report and plot tests."""

from __future__ import annotations

from lightning_prune.bench.results import RunResult

BATCH_SIZES = (1, 256)
DENSE_WIDTHS = {"stem.0": 32, "stages.0.0.conv1": 32, "stages.1.0.conv1": 64, "fc": 10}


def stats(ms: float, spread: float = 0.05) -> dict[str, float]:
    return {"median_ms": ms, "p25_ms": ms * (1 - spread), "p75_ms": ms * (1 + spread), "iqr_ms": 2 * spread * ms,
            "mean_ms": ms, "std_ms": 0.0, "min_ms": ms, "max_ms": ms, "warmup": 1, "repeats": 7}


def row(method: str, kind: str, ratio: float | None, ms: float, acc: float | None,
        speedup: tuple[float, float, float] | None = None, widths: dict[str, int] | None = None,
        model: str = "m", macs_fraction: float | None = None) -> RunResult:
    """A row timed at every :data:`BATCH_SIZES` entry; ``speedup`` = (p25, median, p75) at each."""
    r = RunResult(model=model, method=method, kind=kind, target="ratio", ratio=ratio, params=100, macs=1e6,
                  accuracy=acc, accuracy_samples=360 if acc is not None else None, threads=2, load_before=0.5,
                  load_after=0.7, macs_fraction=macs_fraction, widths=dict(widths or DENSE_WIDTHS))
    for bs in BATCH_SIZES:
        r.latency[bs] = stats(ms * bs)
        r.timing[bs] = {"threads": 2, "cpus": 2, "rounds": 7, "load_before": 0.5, "load_after": 0.7}
        if speedup is not None:
            r.speedup_p25[bs], r.speedup[bs], r.speedup_p75[bs] = speedup
            r.dense_latency[bs] = stats(ms * bs * speedup[1])
    return r


def sweep(model: str = "m") -> list[RunResult]:
    """Dense, two structural methods that agree exactly (colliding points), and masking at noise level."""
    half = {"stem.0": 16, "stages.0.0.conv1": 16, "stages.1.0.conv1": 32, "fc": 10}
    third = {"stem.0": 22, "stages.0.0.conv1": 22, "stages.1.0.conv1": 45, "fc": 10}
    rows = [row("dense", "dense", None, 10.0, 0.99, model=model)]
    for method in ("magnitude", "taylor"):  # identical numbers: every point and label collides
        rows += [row(method, "structural", 0.3, 7.0, 0.985, (1.35, 1.43, 1.5), third, model, 0.49),
                 row(method, "structural", 0.5, 4.0, 0.98, (2.4, 2.5, 2.6), half, model, 0.26)]
    rows += [row("masking", "masking", 0.3, 10.1, 0.99, (0.97, 0.99, 1.02), model=model, macs_fraction=1.0),
             row("masking", "masking", 0.5, 9.8, 0.985, (0.98, 1.02, 1.05), model=model, macs_fraction=1.0)]
    return rows
