"""Issue 14, part 4: distillation from the frozen dense model while the pruned one recovers."""

from __future__ import annotations

import glob
import os

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning_helpers import ConvNet, RecordingLogger, loaders, trainer

from lightning_prune import PruningCallback, load_pruned_checkpoint
from lightning_prune.callback.distillation import kd_loss_and_gradient

WEIGHT, TEMPERATURE = 2.0, 3.0


def _callback(**kw) -> PruningCallback:
    kw.setdefault("distillation_weight", WEIGHT)
    kw.setdefault("temperature", TEMPERATURE if kw["distillation_weight"] > 0 else None)
    return PruningCallback(pruning_ratio=0.5, prune_epochs=kw.pop("prune_epochs", [1]), measure_latency=False,
                           recalibration_batches=2, **kw)


def _explicit_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """What a hand-written loop would add: T^2 * KL(teacher || student), batchmean."""
    return temperature ** 2 * F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                                       log_target=True, reduction="batchmean")


# ---------------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs, name", [
    ({"distillation_weight": -1.0}, "distillation_weight"),
    ({"distillation_weight": float("nan")}, "distillation_weight"),
    ({"distillation_weight": "1"}, "distillation_weight"),
    ({"distillation_weight": True}, "distillation_weight"),
    ({"distillation_weight": 1.0, "temperature": 0.0}, "temperature"),
    ({"distillation_weight": 1.0, "temperature": -2.0}, "temperature"),
    ({"distillation_weight": 1.0, "temperature": float("inf")}, "temperature"),
    ({"temperature": 2.0}, "temperature"),  # a temperature without distillation would be ignored
])
def test_bad_arguments_are_refused_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"PruningCallback: {name}"):
        PruningCallback(pruning_ratio=0.5, **kwargs)


def test_the_closed_form_gradient_is_the_gradient_of_the_kd_loss():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 7, generator=g, requires_grad=True), torch.randn(5, 7, generator=g) * 3
    expected = _explicit_kd(student, teacher, TEMPERATURE)
    expected.backward()
    loss, gradient = kd_loss_and_gradient(student, teacher, TEMPERATURE)
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(gradient, student.grad)


# ---------------------------------------------------------------------- the gradient
class Probe(Callback):
    """After the prune at epoch 1: the student and the first ``accumulate`` batches, and the gradients
    at the first optimizer step (unscaled by AMP by then)."""

    def __init__(self, accumulate: int) -> None:
        self.accumulate = accumulate
        self.batches: list = []
        self.student: dict | None = None
        self.grads: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx < self.accumulate:
            if batch_idx == 0:
                self.student = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in pl_module.state_dict().items()}
            self.batches.append(batch)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.current_epoch == 1 and self.grads is None:
            self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters()}


class ManualConvNet(ConvNet):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        self.manual_backward(F.cross_entropy(self(x), y))
        opt.step()
        opt.zero_grad()


def _amp_fp16() -> dict:
    return {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))]}


