"""PruningCallback combined with what a demanding Lightning user adds to a fit: gradient
clipping, several optimizers under manual optimization, weight averaging (SWA/EMA),
``Trainer.fit`` twice, accumulation with bf16, every-epoch checkpoints loaded back, and a
per-step LR scheduler."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, StochasticWeightAveraging
from lightning_helpers import ConvNet as Net
from lightning_helpers import loaders
from torch import nn

import lightning_prune.engine as tp
from lightning_prune import PruningCallback, PruningCheckpointMixin, load_pruned_checkpoint


def trainer(max_epochs: int, callbacks: list, **kw) -> pl.Trainer:
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", devices=1, **kw)


def pruning(**kw) -> PruningCallback:
    kw.setdefault("pruning_ratio", 0.5)
    kw.setdefault("pruning_steps", 2)
    kw.setdefault("start_epoch", 1)
    kw.setdefault("measure_latency", False)
    kw.setdefault("monitor", None)
    return PruningCallback(**kw)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def count_regularize(monkeypatch, cls) -> list:
    calls = []
    original = cls.regularize

    def counted(self, model, *args, **kwargs):
        calls.append({id(p) for p in model.parameters() if p.grad is not None})
        return original(self, model, *args, **kwargs)

    monkeypatch.setattr(cls, "regularize", counted)
    return calls


# ---------------------------------------------------------------- (a) gradient clipping
class GradientsAtStep(Callback):
    """The gradients each optimizer step used (read just before the next zero_grad)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.maxima: list[float] = []

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            self.maxima.append(max(float(g.abs().max()) for g in grads))


@pytest.mark.parametrize("algorithm, clip", [("norm", 0.2), ("value", 0.05)])
def test_gradient_clipping_with_group_norm_regularization(monkeypatch, algorithm, clip):
    calls = count_regularize(monkeypatch, tp.pruner.GroupNormPruner)
    torch.manual_seed(0)
    model, (train, val) = Net(), loaders()
    cb, grads = pruning(regularization="group_norm", regularization_strength=1e-2), GradientsAtStep()
    t = trainer(4, [cb, grads], gradient_clip_val=clip, gradient_clip_algorithm=algorithm)
    t.fit(model, train, val)
    assert cb.pruner.current_step == 2 and n_params(model) < n_params(Net())
    assert len(calls) == t.global_step == 12
    # the regularizer's gradient is added before Lightning clips: what the optimizer used is clipped
    used = grads.norms if algorithm == "norm" else grads.maxima
    assert max(used) <= clip * (1 + 1e-5)
    assert sum(u >= clip * (1 - 1e-5) for u in used) >= 2  # clipping was active, so the bound means something


