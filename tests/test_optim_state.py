"""Optimizer state follows a prune: kept channels keep their moments, shapes match."""

from __future__ import annotations

import math
import types
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lightning_prune.engine as tp
from lightning_prune.engine.history.optim_state import (
    shape_after_slices,
    slice_optimizer_state,
    slice_optimizers,
)
from lightning_prune.engine.history.records import compose_keep
from lightning_prune.engine.pruning import slice_tensor


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids contention on a busy machine (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FACTORED = {"row_var", "col_var"}  # Adafactor's reduced moments: broadcast against the parameter


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw_amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
    "rmsprop_momentum": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.9, centered=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.05),
    "adadelta": lambda p: torch.optim.Adadelta(p),
    "nadam": lambda p: torch.optim.NAdam(p, lr=1e-2),
    "radam": lambda p: torch.optim.RAdam(p, lr=1e-2),
    "adamax": lambda p: torch.optim.Adamax(p, lr=1e-2),
    "asgd": lambda p: torch.optim.ASGD(p, lr=1e-2, t0=0),
    "rprop": lambda p: torch.optim.Rprop(p, lr=1e-2),
}
if hasattr(torch.optim, "Adafactor"):
    OPTIMIZERS["adafactor"] = lambda p: torch.optim.Adafactor(p, lr=1e-2)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 4, (4,), generator=g)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 2) -> float:
    x, y = _data()
    loss_value = math.nan
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss_value = loss.item()
    return loss_value


def _setup(name: str = "adam", **pruner_kwargs) -> tuple[Net, torch.optim.Optimizer, tp.pruner.MetaPruner]:
    torch.manual_seed(0)
    model = Net()
    opt = OPTIMIZERS[name](model.parameters())
    _train(model, opt)
    pruner = tp.pruner.MetaPruner(model, _data()[0], pruning_ratio=0.5, **pruner_kwargs)
    return model, opt, pruner


def _snapshot_state(opt: torch.optim.Optimizer) -> dict[int, dict]:
    return {
        id(p): {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
        for p, s in opt.state.items()
    }


def _expected(old: torch.Tensor, slices: list) -> torch.Tensor:
    """Old values at the kept indices, composed per dim (independent of the sequential slicing)."""
    out = old
    for dim in range(old.dim()):
        if old.shape[dim] == 1 or not any(d % old.dim() == dim for d, _ in slices):
            continue
        own = [(d % old.dim(), k) for d, k in slices]
        keep = compose_keep(own, dim, old.shape[dim])
        out = out.index_select(dim, torch.tensor(keep))
    return out


def _check_sliced(model: nn.Module, opt: torch.optim.Optimizer, before: dict, record: dict) -> set[str]:
    """Every pruned parameter's state: new shape, old values at the kept indices, scalars kept.

    Returns the entries that shrank (those a report must list as sliced).
    """
    params = dict(model.named_parameters())
    shrunk = set()
    for name, slices in record["tensors"].items():
        if name not in params:
            continue  # a buffer
        p = params[name]
        for key, value in opt.state[p].items():
            old = before[id(p)][key]
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                assert value is old or torch.equal(torch.as_tensor(value), torch.as_tensor(old)), f"{name}:{key}"
                continue
            if key in FACTORED:
                assert torch.broadcast_shapes(value.shape, p.shape) == p.shape, f"{name}:{key}"
            else:
                assert value.shape == p.shape, f"{name}:{key} {tuple(value.shape)} vs {tuple(p.shape)}"
            assert torch.equal(value, _expected(old, slices)), f"{name}:{key} lost its kept values"
            if value.shape != old.shape:
                shrunk.add(f"{name}:{key}")
    return shrunk


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_state_follows_prune_and_training_continues(opt_name: str) -> None:
    model, opt, pruner = _setup(opt_name)
    ids = {n: id(p) for n, p in model.named_parameters()}
    before = _snapshot_state(opt)
    untouched = {k: v.clone() for k, v in opt.state[model.fc.bias].items() if isinstance(v, torch.Tensor)}
    record = pruner.step()
    assert model.conv1.out_channels == 4

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = slice_optimizer_state(opt, model, record)
    assert not [w for w in caught if "optim_state" in w.filename or "re-initialize" in str(w.message)]
    assert report["reset"] == []
    assert _check_sliced(model, opt, before, record) == set(report["sliced"]) != set()
    assert "conv1.weight:step" not in report["sliced"]
    # fc.bias (the protected output) was not pruned: its state is unchanged
    for k, v in untouched.items():
        assert torch.equal(opt.state[model.fc.bias][k], v)

    assert {n: id(p) for n, p in model.named_parameters()} == ids
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters()))
    weights = [p.detach().clone() for p in model.parameters()]
    loss = _train(model, opt, steps=2)
    assert math.isfinite(loss)
    assert any(not torch.equal(w, p) for w, p in zip(weights, model.parameters()))


