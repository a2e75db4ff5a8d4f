"""Issue 12, items 2, 4, 5, 8, 9: what the callback does inside the fit loop."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import CustomScale
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning_helpers import ConvNet, data, loaders, trainer
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lightning_prune.engine as tp
from lightning_prune import PruningCallback


def _count_calls(monkeypatch, cls, name):
    calls = []
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


# ---------------------------------------------------------------------- item 2
def test_regularizer_runs_once_per_optimizer_step_under_gradient_accumulation(monkeypatch):
    calls = _count_calls(monkeypatch, tp.pruner.GroupNormPruner, "regularize")
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[1], regularization="group_norm", measure_latency=False,
                         recalibrate_bn=False)
    t = trainer(2, [cb], accumulate_grad_batches=3)
    t.fit(ConvNet(), loaders(batch_size=8)[0])  # 12 batches an epoch: 4 optimizer steps
    assert t.global_step == 8
    assert len(calls) == t.global_step  # not 3x as many (once per backward)


def test_regularizer_sees_unscaled_gradients_under_amp(monkeypatch):
    stages = []
    original = tp.pruner.GroupNormPruner.regularize

    def spy(self, *args, **kwargs):
        scaler = t.precision_plugin.scaler
        opt = t.optimizers[0]
        stages.append(scaler._per_optimizer_states[id(opt)]["stage"].name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tp.pruner.GroupNormPruner, "regularize", spy)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[1], regularization="group_norm", measure_latency=False,
                         recalibrate_bn=False)
    t = trainer(2, [cb], plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    t.fit(ConvNet(), loaders()[0])
    assert stages and set(stages) == {"UNSCALED"}


def test_growing_reg_grows_on_its_schedule_with_the_given_delta(monkeypatch):
    updates = _count_calls(monkeypatch, tp.pruner.GrowingRegPruner, "update_regularizer")
    lambdas = []

    class Lambdas(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            lambdas.append(max(float(v.max()) for v in cb.pruner.group_lambdas().values()))

    cb = PruningCallback(target_macs=0.6, prune_epochs=[4], regularization="growing_reg", regularization_strength=1e-4,
                         delta_reg=1e-3, update_regularizer_every_n_epochs=2, measure_latency=False,
                         recalibrate_bn=False)
    trainer(5, [cb, Lambdas()]).fit(ConvNet(), loaders()[0])
    assert cb.pruner.delta_reg == 1e-3
    assert len(updates) == 3  # epochs 0, 2 and 4
    assert lambdas[0] == pytest.approx(1e-4 + 1e-3) and lambdas[2] == pytest.approx(1e-4 + 2e-3)
    assert lambdas[1] == lambdas[0]  # no update at epoch 1
    assert cb.pruner.pruning_ratio is None  # the budget, not a hidden 0.5, decides what grows


def test_delta_reg_without_growing_reg_is_refused():
    with pytest.raises(ValueError, match="delta_reg.*growing_reg"):
        PruningCallback(regularization="group_norm", delta_reg=1e-3)


# ---------------------------------------------------------------------- item 4
class GradientSeeingImportance(tp.importance.GroupMagnitudeImportance):
    """Declares it needs gradients; records whether it got them."""

    needs_gradients = True

    def __init__(self) -> None:
        super().__init__()
        self.saw_gradients: list[bool] = []

    def __call__(self, group):
        self.saw_gradients.append(all(dep.target.module.weight.grad is not None for dep, _ in group
                                      if isinstance(dep.target.module, nn.Conv2d)))
        return super().__call__(group)


def test_gradient_passes_follow_the_importance_object_not_its_name():
    imp = GradientSeeingImportance()
    cb = PruningCallback(importance=imp, pruning_ratio=0.5, prune_epochs=[1], measure_latency=False,
                         recalibrate_bn=False, importance_batches=2)
    trainer(2, [cb]).fit(ConvNet(), loaders()[0])
    assert imp.saw_gradients and all(imp.saw_gradients)


def test_taylor_importance_object_gets_its_gradient_pass():
    cb = PruningCallback(importance=tp.importance.GroupTaylorImportance(), pruning_ratio=0.5, prune_epochs=[1],
                         measure_latency=False, recalibrate_bn=False, importance_batches=2)
    model = ConvNet()
    trainer(2, [cb]).fit(model, loaders()[0])
    assert cb.pruner.current_step == 1 and model.body[0].out_channels == 8


def test_gradient_pass_leaves_no_trace_in_bn_statistics_or_logs():
    model = ConvNet()
    seen = {}

    class Before(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                seen["mean"] = pl_module.body[1].running_mean.clone()
                seen["tracked"] = int(pl_module.body[1].num_batches_tracked)

    class After(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                keep = cb.pruner.pruning_history()[0]["tensors"]["body.1.running_mean"][0][1]
                torch.testing.assert_close(pl_module.body[1].running_mean, seen["mean"][keep], rtol=0, atol=0)
                assert int(pl_module.body[1].num_batches_tracked) == seen["tracked"]

    cb = PruningCallback(importance="taylor", pruning_ratio=0.5, prune_epochs=[1], measure_latency=False,
                         recalibrate_bn=False, importance_batches=3)
    trainer(2, [Before(), cb, After()]).fit(model, loaders()[0])
    assert cb.pruner.current_step == 1


# ---------------------------------------------------------------------- item 5
class DictData(Dataset):
    def __init__(self) -> None:
        self.x, self.y = data()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


class DictNet(ConvNet):
    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = None  # the input comes from the first batch

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch["image"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        pass


@dataclasses.dataclass
class Batch:
    pixels: torch.Tensor
    target: torch.Tensor


def _collate_dataclass(items):
    x = torch.stack([i["image"] for i in items])
    return Batch(x, torch.stack([i["label"] for i in items]))


class DataclassNet(DictNet):
    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch.pixels), batch.target)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return Batch(batch.pixels.to(device), batch.target.to(device))


@pytest.mark.parametrize("importance", ["taylor", "hessian", "magnitude"])
def test_dict_batches_work_for_example_input_importance_and_recalibration(importance):
    model = DictNet()
    tracked = []

    class Probe(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            tracked.append(int(pl_module.body[1].num_batches_tracked))

    cb = PruningCallback(importance=importance, pruning_ratio=0.5, prune_epochs=[1], example_input="first_batch",
                         measure_latency=False, recalibration_batches=2, importance_batches=2)
    trainer(2, [cb, Probe()]).fit(model, DataLoader(DictData(), batch_size=16))
    assert cb.pruner.current_step == 1 and model.body[0].out_channels == 8
    assert tracked == [0, 2]  # recalibrated on 2 batches of the dict data right after the prune


def test_dataclass_batches_through_input_key():
    model = DataclassNet()
    cb = PruningCallback(importance="taylor", pruning_ratio=0.5, prune_epochs=[1], example_input="first_batch",
                         input_key="pixels", measure_latency=False, recalibration_batches=2, importance_batches=2)
    trainer(2, [cb]).fit(model, DataLoader(DictData(), batch_size=16, collate_fn=_collate_dataclass))
    assert model.body[0].out_channels == 8


def test_batch_to_input_can_be_overridden():
    class Mine(PruningCallback):
        def batch_to_input(self, batch, pl_module):
            return batch.pixels

    model = DataclassNet()
    cb = Mine(pruning_ratio=0.5, prune_epochs=[1], example_input="first_batch", measure_latency=False,
              recalibration_batches=2)
    trainer(2, [cb]).fit(model, DataLoader(DictData(), batch_size=16, collate_fn=_collate_dataclass))
    assert model.body[0].out_channels == 8


def test_a_batch_the_callback_cannot_read_fails_at_setup_not_at_the_prune():
    class Late(Callback):
        steps = 0

        def on_train_batch_end(self, *args):
            Late.steps += 1

    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[2], measure_latency=False, recalibration_batches=2)
    model = DictNet()
    model.example_input_array = torch.zeros(1, 1, 8, 8)
    loader = DataLoader([{"pixels": x, "label": y} for x, y in zip(*data())], batch_size=16)
    with pytest.raises(ValueError, match="dict batch with keys.*input_key.*batch_to_input"):
        trainer(3, [cb, Late()]).fit(model, loader)
    assert Late.steps == 0  # refused before the first training step


# ---------------------------------------------------------------------- item 8
def test_a_prune_epoch_max_epochs_never_reaches_is_an_error_at_setup():
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[1, 5, 7], measure_latency=False)
    with pytest.raises(ValueError, match=r"prune epochs \[5, 7\] are never reached.*max_epochs=4"):
        trainer(4, [cb]).fit(ConvNet(), loaders()[0])


def test_summary_survives_resume_and_reports_last_and_best(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from test_callback import StopAfter

    def make():
        return PruningCallback(pruning_ratio=0.5, prune_epochs=[1, 3], monitor="val_loss", monitor_mode="min",
                               measure_latency=False, recalibration_batches=2)

    torch.manual_seed(0)
    first = make()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    model = ConvNet()
    dense_params = sum(p.numel() for p in model.parameters())
    trainer(5, [first, ckpt, StopAfter(1)], root=tmp_path).fit(model, *loaders())
    second = make()
    trainer(5, [second, ModelCheckpoint(dirpath=tmp_path / "b")], root=tmp_path).fit(
        ConvNet(), *loaders(), ckpt_path=str(tmp_path / "last.ckpt"))
    summary = second.summary
    assert summary["before"]["params"] == dense_params  # the dense baseline came back from the checkpoint
    assert summary["after"]["params"] < dense_params
    metric = summary["metric"]
    assert {"dense_last", "dense_best", "pruned_last", "pruned_best"} <= set(metric)
    assert metric["dense_best"] <= metric["dense_last"] and metric["pruned_best"] <= metric["pruned_last"]


# ---------------------------------------------------------------------- item 9
class EngineOptionsNet(ConvNet):
    """A custom layer, an unwrapped parameter, and a forward that takes a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = CustomScale(16)
        self.gate = nn.Parameter(torch.ones(16))
        self.example_input_array = {"x": torch.zeros(1, 1, 8, 8)}

    def forward(self, x):
        h = self.scale(self.body(x)) * self.gate.view(1, -1, 1, 1)
        return self.head(h.mean((2, 3)))


