"""Issue 12, item 1: Lightning's own loading paths work on every checkpoint of a pruned run."""

from __future__ import annotations

import glob
import os

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning_helpers import ConvNet, loaders, trainer
from torch import nn

import lightning_prune.engine as tp
from lightning_prune import PruningCallback, load_pruned_checkpoint
from lightning_prune.lightning import ImageClassifier
from lightning_prune.models import SmallResNet


class Score(Callback):
    """Logs ``score = -epoch``: ModelCheckpoint(monitor='score', mode='max') keeps epoch 0 as best."""

    def on_validation_epoch_end(self, trainer, pl_module):
        pl_module.log("score", -float(trainer.current_epoch))


class Widths(Callback):
    """The first conv's width at each epoch end (what that epoch's checkpoint must have)."""

    def __init__(self) -> None:
        self.widths: dict[int, int] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.widths[trainer.current_epoch] = pl_module.body[0].out_channels


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = ConvNet()
    widths = Widths()
    ckpt = ModelCheckpoint(dirpath=root, filename="{epoch}", monitor="score", mode="max", save_top_k=-1)
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[1, 2], measure_latency=False, recalibration_batches=2)
    t = trainer(4, [cb, Score(), widths, ckpt], root=root)
    t.fit(model, *loaders())
    paths = {int(os.path.basename(p).split("=")[1].split(".")[0]): p for p in glob.glob(str(root / "epoch=*.ckpt"))}
    return {"trainer": t, "model": model, "paths": paths, "widths": widths.widths, "ckpt": ckpt}


def test_load_from_checkpoint_rebuilds_every_checkpoint_with_its_own_history(run):
    x = torch.randn(3, 1, 8, 8)
    assert sorted(run["paths"]) == [0, 1, 2, 3]
    assert [run["widths"][e] for e in range(4)] == [16, 12, 8, 8]  # dense, after prune 1, after prune 2
    for epoch, path in run["paths"].items():
        loaded = ConvNet.load_from_checkpoint(path)  # Lightning's own API, no callback, no call of ours
        assert loaded.body[0].out_channels == loaded.body[1].num_features == run["widths"][epoch]
        raw = torch.load(path, weights_only=True)["state_dict"]
        for name, tensor in loaded.state_dict().items():
            if isinstance(tensor, torch.Tensor):
                assert torch.equal(tensor, raw[name]), (epoch, name)
        loaded.eval()
        out = loaded(x)
        assert out.shape == (3, 4)
        out.sum().backward()  # and it trains


def test_trainer_validate_with_a_fresh_module_and_a_pruned_checkpoint(run):
    _, val = loaders()
    fresh = ConvNet()
    metrics = trainer(1, []).validate(fresh, val, ckpt_path=run["paths"][3], verbose=False)
    assert fresh.body[0].out_channels == 8 and metrics[0]["val_loss"] > 0


def test_ckpt_path_best_before_the_last_prune_rewinds_the_pruned_module(run):
    t, model = run["trainer"], run["model"]
    assert run["ckpt"].best_model_path == run["paths"][0]  # the dense checkpoint is "best"
    _, val = loaders()
    t.validate(model, val, ckpt_path="best", verbose=False)
    assert model.body[0].out_channels == 16  # rewound to exactly that checkpoint's (empty) history
    expected = ConvNet.load_from_checkpoint(run["paths"][0]).eval()
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    torch.testing.assert_close(model(x), expected(x), rtol=0, atol=0)
    t.test  # noqa: B018 - the trainer stays usable
    t.validate(model, val, ckpt_path=run["paths"][2], verbose=False)  # and forward again
    assert model.body[0].out_channels == 8


def test_a_history_that_cannot_apply_is_a_clear_error_and_changes_nothing(run):
    model = ConvNet(width=16)
    # pruned by hand, outside any history: the checkpoint's records do not fit it
    DG = tp.DependencyGraph().build_dependency(model, torch.zeros(1, 1, 8, 8))
    DG.get_pruning_group(model.body[0], tp.prune_conv_out_channels, idxs=list(range(10))).prune()
    from lightning_prune.callback import ModuleHistory

    ModuleHistory.of(model)
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    ckpt = torch.load(run["paths"][2], weights_only=True)
    with pytest.raises(ValueError, match="cannot be applied.*freshly built, unpruned ConvNet"):
        model.load_state_dict(ckpt["state_dict"])
    after = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_image_classifier_saves_hyperparameters_and_loads_back(tmp_path):
    net = SmallResNet(num_classes=10, width=8)
    module = ImageClassifier(net, num_classes=10, input_shape=[1, 1, 8, 8], lr=0.01)
    assert module.hparams["lr"] == 0.01 and module.hparams["num_classes"] == 10
    assert "model" not in module.hparams  # a module object is state, not a hyperparameter
    t = trainer(1, [PruningCallback(pruning_ratio=0.5, prune_epochs=[0], measure_latency=False,
                                    recalibrate_bn=False)], root=tmp_path)
    t.fit(module, *_digit_like_loaders())
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    loaded = ImageClassifier.load_from_checkpoint(path, model=SmallResNet(num_classes=10, width=8))
    assert loaded.hparams["lr"] == 0.01
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), module.eval()(x))


def _digit_like_loaders():
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32), DataLoader(TensorDataset(x, y), batch_size=64)


def test_pt_export_loads_into_the_bare_network_and_torch_export_keeps_a_dynamic_batch(tmp_path):
    module = ImageClassifier(SmallResNet(num_classes=10, width=8), num_classes=10, input_shape=[1, 1, 8, 8])
    pt, program = tmp_path / "pruned.pt", tmp_path / "pruned.pt2"
    t = trainer(1, [PruningCallback(pruning_ratio=0.5, prune_epochs=[0], measure_latency=False,
                                    recalibrate_bn=False, export_path=str(pt))])
    t.fit(module, *_digit_like_loaders())
    bare = load_pruned_checkpoint(SmallResNet(num_classes=10, width=8), str(pt))
    assert isinstance(bare, nn.Module) and not hasattr(bare, "trainer")
    x = torch.randn(5, 1, 8, 8)
    module.eval()
    torch.testing.assert_close(bare.eval()(x), module.model(x))
    wrapped = load_pruned_checkpoint(ImageClassifier(SmallResNet(num_classes=10, width=8)), str(pt))
    torch.testing.assert_close(wrapped.eval()(x), module(x))

    from lightning_prune.callback.export import export_module

    export_module(module, module.example_input_array, str(program), "torch_export")
    loaded = torch.export.load(str(program)).module()
    for batch in (1, 2, 7):
        xb = torch.randn(batch, 1, 8, 8)
        torch.testing.assert_close(loaded(xb), module(xb))
