"""Knowledge distillation from the dense model while the pruned one recovers.

A pruned network recovers faster and further when it learns the dense network's logits
as well as the labels. The dense model is copied just before the first prune, frozen
(eval mode, no gradients) and kept on the student's device: the *teacher*.

The distillation term is ``w * T^2 * KL(softmax(t / T) || softmax(s / T))`` averaged over
the batch (``batchmean``), for student logits ``s`` and teacher logits ``t``. It is added
to the training loss without touching the user's ``training_step`` and without a second
backward:

* a forward hook on the LightningModule catches the first call of the module in each
  training step, runs the teacher once on the very same arguments (so augmentations made
  inside ``training_step`` reach both), under ``torch.no_grad``;
* a gradient hook on the student's logits adds the term's gradient in closed form,
  ``w * T * (softmax(s / T) - softmax(t / T)) / batch``, multiplied by what Lightning
  applies to the loss itself before ``backward``: ``1 / accumulate_grad_batches`` under
  automatic optimization and the AMP ``GradScaler``'s scale under ``16-mixed``. The
  gradients are therefore exactly those of ``loss + w * kd``.

Under manual optimization the term joins whatever loss is back-propagated through the
module's output with ``manual_backward`` (once per training step, however many backward
passes go through it). The KD value is logged as ``distill/kd_loss`` (epoch mean, no
device sync per step).

The teacher's weights (and its pruning history, primitives only) are part of the callback's
``state_dict``, so a resumed fit distils from the same teacher and checkpoints still load
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from .latency import frozen_copy
from .modes import eval_mode

#: Softmax temperature used when ``distillation_weight > 0`` and no temperature is given.
DEFAULT_TEMPERATURE = 4.0


def kd_loss_and_gradient(student: torch.Tensor, teacher: torch.Tensor, temperature: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` (batchmean) and its gradient with respect to ``s``.

    Both are computed in float32 from detached logits of shape ``[batch, classes]``.
    """
    s = student.detach().float() / temperature
    t = teacher.detach().float() / temperature
    log_ps, log_pt = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)
    batch = student.shape[0]
    loss = temperature ** 2 * (log_pt.exp() * (log_pt - log_ps)).sum() / batch
    gradient = (log_ps.exp() - log_pt.exp()) * (temperature / batch)
    return loss, gradient


