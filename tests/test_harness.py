"""The forward harness that tracer and op counter share: stand-ins, attributes, modes, all put back."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine import harness
from lightning_prune.engine.measure import MetaOpCache, op_counter


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.b(self.a(x)))


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0][:, -1])


def _state(model: nn.Module) -> dict:
    return {
        "tensors": {k: (id(v), v.device.type) for k, v in model.state_dict(keep_vars=True).items()},
        "attrs": [(m, dict(vars(m))) for m in model.modules()],
        "modes": [m.training for m in model.modules()],
    }


def _assert_same(model: nn.Module, before: dict) -> None:
    after = _state(model)
    assert after["tensors"] == before["tensors"]
    assert after["modes"] == before["modes"]
    for (m, old), (_, new) in zip(before["attrs"], after["attrs"], strict=True):
        assert old.keys() == new.keys(), type(m).__name__
        assert all(old[k] is new[k] for k in old), type(m).__name__


@pytest.mark.parametrize("device", ["meta", "real"])
def test_tied_tensors_share_one_stand_in_and_come_back(device: str) -> None:
    model = Tied()
    weight = model.a.weight
    before = _state(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    with harness.stand_in_forward(modules, device) as stand_ins:
        assert model.a.weight is model.b.weight
        assert model.a.weight is not weight
        assert (model.a.weight.device.type == "meta") == (device == "meta")
        name, original = stand_ins.names[id(model.b.weight)]
        assert name == "a.weight" and original.device.type == "cpu"
    _assert_same(model, before)


def test_real_stand_ins_copy_buffers_and_view_parameters() -> None:
    model = Tied().train()
    weight, mean = model.a.weight, model.bn.running_mean.clone()
    with harness.stand_in_forward(dict(model.named_modules()), "real"), torch.no_grad():
        model(torch.randn(5, 4))
        assert model.a.weight is not weight and model.a.weight.data_ptr() == weight.data_ptr()
    assert torch.equal(model.bn.running_mean, mean)


@pytest.mark.parametrize("device", ["meta", "real"])
def test_rnn_runs_on_its_stand_ins_and_keeps_its_weight_cache(device: str) -> None:
    model = Recurrent()
    flat, refs = model.lstm._flat_weights, list(model.lstm._flat_weights)
    before = _state(model)
    with harness.stand_in_forward(dict(model.named_modules()), device), torch.no_grad():
        assert all(w is getattr(model.lstm, n) for w, n in
                   zip(model.lstm._flat_weights, model.lstm._flat_weights_names, strict=True))
        x = harness.stand_in_inputs(torch.randn(2, 5, 6), device)
        assert model(x).device.type == ("meta" if device == "meta" else "cpu")
    _assert_same(model, before)
    assert model.lstm._flat_weights is flat and all(a is b for a, b in zip(flat, refs, strict=True))
    assert model(torch.randn(2, 5, 6)).shape == (2, 3)


def test_attributes_a_forward_binds_are_undone() -> None:
    model = Tied()
    keep = model.a.__dict__["training"]
    snapshot = harness.AttributeSnapshot(model.modules())
    model.a.cache = torch.zeros(1)
    model.b.__dict__["in_features"] = 99
    del model.bn.__dict__["momentum"]
    snapshot.restore()
    assert not hasattr(model.a, "cache") and model.b.in_features == 4 and model.bn.momentum == 0.1
    assert model.a.training is keep


def test_rebound_tensor_attributes_come_back_by_identity() -> None:
    """The restore's quick check compares dicts with ``==``: a rebound tensor (whose
    ``__eq__`` is element-wise, or refuses meta against real) must still be put back."""
    model = Tied()
    model.a.__dict__["scale"] = scale = torch.ones(3)
    model.b.__dict__["step"] = step = torch.zeros(())
    snapshot = harness.AttributeSnapshot(model.modules())
    model.a.__dict__["scale"] = torch.ones(3)  # equal values, another object
    model.b.__dict__["step"] = torch.empty((), device="meta")
    snapshot.restore()
    assert model.a.scale is scale and model.b.step is step


def test_modes_are_set_and_restored_per_module_without_train() -> None:
    class Stubborn(nn.Module):
        def train(self, mode: bool = True) -> nn.Module:
            raise AssertionError("train() must not be called")

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), Stubborn())
    model.__dict__["training"] = True
    model[1].__dict__["training"] = False
    before = [m.training for m in model.modules()]
    with harness.training_flags(model.modules(), True):
        assert all(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with harness.training_flags(model.modules(), None):
        assert [m.training for m in model.modules()] == before


def test_move_inputs_and_call_model_follow_the_convention() -> None:
    Pair = namedtuple("Pair", "x y")
    moved = harness.move_inputs({"a": [torch.ones(1)], "b": Pair(torch.ones(1), 3)}, "meta")
    assert moved["a"][0].device.type == "meta" and isinstance(moved["b"], Pair) and moved["b"].y == 3
    seen = []
    model = nn.Module()
    model.forward = lambda *args, **kwargs: seen.append((args, kwargs))
    harness.call_model(model, {"k": 1})
    harness.call_model(model, (1, 2))
    harness.call_model(model, 5)
    assert seen == [((), {"k": 1}), ((1, 2), {}), ((5,), {})]
    assert harness.run_forward(model, 7, lambda m, inp: inp * 2) == 14


def test_tracer_leaves_an_rnn_model_as_it_was() -> None:
    model = Recurrent().eval()
    before = _state(model)
    graph = tp.DependencyGraph().build_dependency(model, torch.randn(2, 5, 6))
    assert graph.trace_device == "meta"
    _assert_same(model, before)


def test_op_counter_has_no_process_wide_cache_and_takes_one() -> None:
    assert not any(isinstance(v, MetaOpCache) for v in vars(op_counter).values())
    model, x = Tied().eval(), torch.randn(3, 4)
    cache = MetaOpCache()
    shared = tp.utils.count_ops_and_params(model, x, cache=cache)
    assert len(cache) > 0
    filled = len(cache)
    assert tp.utils.count_ops_and_params(model, x, cache=cache) == shared == tp.utils.count_ops_and_params(model, x)
    assert len(cache) == filled  # the second count replayed every op
    with pytest.raises(TypeError, match="`cache`"):
        tp.utils.count_ops_and_params(model, x, cache={})


def test_utils_namespace_keeps_its_names() -> None:
    for name in ("count_ops_and_params", "count_params", "measure_latency", "LatencyStats", "summarize_times",
                 "thread_count", "layer_widths", "op_counter"):
        assert hasattr(tp.utils, name), name
    assert tp.utils.op_counter.count_ops_and_params is tp.utils.count_ops_and_params