def trace_forward(model, inputs):
    return model(**inputs)


def test_engine_options_by_import_path(monkeypatch):
    model = EngineOptionsNet()
    cb = PruningCallback(pruning_ratio=0.5, prune_epochs=[0], measure_latency=False, recalibrate_bn=False,
                         customized_pruners={"helpers.CustomScale": "helpers.CustomScalePruner"},
                         unwrapped_parameters={"gate": 0}, forward_fn=f"{__name__}.trace_forward")
    trainer(1, [cb]).fit(model, loaders()[0])
    assert model.body[3].out_channels == 8 and model.scale.params.shape == (2, 8) and model.gate.shape == (8,)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


class AttentionNet(ConvNet):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x):
        h = self.body(x).flatten(2).transpose(1, 2)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_num_heads_is_checked_against_the_graph():
    cb = PruningCallback(pruning_ratio=0.25, prune_epochs=[0], prune_num_heads=True, head_pruning_ratio=0.5,
                         num_heads={"attn": 3}, measure_latency=False, recalibrate_bn=False)
    with pytest.raises(ValueError, match=r"num_heads\['attn'\]=3, but the graph finds 4 heads"):
        trainer(1, [cb]).fit(AttentionNet(), loaders()[0])
    model = AttentionNet()
    cb = PruningCallback(pruning_ratio=0.25, prune_epochs=[0], prune_num_heads=True, head_pruning_ratio=0.5,
                         num_heads={"attn": 4}, measure_latency=False, recalibrate_bn=False)
    trainer(1, [cb]).fit(model, loaders()[0])
    assert model.attn.num_heads == 2
