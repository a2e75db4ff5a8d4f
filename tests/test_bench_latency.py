"""measure_latency: warm-up and repeats are honoured, statistics are right, state is restored."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from lightning_prune.engine.utils import measure_latency, summarize_times


class CountingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.calls = 0
        self.modes: list[bool] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x):
        self.calls += 1
        self.modes.append(self.training)
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.fc(x)


class FakeClock:
    """Each timed run lasts the next duration of ``durations_ms``."""

    def __init__(self, durations_ms: list[float]) -> None:
        self.durations = [d / 1000 for d in durations_ms]
        self.now, self.started = 0.0, False

    def __call__(self) -> float:
        if self.started:  # stop of a run
            self.now += self.durations.pop(0)
        self.started = not self.started
        return self.now


def test_warmup_and_repeats_are_honoured_in_eval_mode_without_autograd():
    net = CountingNet().train()
    stats = measure_latency(net, torch.randn(3, 4), warmup=4, repeats=9)
    assert net.calls == 4 + 9
    assert (stats.warmup, stats.repeats) == (4, 9)
    assert not any(net.modes) and not any(net.grad_enabled)
    assert net.training  # mode restored


def test_statistics_from_known_durations():
    durations = [5.0, 1.0, 4.0, 2.0, 3.0, 100.0, 3.0]  # one outlier
    stats = measure_latency(CountingNet(), torch.randn(1, 4), warmup=2, repeats=7, clock=FakeClock(durations))
    ordered = sorted(durations)  # 1 2 3 3 4 5 100
    assert stats.median_ms == pytest.approx(3.0)
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(100.0)
    assert stats.mean_ms == pytest.approx(sum(durations) / 7)
    assert stats.std_ms == pytest.approx(statistics.stdev(durations))
    # inclusive quartiles of 7 values: positions 1.5 and 4.5 -> 2.5 and 4.5
    assert stats.p25_ms == pytest.approx((ordered[1] + ordered[2]) / 2)
    assert stats.p75_ms == pytest.approx((ordered[4] + ordered[5]) / 2)
    assert stats.iqr_ms == pytest.approx(2.0)  # the 100 ms outlier moves the mean, not the median or IQR
    assert stats.as_dict()["iqr_ms"] == pytest.approx(2.0)


def test_single_run_and_hand_computed_quartiles():
    one = summarize_times([0.002])
    assert (one.median_ms, one.p25_ms, one.p75_ms, one.std_ms) == (2.0, 2.0, 2.0, 0.0)
    five = summarize_times([0.001, 0.002, 0.003, 0.004, 0.005], warmup=3)
    assert (five.p25_ms, five.median_ms, five.p75_ms) == pytest.approx((2.0, 3.0, 4.0))
    assert five.warmup == 3 and five.repeats == 5


def test_thread_count_is_set_for_the_measurement_and_restored():
    before = torch.get_num_threads()
    seen = []

    class ThreadProbe(nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x

    threads = 2 if before == 1 else 1  # a count other than the caller's
    measure_latency(ThreadProbe(), torch.randn(1), warmup=1, repeats=2, threads=threads)
    assert seen == [threads] * 3
    assert torch.get_num_threads() == before


def test_tuple_and_dict_inputs():
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    assert measure_latency(Two(), (torch.ones(2), torch.ones(2)), warmup=0, repeats=2).repeats == 2
    assert measure_latency(Two(), {"a": torch.ones(2), "b": torch.ones(2)}, warmup=0, repeats=2).repeats == 2


@pytest.mark.parametrize("kwargs, match", [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup"), ({"settle": 1.5}, "settle"),
                                           ({"threads": 0}, "threads")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_latency(CountingNet(), torch.randn(1, 4), **kwargs)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    with pytest.raises(ValueError, match="CUDA is not available"):
        measure_latency(CountingNet(), torch.randn(1, 4), device="cuda")


def test_time_based_warmup_keeps_going_until_the_deadline():
    import time

    class Slow(nn.Module):
        calls = 0

        def forward(self, x):
            Slow.calls += 1
            time.sleep(0.01)
            return x

    stats = measure_latency(Slow(), torch.randn(1), warmup=1, repeats=2, warmup_seconds=0.06)
    assert stats.warmup >= 5  # 60 ms of 10 ms calls, not just the 1 requested
    assert Slow.calls == stats.warmup + 2


def test_settle_keeps_warming_up_until_two_windows_agree():
    # windows of 3 runs: 10 ms, then 5 ms (changed), then 5 ms (settled); then 4 timed runs
    durations = [10.0] * 3 + [5.0] * 3 + [5.0] * 3 + [5.0, 5.0, 6.0, 5.0]
    net = CountingNet()
    stats = measure_latency(net, torch.randn(1, 4), warmup=2, repeats=4, settle=0.05, clock=FakeClock(durations))
    assert stats.warmup == 2 + 9 and net.calls == 2 + 9 + 4
    assert stats.median_ms == pytest.approx(5.0) and stats.max_ms == pytest.approx(6.0)


def test_settle_gives_up_after_max_warmup_seconds():
    durations = [float(i) for i in range(1, 400)]  # never settles
    stats = measure_latency(CountingNet(), torch.randn(1, 4), warmup=0, repeats=1, settle=0.01,
                            max_warmup_seconds=0.0, clock=FakeClock(durations))
    assert stats.warmup == 0 and stats.repeats == 1