# ---------------------------------------------------------------- (b) manual optimization, two optimizers
class Gan(PruningCheckpointMixin, pl.LightningModule):
    """A generator and a critic, each with its own Adam, stepped by training_step itself."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.gen = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 1, 3, padding=1))
        self.critic = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))
        self.example_input_array = torch.zeros(1, 1, 8, 8)
        self.steps = [0, 0]

    def forward(self, x):
        fake = self.gen(x)
        return fake, self.critic(fake)

    def training_step(self, batch, batch_idx):
        x, _ = batch
        opt_g, opt_c = self.optimizers()
        loss_g = F.softplus(-self.critic(self.gen(x))).mean()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.steps[0] += 1
        loss_c = F.softplus(-self.critic(x)).mean() + F.softplus(self.critic(self.gen(x).detach())).mean()
        opt_c.zero_grad()
        self.manual_backward(loss_c)
        opt_c.step()
        self.steps[1] += 1

    def configure_optimizers(self):
        return torch.optim.Adam(self.gen.parameters(), lr=1e-3), torch.optim.Adam(self.critic.parameters(), lr=1e-3)


def test_manual_optimization_with_two_optimizers(monkeypatch):
    calls = count_regularize(monkeypatch, tp.pruner.GroupNormPruner)
    torch.manual_seed(0)
    model, (train, _) = Gan(), loaders()
    dense = n_params(model)
    cb = pruning(regularization="group_norm")
    t = trainer(4, [cb])
    t.fit(model, train)
    assert cb.pruner.current_step == 2 and n_params(model) < dense
    assert model.steps == [12, 12]  # 4 epochs x 3 batches, each optimizer once per batch
    for opt, net in zip(t.optimizers, (model.gen, model.critic)):
        assert {id(p) for p in opt.state} == {id(p) for p in net.parameters()}
        for p, s in opt.state.items():
            assert s["exp_avg"].shape == s["exp_avg_sq"].shape == p.shape  # state follows the pruned shapes
            assert int(s["step"]) == 12  # no optimizer step the training_step did not take
    # the regularizer ran once per optimizer step, each time on that optimizer's own gradients only
    assert len(calls) == 24
    gen, critic = {id(p) for p in model.gen.parameters()}, {id(p) for p in model.critic.parameters()}
    assert all(seen <= gen or seen <= critic for seen in calls)


def test_taylor_under_manual_optimization_is_refused_at_setup():
    model, (train, _) = Gan(), loaders()
    t = trainer(4, [pruning(importance="taylor")])
    with pytest.raises(ValueError, match="importance_loss"):
        t.fit(model, train)
    assert t.global_step == 0 and model.steps == [0, 0]


# ---------------------------------------------------------------- (c) weight averaging
def _averaging_callbacks():
    from lightning.pytorch import callbacks

    out = [("StochasticWeightAveraging", lambda: StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=3))]
    if hasattr(callbacks, "EMAWeightAveraging"):  # Lightning >= 2.6
        out.append(("EMAWeightAveraging", lambda: callbacks.EMAWeightAveraging()))
    return out


@pytest.mark.parametrize("name, make", _averaging_callbacks(), ids=[n for n, _ in _averaging_callbacks()])
@pytest.mark.parametrize("first", [True, False], ids=["averaging-first", "pruning-first"])
def test_weight_averaging_callbacks_are_refused_at_setup_not_mid_fit(name, make, first):
    # Their averaged copy is taken at setup with the dense shapes; its first update after a
    # prune would fail with a raw size mismatch, epochs into the fit.
    model, (train, val) = Net(), loaders()
    callbacks = [make(), pruning()] if first else [pruning(), make()]
    t = trainer(5, callbacks)
    with pytest.raises(ValueError, match=name):
        t.fit(model, train, val)
    assert t.global_step == 0 and n_params(model) == n_params(Net())


class EmaNet(Net):
    """EMA weights kept inside the module, the torch.optim.swa_utils way."""

    def __init__(self) -> None:
        super().__init__()
        self.ema = torch.optim.swa_utils.AveragedModel(
            nn.Sequential(self.body, self.head), multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))

    def on_train_batch_end(self, *args):
        self.ema.update_parameters(nn.Sequential(self.body, self.head))


def test_an_averaged_model_inside_the_module_is_refused_at_setup():
    model, (train, val) = EmaNet(), loaders()
    t = trainer(4, [pruning()])
    with pytest.raises(ValueError, match="AveragedModel.*'ema'"):
        t.fit(model, train, val)
    assert t.global_step == 0


def test_weight_averaging_in_a_second_fit_on_the_pruned_module_works():
    torch.manual_seed(0)
    model, (train, val) = Net(), loaders()
    trainer(3, [pruning()]).fit(model, train, val)
    pruned = n_params(model)
    before = tensors(model)
    trainer(3, [StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=1)]).fit(model, train, val)
    assert n_params(model) == pruned
    assert any(not torch.equal(before[k], v) for k, v in tensors(model).items())


# ---------------------------------------------------------------- (d) Trainer.fit twice
class Widths(Callback):
    def __init__(self) -> None:
        self.widths: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.widths.append(pl_module.body[0].out_channels)


def test_fit_twice_with_the_same_callback_trains_on_without_pruning_again():
    torch.manual_seed(0)
    model, (train, val) = Net(), loaders()
    cb = pruning()
    first = trainer(3, [cb])
    first.fit(model, train, val)
    pruned, record = n_params(model), list(cb.pruner.pruning_history())
    assert cb.pruner.current_step == 2 and pruned < n_params(Net())
    before = tensors(model)
    for second in (trainer(3, [cb]), first):  # a new Trainer, then the same one for more epochs
        if second is first:
            first.fit_loop.max_epochs = 5
        steps = second.global_step
        second.fit(model, train, val)
        assert second.global_step == steps + (9 if second is not first else 6)
        assert n_params(model) == pruned and cb.pruner.current_step == 2
        assert list(cb.pruner.pruning_history()) == record
    after = tensors(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    opt = first.optimizers[0]
    assert all(s["exp_avg"].shape == p.shape for p, s in opt.state.items())


def test_a_new_callback_on_the_pruned_module_prunes_further_and_checkpoints_replay(tmp_path):
    torch.manual_seed(0)
    model, (train, val) = Net(), loaders()
    trainer(3, [pruning()]).fit(model, train, val)
    once = n_params(model)
    widths = Widths()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    t = trainer(3, [pruning(pruning_steps=1, start_epoch=1), ckpt, widths], enable_checkpointing=True)
    t.fit(model, train, val)
    assert n_params(model) < once
    assert widths.widths[1] < widths.widths[0]
    x = torch.randn(5, 1, 8, 8)
    model.eval()
    for name, params in (("epoch=0.ckpt", once), ("epoch=2.ckpt", n_params(model))):
        path = os.path.join(tmp_path, name)
        for fresh in (load_pruned_checkpoint(Net(), path), Net.load_from_checkpoint(path)):
            assert n_params(fresh) == params  # both fits' prunes replayed, on a freshly built Net
    for fresh in (load_pruned_checkpoint(Net(), os.path.join(tmp_path, "epoch=2.ckpt")),
                  Net.load_from_checkpoint(os.path.join(tmp_path, "epoch=2.ckpt"))):
        torch.testing.assert_close(fresh.eval()(x), model(x))


# ---------------------------------------------------------------- (e) accumulation + bf16 + regularization
def test_gradient_accumulation_with_bf16_and_regularization(monkeypatch):
    calls = count_regularize(monkeypatch, tp.pruner.BNScalePruner)
    torch.manual_seed(0)
    model, (train, val) = Net(), loaders()
    cb = pruning(regularization="bn_scale")
    t = trainer(4, [cb], accumulate_grad_batches=2, precision="bf16-mixed")
    t.fit(model, train, val)
    assert cb.pruner.current_step == 2 and n_params(model) < n_params(Net())
    assert len(calls) == t.global_step == 8  # 3 batches per epoch, accumulated by 2: 2 optimizer steps per epoch
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- (f) every checkpoint of a run loads back
class ValLoss(Callback):
    def __init__(self) -> None:
        self.by_epoch: dict[int, float] = {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.by_epoch[trainer.current_epoch] = float(trainer.callback_metrics["val_loss"])


def test_every_epoch_checkpoint_loads_with_lightnings_own_api_and_validates_to_its_logged_loss(tmp_path):
    torch.manual_seed(0)
    model, (train, val) = Net(), loaders()
    logged = ValLoss()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    t = trainer(4, [pruning(), ckpt, logged], enable_checkpointing=True)
    t.fit(model, train, val)
    paths = sorted(os.listdir(tmp_path))
    assert paths == [f"epoch={e}.ckpt" for e in range(4)]  # dense, after prune 1, after prune 2 (x2)
    sizes = set()
    for e, name in enumerate(paths):
        path = os.path.join(tmp_path, name)
        loaded = Net.load_from_checkpoint(path)
        sizes.add(n_params(loaded))
        check = trainer(1, [])
        assert check.validate(loaded, val, verbose=False)[0]["val_loss"] == pytest.approx(logged.by_epoch[e], rel=1e-5)
        # the final, pruned module rewinds or replays to each checkpoint's own history
        assert check.validate(model, val, ckpt_path=path, verbose=False)[0]["val_loss"] == pytest.approx(
            logged.by_epoch[e], rel=1e-5)
        assert n_params(model) == n_params(loaded)
    assert len(sizes) == 3


# ---------------------------------------------------------------- (g) per-step LR scheduler
class OneCycleNet(Net):
    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=12)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class LearningRates(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_a_per_step_one_cycle_schedule_keeps_its_progress_through_prunes():
    runs = []
    for callbacks in ([pruning()], []):
        torch.manual_seed(0)
        model, (train, val) = OneCycleNet(), loaders()
        lrs = LearningRates()
        t = trainer(4, [*callbacks, lrs])
        t.fit(model, train, val)
        runs.append((lrs.lrs, t))
    (pruned_lrs, t), (dense_lrs, _) = runs
    assert len(pruned_lrs) == 12 and pruned_lrs == dense_lrs  # the same cycle, step for step
    sched = t.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == 12 and sched.optimizer is t.optimizers[0]