@pytest.mark.parametrize("case", ["plain", "accumulate_2", "amp_16_mixed", "manual"])
def test_the_gradient_is_that_of_the_loss_plus_the_weighted_kd_loss(case):
    accumulate = 2 if case == "accumulate_2" else 1
    torch.manual_seed(0)
    model = ManualConvNet() if case == "manual" else ConvNet()
    cb, probe = _callback(), Probe(accumulate)
    trainer(2, [cb, probe], accumulate_grad_batches=accumulate, limit_train_batches=2,
            **(_amp_fp16() if case == "amp_16_mixed" else {})).fit(model, *loaders())
    assert cb.dense_model is not None and probe.grads is not None and len(probe.batches) == accumulate

    student = load_pruned_checkpoint(ConvNet(), probe.student).train()  # the student the step started from
    teacher = cb.dense_model
    ce_only = {}
    amp = torch.autocast("cpu", dtype=torch.float16, enabled=case == "amp_16_mixed")
    for with_kd in (False, True):
        student.zero_grad()
        for x, y in probe.batches:
            with amp:
                logits = student(x)
                with torch.no_grad():
                    target = teacher(x)
            loss = F.cross_entropy(logits.float(), y)
            if with_kd:
                loss = loss + WEIGHT * _explicit_kd(logits.float(), target.float(), TEMPERATURE)
            (loss / accumulate).backward()
        if not with_kd:
            ce_only = {n: p.grad.clone() for n, p in student.named_parameters()}
    tol = {"rtol": 2e-2, "atol": 2e-3} if case == "amp_16_mixed" else {"rtol": 1e-4, "atol": 1e-6}
    for name, p in student.named_parameters():
        torch.testing.assert_close(probe.grads[name], p.grad, **tol, msg=name)
    # and the distillation term is no rounding error: it moves the gradient
    moved = sum((probe.grads[n] - ce_only[n]).norm() for n in ce_only) / sum(g.norm() for g in ce_only.values())
    assert moved > 0.05


# ---------------------------------------------------------------------- the teacher
class Teacher(Callback):
    """Sees the dense module just before the prune; counts teacher forwards and training batches after it."""

    def __init__(self, pruning: PruningCallback) -> None:
        self.pruning = pruning
        self.dense: dict | None = None
        self.forwards = self.batches = 0
        self.hooked = False

    def on_train_epoch_start(self, trainer, pl_module):  # runs before PruningCallback's (listed first)
        if self.dense is None:
            self.dense = {k: v.clone() for k, v in pl_module.state_dict().items() if isinstance(v, torch.Tensor)}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        teacher = self.pruning.dense_model
        if teacher is not None and not self.hooked:
            teacher.register_forward_hook(lambda *args: setattr(self, "forwards", self.forwards + 1))
            self.hooked = True
        self.batches += teacher is not None

    def on_train_epoch_end(self, trainer, pl_module):
        if self.pruning.dense_model is None:
            self.dense = None  # not pruned yet: the dense state to compare with is a later one


@pytest.fixture(scope="module")
def distilled():
    torch.manual_seed(0)
    model, cb, logger = ConvNet(), _callback(prune_epochs=[1, 2]), RecordingLogger()
    probe = Teacher(cb)
    t = trainer(4, [probe, cb], logger=logger, accumulate_grad_batches=2)
    t.fit(model, *loaders())
    return {"model": model, "cb": cb, "probe": probe, "logger": logger, "trainer": t}


def test_the_teacher_is_the_dense_model_frozen_in_eval_mode_and_unchanged_by_training(distilled):
    model, cb, probe, t = distilled["model"], distilled["cb"], distilled["probe"], distilled["trainer"]
    teacher = cb.dense_model
    assert isinstance(teacher, torch.nn.Module)
    assert teacher is not model and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert teacher.body[0].out_channels == 16 and model.body[0].out_channels == 8  # dense teacher, pruned student
    assert teacher._trainer is None  # the copy does not hold the Trainer
    taught = {id(p) for opt in t.optimizers for g in opt.param_groups for p in g["params"]}
    assert not taught & {id(p) for p in teacher.parameters()}
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in teacher.modules() if m is not teacher) \
        and len(teacher._forward_hooks) == 1  # only the probe's counter
    state = teacher.state_dict()
    assert probe.dense is not None and set(probe.dense) <= set(state)
    for name, tensor in probe.dense.items():  # weights and BatchNorm statistics as just before the first prune
        assert torch.equal(state[name], tensor), name
    assert next(teacher.parameters()).device == next(model.parameters()).device


