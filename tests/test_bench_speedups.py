"""The noise rule, the report's wording of speedups, and the runner's paired timings.

The report never calls a speedup whose quartiles span 1.0 "faster"; the runner records
the paired speedup with its quartiles at every batch size. Timing uses a fake clock
(compare_latency's ``clock``), so the expected numbers are exact, or a tiny real model
with asserts that hold at any speed.
"""

from __future__ import annotations

import pytest
from bench_rows import row, sweep
from torch import nn

from lightning_prune.bench import timing
from lightning_prune.bench.analysis import latency_trends
from lightning_prune.bench.config import BenchConfig, ModelSpec
from lightning_prune.bench.report import render_report
from lightning_prune.bench.runner import BenchRun
from lightning_prune.bench.speedups import row_speedup, verdict
from lightning_prune.engine.utils import compare_latency

ENV = {"date": "d", "torch": "t", "torchvision": "tv", "lightning": "l", "python": "p", "platform": "x",
       "cpu_count": 2, "threads": 2, "device": "cpu"}


@pytest.mark.parametrize("quartiles, expected", [
    ((0.97, 1.01, 1.05), "no measurable difference"),  # the IQR spans 1.0
    ((1.01, 1.02, 1.03), "no measurable difference"),  # tight, but under 3%
    ((1.20, 1.30, 1.40), "faster"),
    ((0.50, 0.60, 0.70), "slower"),
])
def test_verdict(quartiles, expected):
    p25, median, p75 = quartiles
    assert verdict(median, p25, p75) == expected


def test_verdict_rejects_unordered_quartiles():
    with pytest.raises(ValueError, match="p25 <= median <= p75"):
        verdict(1.0, 1.2, 1.1)


def test_rows_without_paired_quartiles_fall_back_on_both_models_spreads():
    dense = row("dense", "dense", None, 10.0, None)
    close = row("masking", "masking", 0.5, 9.5, None)  # 5% faster, but the +-5% quartiles overlap
    far = row("magnitude", "structural", 0.5, 3.0, None)
    s_close, s_far = row_speedup(close, 256, dense), row_speedup(far, 256, dense)
    assert not s_close.paired and s_close.verdict == "no measurable difference"
    assert s_far.verdict == "faster" and s_far.p25 <= s_far.median <= s_far.p75
    assert row_speedup(far, 8, dense) is None  # not timed at batch 8


def _report(rows) -> str:
    cfg = BenchConfig(batch_sizes=[1, 256], ratios=[0.3, 0.5], plots=False, output_dir="unused")
    return render_report(BenchRun(config=cfg, results=rows, environment=dict(ENV)))


def test_the_report_never_calls_noise_faster_and_gives_structural_speedups_with_spread_and_batch():
    rows = [r for r in sweep() if r.method in ("dense", "magnitude")]
    rows += [row("masking", "masking", 0.3, 9.0, 0.99, (0.95, 1.08, 1.2)),  # median 1.08x, IQR spans 1.0
             row("masking", "masking", 0.5, 9.0, 0.99, (0.96, 1.10, 1.25))]
    report = _report(rows)
    masking = next(line for line in report.splitlines() if line.startswith("- masking") and "batch" not in line)
    assert "no measurable difference" in masking and "faster" not in masking
    assert "1.10x (IQR 0.96-1.25x over 7 paired rounds)" in masking
    magnitude = [line for line in report.splitlines() if line.startswith("- magnitude")]
    assert len(magnitude) == 2  # one per batch size
    assert all("faster than dense at the most pruned ratio: 2.50x (IQR 2.40-2.60x over 7 paired rounds)" in line
               for line in magnitude)
    assert "**Latency against ratio** (batch 256, 2 thread(s)" in report
    assert "**Latency against ratio** (batch 1, 2 thread(s); per-operator overhead" in report
    assert "| 1.10x [0.96-1.25] n.s. |" in report and "| 2.50x [2.40-2.60] |" in report
    assert "Load average during the timings**: 0.5 to 0.7 on 2 CPUs" in report


def test_masking_measurably_faster_is_flagged_as_an_artifact():
    rows = [row("dense", "dense", None, 10.0, 0.99), row("masking", "masking", 0.3, 8.0, 0.99, (1.2, 1.25, 1.3)),
            row("masking", "masking", 0.5, 8.0, 0.99, (1.2, 1.25, 1.3))]
    line = next(x for x in _report(rows).splitlines() if x.startswith("- masking"))
    assert "measured faster" in line and "artifact" in line