def _loss_scale(trainer: pl.Trainer) -> torch.Tensor | float:
    """The factor Lightning's precision plugin multiplies the loss by before ``backward``."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return 1.0
    scale = getattr(scaler, "_scale", None)  # the device tensor: no host sync
    return scale if isinstance(scale, torch.Tensor) else float(scaler.get_scale())


class Distillation:
    """The teacher, its hooks on the student, and its part of the callback's state.

    Args:
        weight: ``w``, the weight of the distillation term in the loss; 0 turns it off.
        temperature: ``T``, the softmax temperature (``None``: :data:`DEFAULT_TEMPERATURE`).
    """

    def __init__(self, weight: float = 0.0, temperature: float | None = None) -> None:
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"PruningCallback: distillation_weight must be a finite number >= 0 (0 turns "
                             f"distillation off), got {weight!r}")
        if temperature is not None:
            if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
                    or not math.isfinite(temperature) or temperature <= 0):
                raise ValueError(f"PruningCallback: temperature must be a finite number > 0 (e.g. "
                                 f"{DEFAULT_TEMPERATURE}), got {temperature!r}")
            if weight == 0:
                raise ValueError(f"PruningCallback: temperature={temperature!r} is the distillation's softmax "
                                 f"temperature; it needs distillation_weight > 0 (got 0). Set distillation_weight, "
                                 f"or leave temperature unset")
        self.weight = float(weight)
        self.temperature = float(DEFAULT_TEMPERATURE if temperature is None else temperature)
        self.teacher: nn.Module | None = None
        self._pending: Mapping[str, Any] | None = None  # a checkpoint's teacher, built at fit start
        self._trainer: pl.Trainer | None = None
        self._handle: Any = None
        self._armed = False
        self._captured: dict[str, Any] | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    # ------------------------------------------------------------------ lifecycle
    def check(self, pl_module: pl.LightningModule, example: Any) -> None:
        """At setup: the module's output must be logits ``[batch, classes]`` (one eval forward)."""
        if not self.enabled:
            return
        from ..engine.harness import call_model

        with eval_mode(pl_module), torch.no_grad():
            out = call_model(pl_module, example)
        _check_logits(out, pl_module)

    def take_teacher(self, pl_module: pl.LightningModule, dense: nn.Module | None) -> None:
        """Just before the first prune: ``dense``, the callback's frozen copy of the dense module
        (:func:`~lightning_prune.callback.latency.frozen_copy`), becomes the teacher."""
        if self.enabled and self.teacher is None:
            if dense is None:
                raise RuntimeError("PruningCallback: distillation needs the frozen dense copy before the first prune")
            self.teacher = dense
            self._attach(pl_module)

    def start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, pruned: bool) -> None:
        """At fit start: build a checkpoint's teacher, and hook the student if there is a teacher."""
        self._trainer = trainer
        if not self.enabled:
            return
        if self._pending is not None:
            self.stop()
            # a copy of the (pruned) module; its pruning history, copied along, reshapes it to the teacher's
            teacher = frozen_copy(pl_module)
            teacher.load_state_dict(self._pending)
            self.teacher, self._pending = teacher, None
        elif self.teacher is None and pruned:
            raise ValueError("PruningCallback: distillation_weight > 0, but this fit resumes a run that was pruned "
                             "without distillation, so its dense model is gone and there is no teacher. Resume "
                             "with distillation_weight=0, or start the fit again from the dense model")
        if self.teacher is not None:
            self._attach(pl_module)

    def _attach(self, pl_module: pl.LightningModule) -> None:
        if self._handle is None:
            self._handle = pl_module.register_forward_hook(self._on_student_forward, with_kwargs=True)

    def stop(self) -> None:
        """Unhook the student (fit end, teardown); the teacher stays for the summary and the state."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._armed, self._captured = False, None

    # ------------------------------------------------------------------ per step
    def arm(self) -> None:
        """A training step begins: its first call of the module gets the teacher's logits."""
        self._armed = self._handle is not None
        self._captured = None

    def _on_student_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self._armed or not torch.is_grad_enabled():
            return
        self._armed = False
        _check_logits(output, module)
        assert self.teacher is not None
        with torch.no_grad():
            teacher_out = self.teacher(*args, **kwargs)
        if not isinstance(teacher_out, torch.Tensor) or teacher_out.shape != output.shape:
            raise RuntimeError(f"PruningCallback: the teacher's output ({_describe(teacher_out)}) does not match the "
                               f"student's ({_describe(output)}); distillation needs the same logits from both")
        loss, gradient = kd_loss_and_gradient(output, teacher_out, self.temperature)
        captured = {"loss": loss, "batch": output.shape[0], "fired": False}
        self._captured = captured
        if output.requires_grad:
            output.register_hook(lambda grad: self._add_gradient(grad, gradient, captured))

    def _add_gradient(self, grad: torch.Tensor, gradient: torch.Tensor, captured: dict[str, Any]) -> torch.Tensor:
        if captured["fired"]:  # a second backward through the same logits: the term is added once
            return grad
        captured["fired"] = True
        scale: Any = self.weight * _loss_scale(self._trainer) if self._trainer is not None else self.weight
        if self._trainer is not None and self._trainer.lightning_module.automatic_optimization:
            scale = scale / self._trainer.accumulate_grad_batches  # Lightning divides the loss by it
        return grad + (gradient * scale).to(grad.dtype)

    def end_batch(self, pl_module: pl.LightningModule, outputs: Any) -> None:
        """After the step's backward: check the term reached the gradients, and log its value."""
        captured, self._captured, armed = self._captured, None, self._armed
        self._armed = False
        if self._handle is None:
            return
        if captured is None:
            if armed and outputs is not None:
                raise RuntimeError(
                    f"PruningCallback: distillation hooks {type(pl_module).__name__}'s own forward, but this "
                    f"training_step never called it; compute the logits with self(x) in training_step")
            return
        if not captured["fired"] and outputs is not None:
            message = (f"PruningCallback: the loss back-propagated in this training_step does not depend on "
                       f"{type(pl_module).__name__}'s output, so the distillation term did not reach the gradients")
            if pl_module.automatic_optimization:
                raise RuntimeError(message)
            if not self._warned:
                self._warned = True
                rank_zero_warn(message + " (manual optimization: back-propagate a loss of self(x) with "
                               "manual_backward in the same step)")
        pl_module.log("distill/kd_loss", captured["loss"], on_step=False, on_epoch=True, batch_size=captured["batch"])

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """``{"teacher": weights and history}`` once there is a teacher (primitives and tensors)."""
        if not self.enabled:
            return {}
        teacher = self.teacher.state_dict() if self.teacher is not None else self._pending
        return {} if teacher is None else {"teacher": teacher}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        teacher = state.get("teacher")
        if teacher is not None and self.enabled:
            self.teacher, self._pending = None, teacher


def _check_logits(output: Any, module: nn.Module) -> None:
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or not output.is_floating_point():
        raise ValueError(
            f"PruningCallback: distillation needs {type(module).__name__}'s forward to return logits of shape "
            f"[batch, classes]; it returned {_describe(output)}. Return the logits from forward (and anything else "
            f"from training_step), or set distillation_weight=0")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"