def test_one_teacher_forward_per_training_step_and_the_kd_loss_is_logged(distilled):
    probe, logger = distilled["probe"], distilled["logger"]
    batches = distilled["trainer"].num_training_batches
    assert probe.batches == 3 * batches  # epochs 1, 2 and 3 distil (accumulate_grad_batches=2: per batch)
    assert probe.forwards == probe.batches  # none for validation, none for recalibration, one per step
    kd = [r for r in logger.metrics if "distill/kd_loss" in r]
    assert [r["epoch"] for r in kd] == [1, 2, 3] and all(r["distill/kd_loss"] > 0 for r in kd)


def test_distillation_off_takes_no_teacher_and_adds_no_hook():
    class NoHooks(Callback):
        def __init__(self) -> None:
            self.hooks: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.hooks.append(len(pl_module._forward_hooks))

    torch.manual_seed(0)
    model, cb, probe, logger = ConvNet(), _callback(distillation_weight=0.0), NoHooks(), RecordingLogger()
    trainer(3, [cb, probe], logger=logger).fit(model, *loaders())
    assert cb.dense_model is None and "teacher" not in cb.state_dict()
    assert probe.hooks and set(probe.hooks) == {0}
    assert not any("distill/kd_loss" in r for r in logger.metrics)
    assert model.body[0].out_channels == 8


# ---------------------------------------------------------------------- resume
def test_a_resumed_fit_distils_from_the_same_teacher(tmp_path):
    torch.manual_seed(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    full_cb = _callback(prune_epochs=[1, 2])
    full = ConvNet()
    trainer(4, [full_cb, ckpt], root=tmp_path).fit(full, *loaders())
    path = os.path.join(tmp_path, "epoch=1.ckpt")  # after the first prune, before the second
    assert sorted(glob.glob(str(tmp_path / "*.ckpt")))

    raw = torch.load(path, weights_only=True)  # the teacher travels as tensors and primitives
    state = next(v for k, v in raw["callbacks"].items() if k.startswith("PruningCallback"))
    assert state["teacher"]["body.0.weight"].shape[0] == 16
    assert ConvNet.load_from_checkpoint(path).body[0].out_channels == 12

    torch.manual_seed(1)  # a different fresh module: only the checkpoint may decide
    resumed_cb, resumed = _callback(prune_epochs=[1, 2]), ConvNet()
    trainer(4, [resumed_cb], root=tmp_path / "resumed").fit(resumed, *loaders(), ckpt_path=path)
    teacher, expected = resumed_cb.dense_model.state_dict(), full_cb.dense_model.state_dict()
    assert teacher.keys() == expected.keys()
    for name, tensor in expected.items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(teacher[name], tensor), name
    assert not any(m.training for m in resumed_cb.dense_model.modules())
    for (name, p), q in zip(full.named_parameters(), resumed.parameters()):  # and it trained the same way
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


def test_resuming_a_run_pruned_without_distillation_with_distillation_is_refused(tmp_path):
    torch.manual_seed(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    trainer(2, [_callback(distillation_weight=0.0), ckpt], root=tmp_path).fit(ConvNet(), *loaders())
    with pytest.raises(ValueError, match="pruned without distillation"):
        trainer(3, [_callback()], root=tmp_path / "r").fit(ConvNet(), *loaders(),
                                                            ckpt_path=os.path.join(tmp_path, "epoch=1.ckpt"))


# ---------------------------------------------------------------------- misuse
class DictNet(ConvNet):
    def forward(self, x):
        return {"logits": super().forward(x)}

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x)["logits"], y)


class BypassNet(ConvNet):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.head(self.body(x).mean((2, 3))), y)  # never calls self(x)


def test_a_forward_that_does_not_return_logits_is_refused_at_setup():
    with pytest.raises(ValueError, match=r"distillation needs DictNet's forward to return logits"):
        trainer(2, [_callback()]).fit(DictNet(), *loaders())


def test_a_training_step_that_bypasses_the_module_is_refused():
    with pytest.raises(RuntimeError, match="training_step never called it"):
        trainer(2, [_callback()]).fit(BypassNet(), *loaders())
