"""compare_latency: models timed in turns with torch's Timer, paired speedups, honest labels.

The clock is fake: it advances only when a model runs, by that model's scripted duration
times a machine-speed factor, so the statistics can be checked exactly.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine.utils import compare_latency, with_batch_size


class FakeMachine:
    def __init__(self) -> None:
        self.now = 0.0
        self.speed = 1.0  # > 1: the machine runs slower
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now


class Scripted(nn.Module):
    """A model whose forward "takes" ``ms`` milliseconds on the fake machine."""

    def __init__(self, machine: FakeMachine, name: str, ms: float) -> None:
        super().__init__()
        self.machine, self.name, self.ms = machine, name, ms
        self.fc = nn.Linear(4, 4)
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.machine.now += self.ms / 1000 * self.machine.speed
        self.machine.calls.append(self.name)
        self.modes.append((self.training, torch.is_inference_mode_enabled()))
        return self.fc(x)


def test_medians_and_paired_speedup_are_exact_on_a_steady_machine():
    machine = FakeMachine()
    dense, pruned = Scripted(machine, "dense", 4.0).train(), Scripted(machine, "pruned", 1.0)
    result = compare_latency({"dense": dense, "pruned": pruned}, torch.randn(3, 4), rounds=5, min_run_time=0.02,
                             warmup_seconds=0.0, clock=machine.clock)
    assert result.stats["dense"].median_ms == pytest.approx(4.0)
    assert result.stats["pruned"].median_ms == pytest.approx(1.0)
    speedup = result.speedup("dense", "pruned")
    assert (speedup.median, speedup.p25, speedup.p75, speedup.rounds) == pytest.approx((4.0, 4.0, 4.0, 5))
    assert result.batch_size == 3 and result.threads == torch.get_num_threads() and result.cpus >= 1
    # eval mode and inference mode while timed; the caller's mode comes back
    assert all(m == (False, True) for m in dense.modes) and dense.training


def test_rounds_take_turns_and_the_order_flips():
    machine = FakeMachine()
    models = {"a": Scripted(machine, "a", 2.0), "b": Scripted(machine, "b", 2.0)}
    compare_latency(models, torch.randn(1, 4), rounds=4, min_run_time=0.01, warmup_seconds=0.0, clock=machine.clock)
    runs = [name for k, name in enumerate(machine.calls) if k == 0 or machine.calls[k - 1] != name]
    # warm-up a, warm-up b, then rounds a b | b a | a b | b a: adjacent runs of one model merge
    assert runs == ["a", "b", "a", "b", "a", "b", "a"]


def test_drift_between_rounds_cancels_in_the_paired_speedup(monkeypatch):
    from torch.utils.benchmark import Timer

    from lightning_prune.engine.measure import latency_compare

    machine = FakeMachine()
    blocks = []

    class DriftingTimer(Timer):
        def blocked_autorange(self, *args, **kwargs):
            if len(blocks) % 2 == 0:
                machine.speed *= 1.5  # the machine slows down between rounds
            blocks.append(1)
            return super().blocked_autorange(*args, **kwargs)

    monkeypatch.setattr(latency_compare, "_timer_class", lambda: DriftingTimer)
    dense, pruned = Scripted(machine, "dense", 4.0), Scripted(machine, "pruned", 1.0)
    result = compare_latency({"dense": dense, "pruned": pruned}, torch.randn(1, 4), rounds=6, min_run_time=0.02,
                             warmup_seconds=0.0, clock=machine.clock)
    assert len(blocks) == 12
    assert result.stats["dense"].iqr_ms > 1.0  # the medians drifted a lot...
    assert result.speedup("dense", "pruned").median == pytest.approx(4.0)  # ...the paired ratio did not


def test_the_load_is_reported():
    machine = FakeMachine()
    result = compare_latency({"m": Scripted(machine, "m", 1.0)}, torch.randn(1, 4), rounds=1, min_run_time=0.01,
                             warmup_seconds=0.0, clock=machine.clock)
    assert "on" in result.load_note() and "CPUs" in result.load_note()
    assert result.load_before is None or result.load_before >= 0


def test_real_timing_of_a_model_and_its_pruned_copy_runs():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 8, 3)).eval()
    pruned = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 8, 3)).eval()
    tp.pruner.MetaPruner(pruned, torch.randn(1, 3, 16, 16), pruning_ratio=0.5).step()
    result = compare_latency({"dense": dense, "pruned": pruned}, torch.randn(2, 3, 16, 16), rounds=2,
                             min_run_time=0.01, warmup_seconds=0.0, threads=1)
    assert result.threads == 1 and len(result.round_ms["pruned"]) == 2
    assert result.speedup("dense", "pruned").median > 0


def test_with_batch_size_cycles_rows_and_keeps_containers():
    x = torch.arange(6.0).reshape(3, 2)
    y = with_batch_size({"a": x, "n": torch.tensor(5)}, 5)
    assert torch.equal(y["a"], x[[0, 1, 2, 0, 1]]) and int(y["n"]) == 5
    assert with_batch_size(x, 3) is x
    with pytest.raises(ValueError, match="batch_size"):
        with_batch_size(x, 0)


@pytest.mark.parametrize("kwargs, match", [({"rounds": 0}, "rounds"), ({"min_run_time": 0}, "min_run_time"),
                                           ({"threads": 0}, "threads"), ({"warmup_seconds": -1}, "warmup_seconds")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_latency({"m": nn.Linear(4, 4)}, torch.randn(1, 4), **kwargs)


def test_unknown_models_and_empty_input_are_refused():
    with pytest.raises(ValueError, match="models is empty"):
        compare_latency({}, torch.randn(1, 4))
    with pytest.raises(TypeError, match=r"models\['m'\]"):
        compare_latency({"m": "not a model"}, torch.randn(1, 4))
    machine = FakeMachine()
    result = compare_latency({"m": Scripted(machine, "m", 1.0)}, torch.randn(1, 4), rounds=1, min_run_time=0.01,
                             warmup_seconds=0.0, clock=machine.clock)
    with pytest.raises(KeyError, match="dense"):
        result.speedup("dense", "m")