@pytest.mark.parametrize("opt_name", ["adam", "sgd_momentum"])
def test_moments_of_kept_channels_survive(opt_name: str) -> None:
    """The issue's acceptance criterion: kept channels keep their moments, not reset."""
    model, opt, pruner = _setup(opt_name)
    key = "exp_avg" if opt_name == "adam" else "momentum_buffer"
    old = opt.state[model.conv2.weight][key].clone()
    old_step = opt.state[model.conv2.weight].get("step")
    old_step = old_step.clone() if isinstance(old_step, torch.Tensor) else old_step
    record = pruner.step()
    slice_optimizer_state(opt, model, record)

    (d_in, keep_in), (d_out, keep_out) = record["tensors"]["conv2.weight"]
    assert (d_in, d_out) == (1, 0)
    new = opt.state[model.conv2.weight][key]
    assert torch.equal(new, old[keep_out][:, keep_in])
    assert new.abs().sum() > 0
    if opt_name == "adam":
        assert torch.equal(opt.state[model.conv2.weight]["step"], old_step)
        assert opt.state[model.conv2.weight]["exp_avg_sq"].shape == model.conv2.weight.shape


def test_two_successive_prunes() -> None:
    model, opt, pruner = _setup("adamw_amsgrad", iterative_steps=2)
    for expected_width in (6, 4):
        before = _snapshot_state(opt)
        record = pruner.step()
        assert model.conv1.out_channels == expected_width
        report = slice_optimizer_state(opt, model, record)
        assert report["reset"] == []
        assert _check_sliced(model, opt, before, record) == set(report["sliced"]) != set()
        assert math.isfinite(_train(model, opt, steps=2))


def test_unmappable_entry_resets_that_parameter_with_warning() -> None:
    model, opt, pruner = _setup("adam")
    opt.state[model.conv1.weight]["odd"] = torch.ones(5)
    before = _snapshot_state(opt)
    record = pruner.step()
    with pytest.warns(UserWarning, match=r"conv1\.weight \(cannot map: odd\)") as caught:
        report = slice_optimizer_state(opt, model, record)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert sorted(report["reset"]) == sorted(f"conv1.weight:{k}" for k in ("step", "exp_avg", "exp_avg_sq", "odd"))
    assert len(opt.state[model.conv1.weight]) == 0
    assert not any(s.startswith("conv1.weight:") for s in report["sliced"] + report["kept"])
    # the other parameters are sliced as usual
    assert "conv2.weight:exp_avg" in report["sliced"]
    assert torch.equal(opt.state[model.conv2.weight]["exp_avg"],
                       _expected(before[id(model.conv2.weight)]["exp_avg"], record["tensors"]["conv2.weight"]))

    assert math.isfinite(_train(model, opt, steps=2))
    state = opt.state[model.conv1.weight]
    assert state["exp_avg"].shape == model.conv1.weight.shape
    assert int(state["step"]) == 2  # re-initialized by Adam


def test_strict_raises_and_changes_nothing() -> None:
    model, opt, pruner = _setup("adam")
    opt.state[model.conv1.weight]["odd"] = torch.ones(5)
    record = pruner.step()
    before = _snapshot_state(opt)
    with pytest.raises(ValueError, match=r"conv1\.weight:odd"):
        slice_optimizer_state(opt, model, record, strict=True)
    for p, state in opt.state.items():
        assert state.keys() == before[id(p)].keys()
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, before[id(p)][k])