def test_trends_carry_the_spread_of_every_run():
    (trend,) = [t for t in latency_trends(sweep(), "m", 256, "ratio") if t.method == "magnitude"]
    assert trend.batch_size == 256 and trend.falls and trend.speedup == pytest.approx(2.5)
    assert [s.median for s in trend.speedups] == pytest.approx([1.43, 2.5])
    (masking,) = [t for t in latency_trends(sweep(), "m", 256, "ratio") if t.method == "masking"]
    assert not masking.falls


# ---------------------------------------------------------------- the runner's timings
class Machine:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now


class Scripted(nn.Module):
    """Each forward "takes" ``ms`` per sample on the fake machine."""

    def __init__(self, machine: Machine, ms: float) -> None:
        super().__init__()
        self.machine, self.ms = machine, ms
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        self.machine.now += self.ms * x.shape[0] / 1000
        return self.fc(x)


def _cfg(**kw) -> BenchConfig:
    base = {"models": [ModelSpec("small_resnet", input_shape=[1, 4])], "batch_sizes": [1, 8], "accuracy": False,
            "warmup": 1, "warmup_seconds": 0.0, "settle": None, "repeats": 5, "threads": 1, "min_run_time": 0.01,
            "plots": False, "profile": False}
    return BenchConfig(**{**base, **kw})


def test_time_row_records_paired_speedups_with_quartiles_at_every_batch_size(monkeypatch):
    machine = Machine()
    monkeypatch.setattr(timing, "compare_latency", lambda *a, **kw: compare_latency(*a, **kw, clock=machine.clock))
    dense, pruned = Scripted(machine, 4.0), Scripted(machine, 1.0)
    r = row("magnitude", "structural", 0.5, 1.0, None)
    r.latency, r.timing, r.speedup = {}, {}, {}
    timing.time_row(r, pruned, [1, 4], _cfg(), dense=dense)
    assert sorted(r.latency) == sorted(r.speedup) == sorted(r.speedup_p25) == sorted(r.dense_latency) == [1, 8]
    for bs in (1, 8):
        assert (r.speedup_p25[bs], r.speedup[bs], r.speedup_p75[bs]) == pytest.approx((4.0, 4.0, 4.0))
        assert r.latency[bs]["median_ms"] == pytest.approx(1.0 * bs)
        assert r.dense_latency[bs]["median_ms"] == pytest.approx(4.0 * bs)
        assert r.latency[bs]["repeats"] == 5 and r.timing[bs]["rounds"] == 5 and r.timing[bs]["threads"] == 1
    assert r.threads == 1 and r.load_before == r.timing[1]["load_before"]


def test_time_row_refuses_the_row_model_as_its_own_dense():
    net = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="dense=None"):
        timing.time_row(row("x", "structural", 0.5, 1.0, None), net, [1, 4], _cfg(), dense=net)


def test_runner_rows_have_paired_speedups_from_real_timings(tmp_path):
    from lightning_prune.bench.runner import run_benchmark

    cfg = _cfg(models=[ModelSpec("small_resnet", input_shape=[1, 1, 8, 8], kwargs={"width": 8})],
               methods=["magnitude", "masking"], ratios=[0.5], batch_sizes=[1, 4], repeats=3, min_run_time=0.002,
               output_dir=str(tmp_path))
    run = run_benchmark(cfg, progress=None)
    rows = {r.method: r for r in run.results}
    assert all(r.ok for r in run.results), [r.error for r in run.results]
    assert not rows["dense"].speedup and sorted(rows["dense"].latency) == [1, 4]
    for method in ("magnitude", "masking"):
        r = rows[method]
        for bs in (1, 4):
            assert r.speedup_p25[bs] <= r.speedup[bs] <= r.speedup_p75[bs]
            assert r.latency[bs]["p25_ms"] <= r.latency[bs]["median_ms"] <= r.latency[bs]["p75_ms"]
            assert r.dense_latency[bs]["repeats"] == 3 and r.timing[bs]["rounds"] == 3
        csv_row = r.csv_row(cfg.batch_sizes)
        assert csv_row["speedup_p75_bs4"] == r.speedup_p75[4] and csv_row["dense_latency_ms_bs1"] != ""
