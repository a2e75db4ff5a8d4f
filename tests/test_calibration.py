"""BatchNorm recalibration: exact statistics, nothing else touched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_prune.engine.calibration import recalibrate_batchnorm


def _conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():  # stale statistics, as after a prune
        model[1].running_mean.fill_(5.0)
        model[1].running_var.fill_(7.0)
        model[1].num_batches_tracked.fill_(1000)
    return model.eval()


def _data(n: int = 4, batch: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, 6, 6, generator=g) * 2 + 1 for _ in range(n)]


def _bn_input(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Per-channel values the BN layer sees: (C, N*H*W)."""
    with torch.no_grad():
        return model[0](x).transpose(0, 1).flatten(1)


def test_one_batch_gives_exact_statistics():
    model = _conv_bn()
    (x,) = _data(1, batch=16)
    assert recalibrate_batchnorm(model, [x]) == 1
    feats = _bn_input(model, x)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, feats.mean(1))
    # torch stores the *unbiased* batch variance in running_var
    torch.testing.assert_close(bn.running_var, feats.var(1, unbiased=True))
    assert bn.num_batches_tracked.item() == 1


def test_equal_batches_average_exactly():
    """momentum=None is a cumulative average: the mean of the batch means (= the dataset mean
    for equal batch sizes) and the mean of the per-batch unbiased variances."""
    model = _conv_bn()
    data = _data(4)
    assert recalibrate_batchnorm(model, data) == 4
    feats = [_bn_input(model, x) for x in data]
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, torch.cat(feats, 1).mean(1))
    torch.testing.assert_close(bn.running_var, torch.stack([f.var(1) for f in feats]).mean(0))


def test_weights_untouched_and_modes_and_momentum_restored():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.Dropout(0.5),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, momentum=None)),
    )
    model.eval()
    model[2].train()
    model[3][1].train()
    modes = {n: m.training for n, m in model.named_modules()}
    params = {n: (id(p), p.detach().clone()) for n, p in model.named_parameters()}
    recalibrate_batchnorm(model, _data(2))
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert model[1].momentum == 0.3 and model[3][1].momentum is None
    for n, p in model.named_parameters():
        assert id(p) == params[n][0] and torch.equal(p, params[n][1]), n
        assert p.grad is None


def test_dropout_is_off_during_recalibration():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(p=0.9), nn.BatchNorm2d(4)).train()
    (x,) = _data(1, batch=16)
    recalibrate_batchnorm(model, [x])
    feats = _bn_input(model, x)
    torch.testing.assert_close(model[2].running_mean, feats.mean(1))
    torch.testing.assert_close(model[2].running_var, feats.var(1))
    assert model.training and model[1].training  # modes restored


def test_tuple_dict_and_forward_fn_batches():
    data = _data(2)
    ref = _conv_bn()
    recalibrate_batchnorm(ref, data)

    as_tuples = _conv_bn()
    assert recalibrate_batchnorm(as_tuples, [(x, torch.zeros(8)) for x in data]) == 2
    as_lists = _conv_bn()
    assert recalibrate_batchnorm(as_lists, [[x, 0, "label"] for x in data]) == 2
    as_dicts = _conv_bn()
    seen = []

    def forward_fn(model, batch):
        seen.append(batch["image"].device)
        return model(batch["image"])

    assert recalibrate_batchnorm(as_dicts, ({"image": x, "label": 0} for x in data),
                                 forward_fn=forward_fn, device="cpu") == 2
    assert seen == [torch.device("cpu")] * 2
    for model in (as_tuples, as_lists, as_dicts):
        torch.testing.assert_close(model[1].running_mean, ref[1].running_mean)
        torch.testing.assert_close(model[1].running_var, ref[1].running_var)
    with pytest.raises(ValueError, match="forward_fn"):
        recalibrate_batchnorm(_conv_bn(), [{"image": data[0]}])


def test_num_batches_limits_the_count():
    data = _data(4)
    consumed = []

    def batches():
        for x in data:
            consumed.append(x)
            yield x

    model = _conv_bn()
    assert recalibrate_batchnorm(model, batches(), num_batches=2) == 2
    assert len(consumed) == 2  # the rest is never drawn from a loader
    ref = _conv_bn()
    recalibrate_batchnorm(ref, data[:2])
    torch.testing.assert_close(model[1].running_mean, ref[1].running_mean)
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_batchnorm(model, data, num_batches=0)


def test_no_batchnorm_is_a_no_op():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)).train()
    assert recalibrate_batchnorm(model, []) == 0
    assert recalibrate_batchnorm(model, [torch.randn(2, 3)]) == 0
    assert model.training
    untracked = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    assert recalibrate_batchnorm(untracked, _data(1)) == 0


def test_empty_iterable_raises_and_changes_nothing():
    model = _conv_bn()
    with pytest.raises(ValueError, match="needs at least one batch"):
        recalibrate_batchnorm(model, iter([]))
    assert torch.all(model[1].running_mean == 5.0) and model[1].momentum == 0.1
    assert not model.training


def test_failed_forward_restores_statistics():
    model = _conv_bn()
    bad = torch.randn(2, 5, 6, 6)  # wrong channel count: the conv raises on this batch
    with pytest.raises(RuntimeError):
        recalibrate_batchnorm(model, [_data(1)[0], bad])
    bn = model[1]
    assert torch.all(bn.running_mean == 5.0) and torch.all(bn.running_var == 7.0)
    assert bn.num_batches_tracked.item() == 1000 and bn.momentum == 0.1 and not bn.training


def test_untracked_layers_are_skipped_and_other_kinds_are_calibrated():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 6), nn.BatchNorm1d(6), nn.BatchNorm1d(6, track_running_stats=False),
        nn.Unflatten(1, (6, 1, 1, 1)), nn.BatchNorm3d(6), nn.Flatten(1),
        nn.Unflatten(1, (6, 1, 1)), nn.SyncBatchNorm(6),
    ).eval()
    x = torch.randn(32, 5)
    recalibrate_batchnorm(model, [x])
    with torch.no_grad():
        h = model[0](x)
        torch.testing.assert_close(model[1].running_mean, h.mean(0))
        h = model[2](model[1](h))  # untracked BN normalizes with batch statistics
        torch.testing.assert_close(model[4].running_mean, h.mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(model[4].running_var, h.var(0), atol=1e-4, rtol=1e-4)
    assert model[7].num_batches_tracked.item() == 1
    assert model[2].running_mean is None
