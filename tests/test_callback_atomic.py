"""Issue 12, item 6: a prune is all or nothing at the callback's level."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning_helpers import ConvNet, RecordingLogger, assert_same, loaders, optimizer_state, state, trainer

import lightning_prune.callback.callback as callback_module
import lightning_prune.engine as tp
from lightning_prune import PruningCallback


class Before(Callback):
    """Snapshot at the start of epoch ``epoch``, before PruningCallback runs (put it first)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.module = self.optimizer = None
        self.step = None

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            self.module = state(pl_module)
            self.optimizer = optimizer_state(trainer.optimizers[0])
            self.lr = trainer.optimizers[0].param_groups[0]["lr"]


def _assert_restored(model, t, before, cb, logger):
    assert_same(model, before.module)
    now = optimizer_state(t.optimizers[0])
    assert now.keys() == before.optimizer.keys()
    for pid, entry in before.optimizer.items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(now[pid][key]), torch.as_tensor(value)), key
    assert t.optimizers[0].param_groups[0]["lr"] == before.lr
    assert cb.pruner.current_step == 0 and cb.pruner.pruning_history() == []
    assert not [m for m in logger.metrics if "pruning/step" in m]  # nothing logged for the failed prune
    from lightning_prune.callback import ModuleHistory

    assert ModuleHistory.of(model).records == []
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 4)
    # and the pruner still works on the restored model
    cb.pruner.step()
    assert model.body[0].out_channels == 8


def _fit_that_fails_in(monkeypatch, where, exc):
    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(callback_module, where, boom) if hasattr(callback_module, where) else \
        monkeypatch.setattr(tp, where, boom)
    model = ConvNet()
    before = Before(1)
    logger = RecordingLogger()
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[1], measure_latency=False, recalibration_batches=2)
    t = trainer(3, [before, cb], logger=logger)
    with pytest.raises(type(exc), match=str(exc)):
        t.fit(model, *loaders())
    monkeypatch.undo()
    return model, t, before, cb, logger


@pytest.mark.parametrize("where", ["slice_optimizers", "rewrap_ddp", "recalibrate_batchnorm"])
def test_a_failure_anywhere_in_the_prune_leaves_everything_as_it_was(monkeypatch, where):
    model, t, before, cb, logger = _fit_that_fails_in(monkeypatch, where, RuntimeError(f"{where} failed"))
    _assert_restored(model, t, before, cb, logger)


def test_a_bug_inside_a_layer_pruner_fails_loudly_and_restores(monkeypatch):
    pruner = tp.get_layer_pruner(torch.nn.BatchNorm2d(2))

    def broken(layer, idxs):
        raise KeyError("bug in a layer pruner")

    monkeypatch.setattr(pruner, "prune_out_channels", broken)
    model = ConvNet()
    before = Before(1)
    logger = RecordingLogger()
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[1], measure_latency=False, recalibration_batches=2)
    t = trainer(3, [before, cb], logger=logger)
    with pytest.raises(KeyError, match="bug in a layer pruner"):  # not a warning and a group "kept whole"
        t.fit(model, *loaders())
    monkeypatch.undo()
    _assert_restored(model, t, before, cb, logger)


def test_a_step_where_every_group_is_refused_does_not_count(monkeypatch):
    def refuse_all(self, interactive=False):
        self.current_step += 1
        self.skipped = ["cannot prune group rooted at body.0: refused"]
        return {"tensors": {}, "attributes": {}}

    monkeypatch.setattr(tp.pruner.MetaPruner, "step", refuse_all)
    model = ConvNet()
    seen = {}

    class After(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                seen["bn"] = pl_module.body[1].running_mean.clone()
                seen["step"] = cb.pruner.current_step

    before = Before(1)
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[1, 2], measure_latency=False, recalibration_batches=2)
    with pytest.warns(UserWarning, match="every group was refused.*does not count"):
        trainer(3, [before, cb, After()]).fit(model, *loaders())
    assert seen["step"] == 0  # not counted
    bn_key = "body.1.running_mean"
    torch.testing.assert_close(seen["bn"], before.module["tensors"][bn_key], rtol=0, atol=0)  # no recalibration