def test_merged_slices_on_same_and_different_dims() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    lin(torch.randn(3, 6)).sum().backward()
    opt.step()
    state = opt.state[lin.weight]
    state["row"] = torch.randn(5, 1)  # a reduced moment, broadcast along dim 1
    state["scalar"] = torch.tensor(3.0)
    state["py"] = 0.5
    state["none"] = None
    before = _snapshot_state(opt)
    record = {
        "tensors": {
            "weight": [(0, [0, 2, 3, 4]), (-1, [1, 3, 4, 5]), (0, [1, 2, 3])],
            "bias": [(0, [0, 2, 3, 4]), (0, [1, 2, 3])],
        },
        "attributes": {},
    }
    for name, slices in record["tensors"].items():
        for dim, keep in slices:
            slice_tensor(getattr(lin, name), dim, keep)
    assert lin.weight.shape == (3, 4)

    report = slice_optimizer_state(opt, lin, record)
    w_old = before[id(lin.weight)]
    assert torch.equal(state["exp_avg"], w_old["exp_avg"][[2, 3, 4]][:, [1, 3, 4, 5]])
    assert torch.equal(state["row"], w_old["row"][[2, 3, 4]])
    assert torch.equal(opt.state[lin.bias]["exp_avg_sq"], before[id(lin.bias)]["exp_avg_sq"][[2, 3, 4]])
    assert state["scalar"] is w_old["scalar"] or torch.equal(state["scalar"], w_old["scalar"])
    assert state["py"] == 0.5 and state["none"] is None
    assert {"weight:step", "weight:scalar", "weight:py", "weight:none"} <= set(report["kept"])
    assert {"weight:exp_avg", "weight:exp_avg_sq", "weight:row", "bias:exp_avg"} <= set(report["sliced"])
    lin(torch.randn(3, 4)).sum().backward()
    opt.step()


def test_parameters_without_state_or_outside_the_optimizer_are_ignored() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.fc.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt)
    fresh = torch.optim.Adam(model.parameters())  # no state yet
    record = tp.pruner.MetaPruner(model, _data()[0], pruning_ratio=0.5).step()
    report = slice_optimizers([opt, fresh], model, record["tensors"])  # a bare tensors mapping works too
    assert report == {"sliced": ["fc.weight:momentum_buffer"], "reset": [], "kept": []}
    assert opt.state[model.fc.weight]["momentum_buffer"].shape == model.fc.weight.shape
    assert math.isfinite(_train(model, opt))


def test_slice_optimizers_combines_reports_and_unwraps() -> None:
    torch.manual_seed(0)
    model = Net()
    convs = [*model.conv1.parameters(), *model.conv2.parameters()]
    rest = [*model.bn1.parameters(), *model.fc.parameters()]
    sgd = torch.optim.SGD(convs, lr=0.05, momentum=0.9)
    adam = torch.optim.Adam(rest, lr=1e-2)
    x, y = _data()
    for _ in range(2):
        sgd.zero_grad()
        adam.zero_grad()
        F.cross_entropy(model(x), y).backward()
        sgd.step()
        adam.step()
    record = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5).step()
    wrapped = types.SimpleNamespace(optimizer=adam)  # like Lightning's LightningOptimizer
    report = slice_optimizers([sgd, wrapped], model, record)
    assert "conv1.weight:momentum_buffer" in report["sliced"]
    assert "bn1.weight:exp_avg" in report["sliced"]
    assert adam.state[model.bn1.weight]["exp_avg_sq"].shape == (4,)
    assert sgd.state[model.conv2.weight]["momentum_buffer"].shape == model.conv2.weight.shape


def test_lbfgs_history_is_reset() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=2)
    x, y = _data()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    record = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5).step()
    with pytest.warns(UserWarning, match="LBFGS"):
        report = slice_optimizer_state(opt, model, record)
    assert "conv1.weight:d" in report["reset"]
    assert all(len(s) == 0 for s in opt.state.values())
    assert math.isfinite(opt.step(closure).item())


def test_shape_after_slices() -> None:
    assert shape_after_slices((8, 4), [(0, [1, 2, 3]), (1, [0, 3]), (0, [0, 2])]) == (2, 2)
    assert shape_after_slices((8, 1), [(0, [0, 5]), (1, [0, 2])]) == (2, 1)  # reduced dim left whole
    with pytest.raises(ValueError, match="do not fit"):
        shape_after_slices((4,), [(0, [0, 4])])
