"""The latency budget (``target_latency``): solver, width snapping, arguments, callback.

Nothing here times the machine: the solver runs on a deterministic cost model injected
as ``latency_timer``, in which a layer costs its MACs with channel counts rounded up to
a multiple of 8 (as a vectorized kernel would), plus a fixed floor for what no prune
touches. The real timer is only smoke-tested (it runs and reports), never its figures.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine.measure.latency import summarize_times
from lightning_prune.engine.measure.layer_timing import (
    LayerSpec,
    WidthTable,
    candidate_widths,
    choose_width,
    layer_spec,
)
from lightning_prune.engine.pruner.latency_budget import latency_inputs
from lightning_prune.engine.pruner.latency_trial import materialize

SIDE = 8  # input height and width of the test model


def ceil8(n: int) -> int:
    return 8 * math.ceil(n / 8)


def layer_cost(kind: str, cin: int, cout: int, kernel: int, groups: int = 1, pixels: int = SIDE * SIDE) -> float:
    """Milliseconds of the fake device: MACs with widths padded to multiples of 8."""
    per_pixel = pixels if kind != "linear" else 1
    return ceil8(cin // groups) * ceil8(cout) * kernel * kernel * per_pixel / 2e4


class FakeTimer:
    """A deterministic :class:`~lightning_prune.engine.pruner.LatencyTimer`: the model's
    conv and linear layers cost :func:`layer_cost`, plus ``floor_ms`` for everything else."""

    def __init__(self, floor_ms: float = 5.0, fail: bool = False) -> None:
        self.floor_ms, self.fail, self.model_calls, self.layer_calls = floor_ms, fail, 0, 0

    def model(self, module: nn.Module, inputs) -> tp.utils.LatencyStats:
        if self.fail:
            raise RuntimeError("the timing device went away")
        self.model_calls += 1
        ms = self.floor_ms
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                ms += layer_cost("conv", m.in_channels, m.out_channels, m.kernel_size[0], m.groups)
            elif isinstance(m, nn.Linear):
                ms += layer_cost("linear", m.in_features, m.out_features, 1)
        return summarize_times([ms / 1000] * 3)

    def layer(self, spec: LayerSpec) -> float:
        self.layer_calls += 1
        k = spec.kernel_size[0] if spec.kernel_size else 1
        return layer_cost(spec.kind, spec.in_channels, spec.out_channels, k, spec.groups)


def net(widths: tuple[int, ...] = (96, 128, 160, 192, 224)) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for cin, cout in zip((3, *widths), widths):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 10))


def example() -> torch.Tensor:
    return torch.randn(1, 3, SIDE, SIDE)


def fake_ratio(model: nn.Module, dense: nn.Module, timer: FakeTimer) -> float:
    x = example()
    return timer.model(model, x).median_ms / timer.model(dense, x).median_ms


# ---------------------------------------------------------------------------- solver


@pytest.mark.parametrize("target", [0.75, 0.5, 0.3])
def test_the_solver_reaches_the_target_within_5_percent_on_a_fake_device(target: float) -> None:
    model, dense, timer = net(), net(), FakeTimer()
    x = example()
    pruner = tp.pruner.MetaPruner(model, x, target_latency=target, latency_timer=timer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching the target warns about nothing
        pruner.step()
    report = pruner.latency_report
    assert report is not None and report.target == pytest.approx(target)
    assert report.within_tolerance, report
    assert abs(report.realized - target) <= 0.05 * target
    assert report.realized == pytest.approx(fake_ratio(model, dense, timer), rel=1e-6)  # what the model is now
    assert report.floor is None and report.spread == 0.0  # a deterministic timer has no spread
    assert report.batch_size == 1 and report.trials >= 2
    assert model(x).shape == dense(x).shape == (1, 10)


def test_a_target_below_the_floor_prunes_to_the_floor_and_warns_naming_it() -> None:
    timer = FakeTimer(floor_ms=4000.0)  # what no prune touches: the floor is about 0.55 of dense
    model, dense = net(), net()
    pruner = tp.pruner.MetaPruner(model, example(), target_latency=0.3, latency_timer=timer)
    with pytest.warns(UserWarning, match=r"target_latency: 0\.300 .*out of reach: the floor is 0\.5"):
        pruner.step()
    report = pruner.latency_report
    assert report.floor is not None and not report.within_tolerance
    assert report.floor == pytest.approx(report.realized)
    # at the floor every prunable group is at its minimum width: no prune can go lower
    floor_ms = timer.floor_ms + sum(layer_cost("conv", *c, 3) for c in [(3, 1)] + [(1, 1)] * 4) + \
        layer_cost("linear", 1, 10, 1)
    assert report.realized == pytest.approx(floor_ms / timer.model(dense, example()).median_ms, rel=1e-6)


def test_iterative_steps_spread_the_latency_target_over_the_schedule() -> None:
    timer = FakeTimer()
    model = net()
    pruner = tp.pruner.MetaPruner(model, example(), target_latency=0.4, iterative_steps=2, latency_timer=timer)
    pruner.step()
    first = pruner.latency_report
    pruner.step()
    second = pruner.latency_report
    assert first.target == pytest.approx(0.7) and second.target == pytest.approx(0.4)
    assert first.within_tolerance and second.within_tolerance
    assert second.realized < first.realized


def test_a_failing_latency_step_leaves_the_model_unchanged() -> None:
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = tp.pruner.MetaPruner(model, example(), target_latency=0.5, latency_timer=FakeTimer(fail=True))
    with pytest.raises(RuntimeError, match="timing device went away"):
        pruner.step()
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert pruner.current_step == 0 and pruner.latency_report is None


def test_variant_pruners_take_the_latency_budget() -> None:
    timer = FakeTimer()
    pruner = tp.pruner.MagnitudePruner(net(), example(), target_latency=0.5, latency_timer=timer)
    pruner.step()
    assert pruner.latency_report.within_tolerance


def test_the_default_timer_measures_and_reports_where_it_ran() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    pruner = tp.pruner.MetaPruner(model, torch.randn(1, 3, 8, 8), target_latency=0.5, latency_batch_size=2,
                                  latency_threads=1, latency_device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether a tiny model reaches it depends on the machine
        pruner.step()
    report = pruner.latency_report
    assert report.batch_size == 2 and report.threads == 1 and report.device == "cpu"
    assert report.dense_ms > 0 and report.pruned_ms > 0 and report.spread >= 0
    assert "of dense (target 0.500" in str(report)
    assert model(torch.randn(3, 3, 8, 8)).shape == (3, 4)


# ---------------------------------------------------------------------------- width table


def test_choose_width_snaps_to_the_measured_friendly_multiple() -> None:
    times = {c: float(ceil8(c)) for c in candidate_widths(60, 128)}  # 60 costs what 64 does
    assert sorted(times) == [56, 60, 64]
    assert choose_width(times, 60) == 64
    # the same widths without a step in the timings: noise-sized differences keep the plan
    assert choose_width({56: 56.0, 60: 60.2, 64: 64.0}, 60) == 60


def test_choose_width_prefers_a_width_that_runs_below_the_trend() -> None:
    times = {40: 40.0, 44: 44.0, 48: 36.0, 52: 52.0}  # 48 has a fast kernel
    assert choose_width(times, 44) == 48
    with pytest.raises(ValueError, match="planned width 10"):
        choose_width({8: 1.0, 16: 2.0}, 10)


def test_candidate_widths_stay_near_the_plan_below_the_current_width_and_on_unit_steps() -> None:
    assert candidate_widths(60, 62) == [56, 60]
    assert all(c % 3 == 0 for c in candidate_widths(45, 96, step=3))
    assert max(candidate_widths(100, 512)) <= 113 and min(candidate_widths(100, 512)) >= 87


def test_the_width_table_times_each_distinct_layer_once() -> None:
    calls = []
    table = WidthTable(lambda spec: calls.append(spec) or float(spec.out_channels))
    spec = layer_spec(nn.Conv2d(8, 16, 3), (4, 8, 10, 10))
    assert table.ms(spec) == 16.0 and table.ms(spec.with_out(16)) == 16.0 and table.ms(spec.with_out(24)) == 24.0
    assert len(calls) == 2 and len(table) == 2
    depthwise = layer_spec(nn.Conv2d(16, 16, 3, groups=16), (1, 16, 8, 8))
    assert depthwise.with_out(8).groups == 8 and depthwise.with_in(8).out_channels == 8
    assert layer_spec(nn.Conv2d(16, 16, 3, groups=4), (1, 16, 8, 8)) is None  # grouped: not snapped
    layer, x = layer_spec(nn.Linear(8, 4), (2, 5, 8)).with_in(6).build("cpu")
    assert layer(x).shape == (2, 5, 4)


def test_the_solver_snaps_groups_to_widths_the_fake_device_runs_best() -> None:
    timer = FakeTimer()
    model = net()
    pruner = tp.pruner.MetaPruner(model, example(), target_latency=0.5, latency_timer=timer)
    pruner.step()
    assert timer.layer_calls > 0
    if pruner.latency_report.snapped_groups:
        widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert any(w % 8 == 0 for w in widths)


# ---------------------------------------------------------------------------- helpers


def test_latency_inputs_repeat_the_example_to_the_batch_size() -> None:
    x = torch.arange(2.0).view(2, 1)
    out = latency_inputs({"x": x, "n": torch.tensor(3)}, 5)
    assert out["x"].flatten().tolist() == [0, 1, 0, 1, 0] and out["n"].item() == 3
    assert latency_inputs(x, None) is x


def test_materialize_copies_matching_tensors_and_fills_pruned_ones() -> None:
    model = net()
    model[1].running_var.fill_(2.0)
    clone = tp.pruner.meta_clone(model)
    clone[0] = nn.Conv2d(3, 94, 3, padding=1, device="meta")  # a pruned layer: no source of its shape
    real = materialize(clone, model, "cpu")
    assert torch.equal(real[3].weight, model[3].weight) and torch.equal(real[1].running_var, model[1].running_var)
    assert real[0].weight.shape == (94, 3, 3, 3) and torch.isfinite(real[0].weight).all()
    assert 0 < real[0].weight.abs().max() < 1  # small ordinary values, not whatever memory held


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2, True, "0.5"])
def test_target_latency_outside_the_open_unit_interval_is_refused(value) -> None:
    with pytest.raises(ValueError, match="target_latency .* must be in \\(0, 1\\)"):
        tp.pruner.MetaPruner(net(), example(), target_latency=value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_latency=0.5, target_macs=0.5), "at most one of target_macs, target_params and target_latency"),
    (dict(target_latency=0.5, pruning_ratio=0.3), "either pruning_ratio or a budget"),
    (dict(latency_batch_size=8), "latency_batch_size configures the latency budget and needs target_latency"),
    (dict(latency_threads=2), "latency_threads configures the latency budget"),
    (dict(target_latency=0.5, latency_batch_size=0), "latency_batch_size must be a positive int"),
    (dict(target_latency=0.5, latency_threads=1.5), "latency_threads must be a positive int"),
    (dict(target_latency=0.5, latency_device="nonsense"), "latency_device must be a torch device"),
    (dict(target_latency=0.5, latency_timer=FakeTimer(), latency_threads=1), "set them on your timer"),
])
def test_bad_latency_arguments_fail_naming_the_argument(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        tp.pruner.MetaPruner(net(), example(), **kwargs)


def test_a_latency_timer_without_the_protocol_is_refused() -> None:
    with pytest.raises(TypeError, match="latency_timer must have model"):
        tp.pruner.MetaPruner(net(), example(), target_latency=0.5, latency_timer=object())


# ---------------------------------------------------------------------------- callback


def test_the_callback_prunes_to_a_latency_target_and_logs_the_realized_ratio(monkeypatch) -> None:
    from lightning_helpers import ConvNet, RecordingLogger, loaders, trainer

    import lightning_prune.engine.pruner.latency_budget as latency_budget
    from lightning_prune import PruningCallback

    monkeypatch.setattr(latency_budget, "DefaultLatencyTimer", lambda device, threads: FakeTimer(floor_ms=1.0))
    callback = PruningCallback(target_latency=0.5, pruning_steps=2, monitor=None, measure_latency=False)
    callback.latency_batch_sizes, callback.latency_threads = [4, 1], 1  # the coordinator's options, once merged
    module, logger = ConvNet(width=64), RecordingLogger()
    train, val = loaders()
    trainer(2, [callback], logger=logger).fit(module, train, val)
    report = callback.pruner.latency_report
    assert report.target == pytest.approx(0.5) and report.batch_size == 4 and report.threads == 1
    assert module.body[0].out_channels < 64
    ratios = [m["pruning/latency_ratio"] for m in logger.metrics if "pruning/latency_ratio" in m]
    assert len(ratios) == 2 and ratios[-1] == pytest.approx(report.realized) and ratios[1] < ratios[0]


def test_the_callback_refuses_a_latency_target_outside_the_unit_interval() -> None:
    from lightning_prune import PruningCallback

    with pytest.raises(ValueError, match="PruningCallback: target_latency .* must be in \\(0, 1\\)"):
        PruningCallback(target_latency=1.0)
    with pytest.raises(ValueError, match="at most one of target_macs, target_params and target_latency"):
        tp.pruner.MetaPruner(net(), example(), target_latency=0.5, target_params=0.5)
