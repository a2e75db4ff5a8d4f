"""``PruningCallback``: physically prune a LightningModule during an ordinary ``fit``.

One hook, one job:

* ``setup``: check everything a prune will need (schedule against the Trainer, example
  input, batches, gradient passes, optimization mode), build the dependency graph and the
  pruner, and attach the module's pruning history (so every checkpoint loads);
* ``on_before_optimizer_step``: add the sparse-training regularizer's gradient, once per
  optimizer step, to unscaled gradients;
* ``on_train_epoch_start``: at scheduled epochs, prune as one transaction (step, optimizer
  state, DDP re-wrap, BatchNorm recalibration: all of it or none), then log the new size;
  on its own schedule, let the regularizer update;
* ``on_validation_end``: follow the monitored metric (last and best, dense and pruned);
* ``on_train_batch_start`` / ``on_train_batch_end``: distillation from the frozen dense teacher
  (``distillation.py``), when ``distillation_weight > 0``;
* ``on_fit_end``: the before -> after summary, to the console and the loggers, and the export;
* ``state_dict`` / ``load_state_dict``: schedule position, dense baseline, metric history, teacher.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine.harness import call_model, move_inputs
from lightning_prune.engine.history.optim_state import slice_optimizers

from . import options
from .batches import default_batch_to_input, module_device, side_pass, training_batches, training_loss
from .checkpoint import PruningCheckpointMixin
from .checks import check_trainer
from .distillation import Distillation
from .distributed import decisions_agree, reduce_importance_inputs, rewrap_ddp
from .export import export_module
from .history import ModuleHistory
from .latency import frozen_copy, latency_batch_sizes, latency_measurement, time_models
from .modes import eval_mode, only_gradients_of
from .schedule import PruningSchedule
from .summary import MetricTracker, example_batch_size, format_summary, measure, summary_metrics, summary_rows
from .transaction import PruneTransaction

_REGULARIZED = {"bn_scale": "BNScalePruner", "group_norm": "GroupNormPruner", "growing_reg": "GrowingRegPruner"}


class _NothingPruned(Exception):
    """Every group of a step was refused: the step does not count."""


class PruningCallback(Callback):
    """Prune channels, neurons and heads on a schedule while the model trains.

    Args:
        importance: ``"magnitude"``, ``"l1"``, ``"taylor"``, ``"hessian"``, ``"bn_scale"``,
            ``"lamp"``, ``"fpgm"``, ``"random"``, or an importance object. A criterion whose
            class sets ``needs_gradients`` gets backward passes on training batches first.
        pruning_ratio: fraction of each group's channels removed by the end of the schedule
            (default 0.5 when no budget is given).
        target_macs: instead of a ratio, keep this fraction of the initial MACs (e.g. 0.5).
        target_params: instead of a ratio, keep this fraction of the initial parameters.
        target_latency: instead of a ratio, prune until the model runs in this fraction of the dense
            time (e.g. 0.5), measured on the model's device at the batch size and thread count of
            the latency options (default: the example input's batch, torch's threads), spread over
            the schedule like ``target_macs``; each prune logs ``pruning/latency_ratio``.
        pruning_steps: number of prunes, at ``start_epoch``, ``start_epoch + every_n_epochs``, ...
        start_epoch: epoch of the first prune (at its start).
        every_n_epochs: epochs between prunes.
        schedule: how the target is spread over the prunes: linear, cosine or exponential.
        prune_epochs: explicit epochs to prune at (overrides the three arguments above).
        schedule_fractions: explicit cumulative fraction of the target reached at each prune.
        ignored_layers: dotted module names or glob patterns (``"head"``, ``"backbone.*.fc"``)
            whose outputs are never pruned.
        pruning_ratio_dict: ``{name or glob: ratio}`` per-layer ratios.
        round_to: keep widths multiples of this.
        global_pruning: rank channels across layers.
        isomorphic: rank channels only across layers of the same structure.
        max_pruning_ratio: no group loses more than this fraction.
        prune_num_heads: also remove whole attention heads.
        head_pruning_ratio: fraction of heads removed by the end of the schedule.
        num_heads: ``{layer name or glob: heads}``; the graph's heads are checked against it.
        customized_pruners: ``{layer class: LayerPruner}``; from YAML, import paths of both.
        unwrapped_parameters: ``{"dotted.param": dim}`` for parameters outside any layer.
        forward_fn: ``forward_fn(model, example_input)`` for tracing (callable or import path).
        output_transform: maps the model output to tensors for tracing (callable or import path).
        regularization: sparse training between prunes: none, bn_scale, group_norm, growing_reg.
        regularization_strength: the regularizer's ``reg``.
        delta_reg: growth of the penalty per update (``growing_reg`` only).
        update_regularizer_every_n_epochs: the regularizer re-ranks channels (GrowingReg grows
            its penalty) at the start of every this many epochs.
        example_input: ``"example_input_array"`` (the LightningModule attribute),
            ``"first_batch"`` (model input of the first training batch), or a shape like ``[1, 1, 8, 8]``.
        input_key: where the model input sits in a batch (a dict key or tuple index); see
            :meth:`batch_to_input`.
        recalibrate_bn: re-estimate BatchNorm statistics after each prune.
        recalibration_batches: training batches used for that.
        importance_batches: training batches whose gradients feed gradient-based importances.
        monitor: metric reported before and after (last and best value), e.g. ``val_acc``.
        monitor_mode: ``"max"`` if higher is better, ``"min"`` otherwise.
        measure_latency: time the dense and the pruned model for the summary (the benchmark's
            measurement, ``tp.utils.compare_latency``: the two timed in turns at fit end, from
            a frozen copy of the dense model kept at the first prune; about 1 s per batch size
            and model).
        latency_batch_sizes: batch sizes the summary times (default: the example input's).
            Batch 1 measures per-operator overhead; a large batch (e.g. 256) shows the speedup
            of the arithmetic saved.
        latency_threads: intra-op threads for the timing (default: torch's setting).
        export_path: where to save the pruned model at the end of fit.
        export_format: ``"pt"`` (pruning history + weights; loads into a fresh module or the
            bare network with ``lightning_prune.load_pruned_checkpoint``), ``"torch_export"``
            (a ``torch.export`` program with a dynamic batch dimension) or ``"onnx"``.
        distillation_weight: ``w`` > 0 keeps a frozen copy of the dense model (:attr:`dense_model`,
            taken just before the first prune) as a teacher and adds ``w * T^2 * KL(teacher ||
            student)`` on softmaxed logits to the training loss after the first prune; 0 (default): off.
        temperature: ``T``, the softmax temperature of distillation (default 4.0).
    """

    def __init__(
        self,
        importance: str | Any = "magnitude",
        pruning_ratio: float | None = None,
        target_macs: float | None = None,
        target_params: float | None = None,
        target_latency: float | None = None,
        pruning_steps: int = 1,
        start_epoch: int = 0,
        every_n_epochs: int = 1,
        schedule: Literal["linear", "cosine", "exponential"] = "linear",
        prune_epochs: list[int] | None = None,
        schedule_fractions: list[float] | None = None,
        ignored_layers: list[str] | None = None,
        pruning_ratio_dict: dict[str, float] | None = None,
        round_to: int | None = None,
        global_pruning: bool = False,
        isomorphic: bool = False,
        max_pruning_ratio: float = 1.0,
        prune_num_heads: bool = False,
        head_pruning_ratio: float = 0.0,
        num_heads: dict[str, int] | None = None,
        customized_pruners: dict[Any, Any] | None = None,
        unwrapped_parameters: dict[str, int] | list | None = None,
        forward_fn: Any = None,
        output_transform: Any = None,
        regularization: Literal["none", "bn_scale", "group_norm", "growing_reg"] = "none",
        regularization_strength: float = 1e-4,
        delta_reg: float | None = None,
        update_regularizer_every_n_epochs: int = 1,
        example_input: str | list[int] = "example_input_array",
        input_key: str | int | None = None,
        recalibrate_bn: bool = True,
        recalibration_batches: int = 16,
        importance_batches: int = 8,
        monitor: str | None = "val_acc",
        monitor_mode: Literal["max", "min"] = "max",
        measure_latency: bool = True,
        latency_batch_sizes: list[int] | None = None,
        latency_threads: int | None = None,
        export_path: str | None = None,
        export_format: Literal["pt", "torch_export", "onnx"] = "pt",
        distillation_weight: float = 0.0,
        temperature: float | None = None,
    ) -> None:
        super().__init__()
        if pruning_ratio is None and target_macs is None and target_params is None and target_latency is None:
            pruning_ratio = 0.5
        if target_latency is not None and not (isinstance(target_latency, int | float) and not isinstance(
                target_latency, bool) and 0 < target_latency < 1):
            raise ValueError(f"PruningCallback: target_latency is the fraction of the dense latency to reach and "
                             f"must be in (0, 1), e.g. 0.5 for twice as fast; got {target_latency!r}")
        for name, value in (("pruning_ratio", pruning_ratio), ("head_pruning_ratio", head_pruning_ratio)):
            if value is not None and not (isinstance(value, int | float) and 0 <= value < 1):
                raise ValueError(f"PruningCallback: {name} must be in [0, 1), got {value!r}")
        _choice("regularization", regularization, ("none", *_REGULARIZED))
        _choice("monitor_mode", monitor_mode, ("max", "min"))
        _choice("export_format", export_format, ("pt", "torch_export", "onnx"))
        if delta_reg is not None and regularization != "growing_reg":
            raise ValueError(f"PruningCallback: delta_reg is the growth of GrowingReg's penalty; it needs "
                             f"regularization='growing_reg' (got {regularization!r})")
        if not isinstance(update_regularizer_every_n_epochs, int) or update_regularizer_every_n_epochs < 1:
            raise ValueError(f"PruningCallback: update_regularizer_every_n_epochs must be an int >= 1, got "
                             f"{update_regularizer_every_n_epochs!r}")
        if isinstance(example_input, str) and example_input not in ("example_input_array", "first_batch"):
            raise ValueError("PruningCallback: example_input must be 'example_input_array', 'first_batch' or a "
                             f"shape such as [1, 3, 32, 32]; got {example_input!r}")
        self.importance = tp.importance.get_importance(importance) if isinstance(importance, str) else importance
        self.schedule = PruningSchedule.build(pruning_steps, start_epoch, every_n_epochs, schedule, prune_epochs,
                                              schedule_fractions)
        self.pruner_kwargs: dict[str, Any] = dict(
            pruning_ratio=pruning_ratio, target_macs=target_macs, target_params=target_params,
            target_latency=target_latency, round_to=round_to,
            global_pruning=global_pruning, isomorphic=isomorphic, max_pruning_ratio=max_pruning_ratio,
            prune_num_heads=prune_num_heads, head_pruning_ratio=head_pruning_ratio,
        )
        self.ignored_layers = list(ignored_layers or [])
        self.pruning_ratio_dict = dict(pruning_ratio_dict or {})
        self.num_heads = dict(num_heads or {})
        self.customized_pruners = options.customized_pruners(customized_pruners)
        self.unwrapped_parameters = unwrapped_parameters
        self.forward_fn = options.callable_or_none(forward_fn, "forward_fn")
        self.output_transform = options.callable_or_none(output_transform, "output_transform")
        self.regularization = regularization
        self.regularization_strength = regularization_strength
        self.delta_reg = delta_reg
        self.update_regularizer_every_n_epochs = update_regularizer_every_n_epochs
        self.example_input = example_input
        self.input_key = input_key
        self.recalibrate_bn = recalibrate_bn
        self.recalibration_batches = recalibration_batches
        self.importance_batches = importance_batches
        self.monitor = monitor
        self.measure_latency = measure_latency
        if latency_batch_sizes is not None and (
                not latency_batch_sizes or not all(isinstance(b, int) and b >= 1 for b in latency_batch_sizes)):
            raise ValueError(f"PruningCallback: latency_batch_sizes must be a non-empty list of ints >= 1 (or None "
                             f"for the example input's batch), got {latency_batch_sizes!r}")
        if latency_threads is not None and (not isinstance(latency_threads, int) or latency_threads < 1):
            raise ValueError(f"PruningCallback: latency_threads must be an int >= 1 (or None for torch's "
                             f"setting), got {latency_threads!r}")
        self.latency_batch_sizes = list(latency_batch_sizes) if latency_batch_sizes is not None else None
        self.latency_threads = latency_threads
        #: A frozen copy of the dense model, kept at the first prune when latency is measured,
        #: so that dense and pruned are timed in turns at fit end, or when distilling: then it is
        #: the teacher, saved in the callback's state and back after a resume. Otherwise not saved:
        #: after a resume the dense timing from before the first prune is used.
        self.dense_model: nn.Module | None = None
        self.export_path = export_path
        self.export_format = export_format
        self.distillation = Distillation(distillation_weight, temperature)
        self.pruner: tp.pruner.MetaPruner | None = None
        self.summary: dict[str, Any] | None = None
        self._example: Any = None
        self._dense: dict[str, float] = {}
        self._metric = MetricTracker(monitor_mode)

    # ------------------------------------------------------------------ overridable
    def batch_to_input(self, batch: Any, pl_module: pl.LightningModule) -> Any:
        """The model input in a training batch: what ``pl_module(input)`` is called with.

        Used for ``example_input="first_batch"`` and BatchNorm recalibration. The default
        takes a tensor as is, the first element of a tuple or list, and from a dict or a
        dataclass the ``input_key`` entry or the first of ``"input"``, ``"inputs"``,
        ``"x"``, ``"image"``, ``"images"``, ``"pixel_values"``, ``"input_ids"``. Override it
        for anything else. A dict returned here is passed as keyword arguments.
        """
        return default_batch_to_input(batch, self.input_key)

    def importance_loss(self, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> torch.Tensor:
        """The loss whose gradients feed gradient-based importance; default: what
        ``training_step`` returns. Override it under manual optimization, where
        ``training_step`` steps the optimizers itself."""
        return training_loss(pl_module, batch, batch_idx)

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        history = ModuleHistory.of(pl_module)
        if self._follow_module not in history.listeners:
            history.listeners.append(self._follow_module)
        if stage != "fit" or self.pruner is not None:
            return
        check_trainer(trainer, pl_module, self.schedule, self.importance,
                      custom_loss=type(self).importance_loss is not PruningCallback.importance_loss)
        self._example = self._resolve_example_input(trainer, pl_module)
        self._check_batches(trainer, pl_module)
        self.distillation.check(pl_module, self._example)
        self.pruner = self._build_pruner(pl_module)
        self._history_offset = len(history.records)
        if not isinstance(pl_module, PruningCheckpointMixin):
            rank_zero_warn(f"PruningCallback: {type(pl_module).__name__} does not inherit "
                           f"lightning_prune.PruningCheckpointMixin, so {type(pl_module).__name__}.load_from_checkpoint "
                           f"cannot load this run's pruned checkpoints; add it to the class bases, or load them with "
                           f"lightning_prune.load_pruned_checkpoint")

    def _resolve_example_input(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        if isinstance(self.example_input, list | tuple):
            shape = [int(s) for s in self.example_input]
            dtype = next((p.dtype for p in pl_module.parameters() if p.is_floating_point()), torch.float32)
            return torch.zeros(shape, dtype=dtype, device=module_device(pl_module))
        if self.example_input == "example_input_array":
            example = getattr(pl_module, "example_input_array", None)
            if example is None:
                raise ValueError(
                    f"PruningCallback: {type(pl_module).__name__}.example_input_array is not set. Set it in "
                    f"__init__, or pass example_input='first_batch' or an input shape such as [1, 3, 32, 32]")
            return move_inputs(example, module_device(pl_module))
        batch = next(iter(training_batches(trainer, 1)), None)
        if batch is None:
            raise ValueError("PruningCallback: example_input='first_batch' but no training dataloader could be "
                             "read at setup; set example_input_array or pass an input shape")
        return self._model_input(pl_module, batch)

    def _model_input(self, pl_module: pl.LightningModule, batch: Any) -> Any:
        device = module_device(pl_module)
        return move_inputs(self.batch_to_input(pl_module.transfer_batch_to_device(batch, device, 0), pl_module),
                           device)

    def _check_batches(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run what a prune will run on one real batch now, not two epochs into the fit."""
        needs_grad = bool(getattr(self.importance, "needs_gradients", False))
        if not (self.recalibrate_bn and _has_batchnorm(pl_module)) and not needs_grad:
            return
        batch = next(iter(training_batches(trainer, 1)), None)
        if batch is None:
            raise ValueError("PruningCallback: recalibration and gradient-based importance read training batches, "
                             "but no training dataloader could be read at setup")
        if self.recalibrate_bn and _has_batchnorm(pl_module):
            inputs = self._model_input(pl_module, batch)
            with eval_mode(pl_module), torch.no_grad():
                call_model(pl_module, inputs)
        if needs_grad:
            self._gradient_pass(trainer, pl_module, [batch])
            pl_module.zero_grad(set_to_none=True)
            _reset_statistics(self.importance)

    def _build_pruner(self, pl_module: pl.LightningModule) -> tp.pruner.MetaPruner:
        modules = dict(pl_module.named_modules())
        ignored = [modules[n] for n in options.match_modules(modules, self.ignored_layers, "ignored_layers")]
        num_heads = {n: heads for pattern, heads in self.num_heads.items()
                     for n in options.match_modules(modules, [pattern], "num_heads")}
        cls = getattr(tp.pruner, _REGULARIZED.get(self.regularization, "MetaPruner"))
        kwargs: dict[str, Any] = dict(self.pruner_kwargs)
        if self.regularization != "none":
            kwargs["reg"] = self.regularization_strength
        if self.delta_reg is not None:
            kwargs["delta_reg"] = self.delta_reg
        if kwargs.get("target_latency") is not None:
            kwargs.update(latency_measurement(self))
        with eval_mode(pl_module), torch.enable_grad():
            return cls(
                pl_module, self._example, importance=self.importance, ignored_layers=ignored,
                pruning_ratio_dict=options.layers_by_name(pl_module, self.pruning_ratio_dict, "pruning_ratio_dict")
                or None, num_heads=num_heads or None, customized_pruners=self.customized_pruners,
                unwrapped_parameters=options.unwrapped_parameters(pl_module, self.unwrapped_parameters),
                forward_fn=self.forward_fn, output_transform=self.output_transform,
                iterative_steps=self.schedule.steps, iterative_pruning_ratio_scheduler=self.schedule.scheduler,
                **kwargs,
            )

    # ------------------------------------------------------------------ training
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The strategy has moved the module to its device (after setup): the example follows."""
        if self.pruner is not None:
            self._example = move_inputs(self._example, module_device(pl_module))
            self.pruner.example_inputs = self._example
            self.distillation.start(trainer, pl_module, pruned=self.pruner.current_step > 0)
            self.dense_model = self.distillation.teacher or self.dense_model  # a resumed fit's teacher

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self.distillation.arm()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.distillation.end_batch(pl_module, outputs)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.distillation.stop()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self.pruner is None or self.regularization == "none":
            return
        if pl_module.automatic_optimization:
            self.pruner.regularize(pl_module)
            return
        with only_gradients_of(optimizer, pl_module):  # each optimizer's own parameters, once per its step
            self.pruner.regularize(pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is None:
            return
        step = self.schedule.step_at(trainer.current_epoch)
        if step is not None and self.pruner.current_step < step:
            self._prune(trainer, pl_module, step)
        if self.regularization != "none" and trainer.current_epoch % self.update_regularizer_every_n_epochs == 0:
            self.pruner.update_regularizer()

    def _prune(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        assert self.pruner is not None
        if not self._dense:  # the dense model, as trained so far
            self._dense = measure(pl_module, self._example, self.measure_latency, self.latency_batch_sizes,
                                  self.latency_threads)
            if (self.measure_latency or self.distillation.enabled) and self.dense_model is None:
                self.dense_model = frozen_copy(pl_module)
            self._log(trainer, {f"pruning/{k}": self._dense[k] for k in ("params", "macs")})
        self.distillation.take_teacher(pl_module, self.dense_model)  # distillation_weight > 0: it teaches
        if getattr(self.pruner.importance, "needs_gradients", False):
            self._gradient_pass(trainer, pl_module, training_batches(trainer, self.importance_batches))
        history = ModuleHistory.of(pl_module)
        transaction = PruneTransaction(pl_module, list(trainer.optimizers), self.pruner)
        length, rewrapped = len(history.records), False
        try:
            self.pruner.current_step = step - 1  # the schedule's position, even after a step that failed
            with eval_mode(pl_module):
                record = self.pruner.step()
            if not decisions_agree(trainer, record):
                raise RuntimeError("PruningCallback: DDP ranks made different pruning decisions; nothing was "
                                   "pruned. Make the importance deterministic (seed RandomImportance) or reduce "
                                   "its statistics across ranks (Importance.reduce_statistics)")
            if not record["tensors"]:
                raise _NothingPruned("; ".join(self.pruner.skipped[:3]) or "no group had channels to remove")
            pl_module.zero_grad(set_to_none=True)
            slice_optimizers(trainer.optimizers, pl_module, record)
            history.extend([record])
            rewrapped = True
            rewrap_ddp(trainer, pl_module)
            if self.recalibrate_bn and _has_batchnorm(pl_module):
                inputs = [self._model_input(pl_module, b) for b in training_batches(trainer, self.recalibration_batches)]
                tp.recalibrate_batchnorm(pl_module, inputs, forward_fn=call_model)
        except BaseException as err:
            transaction.rollback()
            history.truncate(length)
            if rewrapped:
                rewrap_ddp(trainer, pl_module)
            pl_module.zero_grad(set_to_none=True)
            if not isinstance(err, _NothingPruned):
                raise
            rank_zero_warn(f"PruningCallback: epoch {trainer.current_epoch}: every group was refused, so prune "
                           f"{step}/{self.schedule.steps} did not happen and does not count ({err})")
            return
        finally:
            _reset_statistics(self.pruner.importance)
        self._after_prune(trainer, pl_module)

    def _gradient_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: list[Any]) -> None:
        """Gradients (and accumulated statistics) for gradient-based importance, averaged over ranks."""
        if not batches:
            raise RuntimeError("PruningCallback: gradient-based importance needs training batches; none could be read")
        importance = self.pruner.importance if self.pruner is not None else self.importance
        _reset_statistics(importance)
        device = module_device(pl_module)
        with side_pass(pl_module), trainer.precision_plugin.train_step_context():
            for i, batch in enumerate(batches):
                loss = self.importance_loss(pl_module, pl_module.transfer_batch_to_device(batch, device, 0), i)
                loss.backward()
                accumulate = getattr(importance, "accumulate_grad", None)
                if callable(accumulate):
                    accumulate(pl_module)
        reduce_importance_inputs(pl_module, importance)

    def _after_prune(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.pruner is not None
        macs, params = tp.utils.count_ops_and_params(pl_module, self._example)
        metrics = {"pruning/params": float(params), "pruning/macs": float(macs), "pruning/step": float(
            self.pruner.current_step)}
        metrics.update({f"pruning/width/{n}": float(w) for n, w in tp.utils.layer_widths(pl_module).items()})
        report = self.pruner.latency_report
        if report is not None:
            metrics.update({"pruning/latency_ratio": report.realized, "pruning/latency_ratio_iqr": report.spread})
            rank_zero_info(f"[lightning-prune] epoch {trainer.current_epoch}: {report}")
        self._log(trainer, metrics)
        rank_zero_info(f"[lightning-prune] epoch {trainer.current_epoch}: pruned step "
                       f"{self.pruner.current_step}/{self.schedule.steps}: params {params / 1e6:.3f} M, "
                       f"MACs {macs / 1e6:.2f} M")

    def _log(self, trainer: pl.Trainer, metrics: dict[str, float], epoch: int | None = None) -> None:
        metrics = {**metrics, "epoch": trainer.current_epoch if epoch is None else epoch}  # an int, as Lightning's
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is None or not self.monitor or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        if self.pruner.current_step == 0:
            self._metric.update("dense", float(value))
        elif self.pruner.current_step >= self.schedule.steps:
            self._metric.update("pruned", float(value))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.distillation.stop()
        if self.pruner is None:
            return
        if self.pruner.current_step < self.schedule.steps:
            rank_zero_warn(f"PruningCallback: the fit ended after {self.pruner.current_step} of "
                           f"{self.schedule.steps} scheduled prunes (epochs {list(self.schedule.epochs)})")
        if not self._dense:
            return
        before = dict(self._dense)
        after = measure(pl_module, self._example, latency=False)
        if self.measure_latency:
            after.update(self._time_after(pl_module, before))
        rows = summary_rows(before, after, self._metric.values, self.monitor)
        rank_zero_info(format_summary(rows))
        self._log(trainer, summary_metrics(rows), epoch=max(trainer.current_epoch - 1, 0))  # the last one trained
        self.summary = {"before": before, "after": after, "metric": dict(self._metric.values)}
        if self.export_path and trainer.is_global_zero:
            os.makedirs(os.path.dirname(self.export_path) or ".", exist_ok=True)
            export_module(pl_module, self._example, self.export_path, self.export_format)
            rank_zero_info(f"[lightning-prune] saved the pruned model to {self.export_path} ({self.export_format})")

    def _time_after(self, pl_module: pl.LightningModule, before: dict[str, float]) -> dict[str, float]:
        """The pruned model's latency rows; with the dense copy, both re-timed in turns (``before`` updated)."""
        sizes = latency_batch_sizes(before) or self.latency_batch_sizes or [example_batch_size(self._example)]
        if self.dense_model is None:
            return time_models({"pruned": pl_module}, self._example, sizes, self.latency_threads)["pruned"]
        dense = self.dense_model.to(module_device(pl_module))
        timed = time_models({"dense": dense, "pruned": pl_module}, self._example, sizes, self.latency_threads)
        before.update(timed["dense"])
        return timed["pruned"]

    # ------------------------------------------------------------------ state
    def _follow_module(self, history: list[dict]) -> None:
        """The module was reshaped to a checkpoint's history: the pruner follows it."""
        if self.pruner is not None:
            self.pruner.follow_history(history[self._history_offset:])

    def state_dict(self) -> dict[str, Any]:
        return {"version": 2, "current_step": self.pruner.current_step if self.pruner else 0,
                "epochs": list(self.schedule.epochs), "dense": dict(self._dense),
                "metric": dict(self._metric.values), **self.distillation.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._dense = dict(state_dict.get("dense", {}))
        self._metric.values = dict(state_dict.get("metric", {}))
        self.distillation.load_state_dict(state_dict)
        saved = list(state_dict.get("epochs", self.schedule.epochs))
        if saved != list(self.schedule.epochs):
            raise ValueError(f"PruningCallback: the checkpoint was written with prune epochs {saved}, this callback "
                             f"has {list(self.schedule.epochs)}; resume with the same schedule")
        if self.pruner is not None:
            self.pruner.current_step = int(state_dict.get("current_step", self.pruner.current_step))


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"PruningCallback: {name} must be one of {', '.join(allowed)}; got {value!r}")


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in module.modules())


def _reset_statistics(importance: Any) -> None:
    reset = getattr(importance, "zero_grad", None)
    if callable(reset):
        reset()
