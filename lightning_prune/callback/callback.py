"""``PruningCallback``: physically prune a LightningModule during an ordinary ``fit``.

One hook, one job:

* ``setup``: build the dependency graph and the pruner (errors stop the fit here, before
  any checkpoint is written) and install the checkpoint hooks;
* ``on_after_backward``: add the sparse-training regularizer's gradient;
* ``on_train_epoch_start``: at scheduled epochs, prune, slice optimizer state, re-wrap DDP,
  recalibrate BatchNorm and log the new size;
* ``state_dict`` / ``load_state_dict``: the history (primitives only) and the schedule position.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine.optim_state import slice_optimizers

from .checkpoint import HistoryHooks
from .schedule import PruningSchedule

log = logging.getLogger(__name__)

_REGULARIZED = {"bn_scale": "BNScalePruner", "group_norm": "GroupNormPruner", "growing_reg": "GrowingRegPruner"}
_NEEDS_GRADIENTS = ("taylor", "hessian")


class PruningCallback(Callback):
    """Prune channels, neurons and heads on a schedule while the model trains.

    Args:
        importance: ``"magnitude"``, ``"l1"``, ``"taylor"``, ``"hessian"``, ``"bn_scale"``,
            ``"lamp"``, ``"fpgm"``, ``"random"``, or an importance object.
        pruning_ratio: fraction of each group's channels removed by the end of the schedule.
        target_macs: instead of a ratio, keep this fraction of the initial MACs (e.g. 0.5).
        target_params: instead of a ratio, keep this fraction of the initial parameters.
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
        regularization: sparse training between prunes: none, bn_scale, group_norm, growing_reg.
        regularization_strength: the regularizer's ``reg``.
        example_input: ``"example_input_array"`` (the LightningModule attribute),
            ``"first_batch"`` (input of the first training batch), or a shape like ``[1, 1, 8, 8]``.
        recalibrate_bn: re-estimate BatchNorm statistics after each prune.
        recalibration_batches: training batches used for that.
        importance_batches: training batches whose gradients feed gradient-based importances.
        monitor: metric shown before the first prune and at the end of fit (e.g. ``val_acc``).
        export_path: where to save the pruned model at the end of fit.
        export_format: ``"pt"`` (pruning history + weights; load it into a fresh module with
            ``lightning_prune.load_pruned_checkpoint``), ``"torch_export"`` (a
            ``torch.export`` program, load with ``torch.export.load``) or ``"onnx"`` (needs the
            ``onnx`` and ``onnxscript`` packages).
    """

    def __init__(
        self,
        importance: str | Any = "magnitude",
        pruning_ratio: float | None = None,
        target_macs: float | None = None,
        target_params: float | None = None,
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
        regularization: Literal["none", "bn_scale", "group_norm", "growing_reg"] = "none",
        regularization_strength: float = 1e-4,
        example_input: str | list[int] = "example_input_array",
        recalibrate_bn: bool = True,
        recalibration_batches: int = 16,
        importance_batches: int = 8,
        monitor: str | None = "val_acc",
        export_path: str | None = None,
        export_format: Literal["pt", "torch_export", "onnx"] = "pt",
    ) -> None:
        super().__init__()
        if pruning_ratio is None and target_macs is None and target_params is None:
            pruning_ratio = 0.5
        for name, value in (("pruning_ratio", pruning_ratio), ("head_pruning_ratio", head_pruning_ratio)):
            if value is not None and not (isinstance(value, int | float) and 0 <= value < 1):
                raise ValueError(f"PruningCallback: {name} must be in [0, 1), got {value!r}")
        if regularization not in ("none", *_REGULARIZED):
            raise ValueError(f"PruningCallback: regularization must be one of none, {', '.join(_REGULARIZED)}; "
                             f"got {regularization!r}")
        if isinstance(example_input, str) and example_input not in ("example_input_array", "first_batch"):
            raise ValueError("PruningCallback: example_input must be 'example_input_array', 'first_batch' or a "
                             f"shape such as [1, 3, 32, 32]; got {example_input!r}")
        if isinstance(importance, str):
            tp.importance.get_importance(importance)  # fail now on an unknown name
        self.schedule = PruningSchedule.build(pruning_steps, start_epoch, every_n_epochs, schedule, prune_epochs,
                                              schedule_fractions)
        self.importance = importance
        self.pruning_ratio = pruning_ratio
        self.target_macs = target_macs
        self.target_params = target_params
        self.ignored_layers = list(ignored_layers or [])
        self.pruning_ratio_dict = dict(pruning_ratio_dict or {})
        self.round_to = round_to
        self.global_pruning = global_pruning
        self.isomorphic = isomorphic
        self.max_pruning_ratio = max_pruning_ratio
        self.prune_num_heads = prune_num_heads
        self.head_pruning_ratio = head_pruning_ratio
        self.regularization = regularization
        self.regularization_strength = regularization_strength
        self.example_input = example_input
        self.recalibrate_bn = recalibrate_bn
        self.recalibration_batches = recalibration_batches
        self.importance_batches = importance_batches
        self.monitor = monitor
        self.export_path = export_path
        if export_format not in ("pt", "torch_export", "onnx"):
            raise ValueError(f"PruningCallback: export_format must be pt, torch_export or onnx, got {export_format!r}")
        self.export_format = export_format
        self.pruner: tp.pruner.MetaPruner | None = None
        self._hooks: HistoryHooks | None = None
        self._before: dict[str, float] = {}
        self._events: list[dict[str, float]] = []

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._hooks is None:
            self._hooks = HistoryHooks(pl_module, self._history)
            self._hooks.on_replayed = self._after_replay  # type: ignore[method-assign]
        if stage != "fit" or self.pruner is not None:
            return
        example = self._resolve_example_input(trainer, pl_module)
        modules = dict(pl_module.named_modules())
        ignored = [modules[n] for n in _match(modules, self.ignored_layers, "ignored_layers")]
        ratio_dict = {}
        for pattern, ratio in self.pruning_ratio_dict.items():
            names = _match(modules, [pattern], "pruning_ratio_dict")
            ratio_dict[tuple(modules[n] for n in names) if len(names) > 1 else modules[names[0]]] = ratio
        cls = getattr(tp.pruner, _REGULARIZED.get(self.regularization, "MetaPruner"))
        kwargs: dict[str, Any] = {}
        if self.regularization != "none":
            kwargs["reg"] = self.regularization_strength
        with _training_mode(pl_module, False), torch.enable_grad():
            self.pruner = cls(
                pl_module, example, importance=self.importance, pruning_ratio=self.pruning_ratio,
                target_macs=self.target_macs, target_params=self.target_params,
                pruning_ratio_dict=ratio_dict or None, ignored_layers=ignored, round_to=self.round_to,
                global_pruning=self.global_pruning, isomorphic=self.isomorphic,
                max_pruning_ratio=self.max_pruning_ratio, prune_num_heads=self.prune_num_heads,
                head_pruning_ratio=self.head_pruning_ratio, iterative_steps=self.schedule.steps,
                iterative_pruning_ratio_scheduler=self.schedule.scheduler, **kwargs,
            )
        self._example = example

    def _resolve_example_input(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        if isinstance(self.example_input, list | tuple):
            shape = [int(s) for s in self.example_input]
            dtype = next((p.dtype for p in pl_module.parameters()), torch.float32)
            return torch.zeros(shape, dtype=dtype, device=pl_module.device)
        if self.example_input == "example_input_array":
            example = getattr(pl_module, "example_input_array", None)
            if example is None:
                raise ValueError(
                    f"PruningCallback: {type(pl_module).__name__}.example_input_array is not set. Set it in "
                    f"__init__, or pass example_input='first_batch' or an input shape such as [1, 3, 32, 32]"
                )
            return example
        batch = next(_training_batches(trainer, 1), None)
        if batch is None:
            raise ValueError("PruningCallback: example_input='first_batch' but no training dataloader could be "
                             "read at setup; set example_input_array or pass an input shape")
        return _model_input(batch)

    # ------------------------------------------------------------------ training
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is not None and not self._before:
            self._before = self._size(pl_module)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is not None and self.regularization != "none":
            self.pruner.regularize(pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = self.schedule.step_at(trainer.current_epoch)
        if self.pruner is None or step is None or self.pruner.current_step >= step:
            return
        self._prune(trainer, pl_module)

    def _prune(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.pruner is not None
        if self.pruner.current_step == 0:  # the dense model, as trained so far
            self._before.update(self._quality(trainer, pl_module))
        name = self.importance if isinstance(self.importance, str) else ""
        if name in _NEEDS_GRADIENTS:
            self._accumulate_gradients(trainer, pl_module)
        with _training_mode(pl_module, False):
            record = self.pruner.step()
        pl_module.zero_grad(set_to_none=True)
        slice_optimizers(trainer.optimizers, pl_module, record)
        self._check_same_decision(trainer, record)
        self._rewrap_ddp(trainer, pl_module)
        if self._hooks is not None:
            self._hooks.applied = len(self.pruner.pruning_history())
        if self.recalibrate_bn:
            batches = _training_inputs(trainer, self.recalibration_batches)
            if batches:
                tp.recalibrate_batchnorm(pl_module, batches)
        size = self._size(pl_module)
        size["epoch"] = float(trainer.current_epoch)
        self._events.append(size)
        metrics = {f"pruning/{k}": v for k, v in size.items() if k != "epoch"}
        metrics.update({f"pruning/width/{n}": float(w) for n, w in tp.utils.layer_widths(pl_module).items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        rank_zero_info(f"[lightning-prune] epoch {trainer.current_epoch}: pruned step "
                       f"{self.pruner.current_step}/{self.schedule.steps}: params {size['params'] / 1e6:.3f} M, "
                       f"MACs {size['macs'] / 1e6:.2f} M")

    def _accumulate_gradients(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Gradients for Taylor/Hessian importance, averaged over ranks so decisions agree."""
        pl_module.zero_grad(set_to_none=True)
        for i, batch in enumerate(_training_batches(trainer, self.importance_batches)):
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            out = pl_module.training_step(batch, i)
            loss = out["loss"] if isinstance(out, dict) else out
            loss.backward()
            imp = self.pruner.importance if self.pruner is not None else None
            if hasattr(imp, "accumulate_grad"):
                imp.accumulate_grad(pl_module)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for p in pl_module.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world

    def _check_same_decision(self, trainer: pl.Trainer, record: dict) -> None:
        if trainer.world_size <= 1:
            return
        reference = trainer.strategy.broadcast(record, src=0)
        if reference != record:
            raise RuntimeError("PruningCallback: ranks made different pruning decisions; make importance "
                               "deterministic (seed RandomImportance) or use a data-independent criterion")

    def _rewrap_ddp(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """DDP fixes its buckets at wrap time: wrap the pruned module again."""
        strategy = trainer.strategy
        if not hasattr(strategy, "configure_ddp") or trainer.world_size <= 1:
            return
        optimizers = strategy.optimizers
        strategy.model = pl_module
        strategy.configure_ddp()
        strategy.optimizers = optimizers

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is None or not self._before:
            return
        after = self._size(pl_module)
        after.update(self._quality(trainer, pl_module))
        rows = [("params (M)", "params", 1e-6), ("MACs (M)", "macs", 1e-6), ("latency (ms)", "latency_ms", 1.0),
                (self.monitor or "", "metric", 1.0)]
        lines = ["[lightning-prune] before -> after"]
        for label, key, scale in rows:
            if key in self._before and key in after:
                b, a = self._before[key] * scale, after[key] * scale
                lines.append(f"  {label:<13s} {b:10.4f} -> {a:10.4f}  ({a / b if b else float('nan'):.2%})")
        rank_zero_info("\n".join(lines))
        self.summary = {"before": dict(self._before), "after": after}
        if self.export_path and trainer.is_global_zero:
            import os

            os.makedirs(os.path.dirname(self.export_path) or ".", exist_ok=True)
            self._export(pl_module)
            rank_zero_info(f"[lightning-prune] saved the pruned model to {self.export_path} ({self.export_format})")

    def _export(self, pl_module: pl.LightningModule) -> None:
        if self.export_format == "pt":
            torch.save({"state_dict": pl_module.state_dict(), "history": self._history()}, self.export_path)
            return
        example = (self._example,) if isinstance(self._example, torch.Tensor) else tuple(self._example)
        with _training_mode(pl_module, False), torch.no_grad():
            if self.export_format == "torch_export":
                torch.export.save(torch.export.export(pl_module, example), self.export_path)
                return
            try:
                import onnx  # noqa: F401
                import onnxscript  # noqa: F401
            except ImportError as err:
                raise ImportError("export_format='onnx' needs the onnx and onnxscript packages: "
                                  "pip install onnx onnxscript (or use export_format='torch_export')") from err
            torch.onnx.export(pl_module, example, self.export_path)

    def _quality(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        out = {"latency_ms": tp.utils.measure_latency(pl_module, self._example, warmup=5, repeats=30).median_ms}
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is not None:
            out["metric"] = float(value)
        return out

    def _size(self, pl_module: pl.LightningModule) -> dict[str, float]:
        macs, params = tp.utils.count_ops_and_params(pl_module, self._example)
        return {"params": float(params), "macs": float(macs)}

    # ------------------------------------------------------------------ state
    def _history(self) -> list[dict]:
        return self.pruner.pruning_history() if self.pruner is not None else []

    def _after_replay(self, history: list[dict]) -> None:
        """The module was reshaped from a checkpoint's history: follow it."""
        if self.pruner is not None:
            self.pruner._history = [dict(r) for r in history]
            self.pruner.current_step = len(history)
            self.pruner.DG = self.pruner._build("offsets")
            stale = getattr(self.pruner, "_mark_stale", None)
            if callable(stale):
                stale()

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "current_step": self.pruner.current_step if self.pruner else 0,
                "epochs": list(self.schedule.epochs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.pruner is not None and state_dict.get("current_step", 0) != self.pruner.current_step:
            raise RuntimeError(
                f"PruningCallback: the checkpoint says {state_dict.get('current_step')} prunes were done but the "
                f"module's history replayed {self.pruner.current_step}; was it saved with another callback config?"
            )


def _match(modules: dict[str, nn.Module], patterns: list[str], arg: str) -> list[str]:
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"PruningCallback: {arg} takes dotted module names or glob patterns, got {pattern!r}")
        hits = [n for n in modules if n and (n == pattern or fnmatch.fnmatchcase(n, pattern))]
        if not hits:
            close = [n for n in modules if n and pattern.split(".")[-1] in n][:3]
            raise ValueError(f"PruningCallback: {arg}: no module matches {pattern!r}"
                             + (f"; did you mean {close}?" if close else ""))
        out.extend(h for h in hits if h not in out)
    return out


class _training_mode:
    def __init__(self, module: nn.Module, mode: bool) -> None:
        self.module, self.mode = module, mode

    def __enter__(self) -> None:
        self.saved = [(m, m.training) for m in self.module.modules()]
        self.module.train(self.mode)

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self.saved:
            m.training = mode


def _model_input(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError("PruningCallback: cannot tell the model input in a batch of type "
                     f"{type(batch).__name__}; set example_input_array or pass an input shape")


def _train_loader(trainer: pl.Trainer) -> Any:
    loader = getattr(trainer, "train_dataloader", None)
    source = getattr(trainer.fit_loop, "_data_source", None)  # loaders passed to fit(); Lightning 2.x
    if loader is None and source is not None and source.is_defined():
        loader = source.dataloader()
    if loader is None:
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "train_dataloader"):
            loader = dm.train_dataloader()
        elif trainer.lightning_module is not None:
            try:
                loader = trainer.lightning_module.train_dataloader()
            except Exception:  # noqa: BLE001 - not defined on this module
                loader = None
    return loader


def _training_batches(trainer: pl.Trainer, n: int) -> Iterator[Any]:
    """Up to ``n`` training batches, without disturbing the global RNG (resume determinism)."""
    loader = _train_loader(trainer)
    if loader is None or n <= 0:
        return iter(())
    generators = _loader_generators(loader)
    states = [g.get_state() for g in generators]
    try:
        with torch.random.fork_rng():
            batches = []
            for i, batch in enumerate(loader):
                if i >= n:
                    break
                batches.append(batch)
    finally:
        for g, state in zip(generators, states):
            g.set_state(state)
    return iter(batches)


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """Private generators a DataLoader shuffles with; reading extra batches must not advance them."""
    found: list[torch.Generator] = []
    for obj in (loader, getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _training_inputs(trainer: pl.Trainer, n: int) -> list[Any]:
    module = trainer.lightning_module
    out = []
    for batch in _training_batches(trainer, n):
        out.append(_model_input(module.transfer_batch_to_device(batch, module.device, 0)))
    return out


