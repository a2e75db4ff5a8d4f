"""What a benchmark run measures: the YAML-facing configuration.

``lightning-prune bench --config configs/bench_digits.yaml`` parses a YAML file into
:class:`BenchConfig` with jsonargparse, like the rest of the CLI, so types and choices are
validated before anything runs and ``--help`` lists every option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import lightning.pytorch as pl

__all__ = ["BenchConfig", "ModelSpec", "TargetKind"]

TargetKind = Literal["ratio", "macs", "params"]


@dataclass
class ModelSpec:
    """One model of the sweep.

    Args:
        name: ``small_resnet`` (built in), a torchvision name (``resnet18`` or
            ``torchvision:resnet18``), ``timm:<name>`` (needs timm), or a class path
            (``my_package.models.MyNet``).
        input_shape: one input, batch dim included (``[1, 3, 224, 224]``). Default: the
            shape of the datamodule's samples.
        kwargs: constructor arguments, e.g. ``{num_classes: 10, width: 32}``.
        ignored_layers: dotted module names (relative to the model) that no method prunes.
    """

    name: str
    input_shape: list[int] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    ignored_layers: list[str] = field(default_factory=list)


def _default_models() -> list[ModelSpec]:
    return [ModelSpec(name="small_resnet", kwargs={"width": 32})]


@dataclass
class BenchConfig:
    """A benchmark: models x methods x ratios, each measured the same way.

    Args:
        models: the models to prune.
        methods: ``magnitude``, ``l1``, ``taylor``, ``hessian``, ``bn_scale``, ``lamp``,
            ``fpgm``, ``random`` (structural, one importance each), ``sparse_group_norm``,
            ``sparse_bn_scale``, ``sparse_growing_reg`` (sparse training, then a structural
            prune), ``masking`` (``torch.nn.utils.prune``: zeros, no structural change).
        ratios: what to remove, read according to ``target``.
        target: ``ratio``: fraction of channels removed per group; ``macs`` / ``params``:
            fraction of the dense MACs / params to keep.
        batch_sizes: latency is measured at each of these batch sizes.
        threads: intra-op threads while timing (``None``: torch's current setting).
        device: ``cpu`` or ``cuda``.
        warmup: untimed forward passes of a model the first time it is timed at a batch size
            (at least this many; then ``settle`` applies).
        steady_allocator: fix glibc malloc's mmap/trim thresholds for the run, so large
            activations do not cost page faults in some measurements and not in others
            (see ``lightning_prune.bench.allocator``).
        warmup_seconds: untimed calls of every model for at least this long before each
            comparison; on a VM the first second of work runs slower whatever the number of calls.
        settle: then keep warming up until two consecutive windows of runs agree within this
            relative tolerance (``null``: no such check), for at most ``max_warmup_seconds``.
        max_warmup_seconds: upper bound of the warm-up of one measurement.
        repeats: timing rounds per batch size; each round times the dense and the row's model
            in turns (one ``Timer.blocked_autorange`` each, ``min_run_time`` long), and the
            median and quartiles of the rounds and of their paired speedups are reported.
        accuracy: measure top-1 on the datamodule (needs ``datamodule`` or the digits default).
        datamodule: any LightningDataModule yielding ``(x, y)`` batches; default: scikit-learn's
            digits (embedded, no download).
        num_classes: classes of the datamodule (for the accuracy metric).
        train_epochs: dense training before pruning, so accuracy means something.
        finetune_epochs: after pruning, finetune this many epochs through ``PruningCallback``.
        sparse_epochs: regularized epochs before the prune, for the ``sparse_*`` methods.
        regularization_strength: strength of the ``sparse_*`` regularizers.
        recalibrate_bn: re-estimate BatchNorm statistics after a prune (when there is data).
        recalibration_batches: training batches used for that.
        round_to: keep channel counts multiples of this.
        lr: learning rate of dense training and finetuning.
        profile: write torch.profiler tables of the top operators (dense and most-pruned).
        profile_top: rows per profiler table.
        chrome_trace: also write chrome traces (open in chrome://tracing or Perfetto).
        plots: write the PNG plots (needs matplotlib).
        output_dir: where CSV, JSON, Markdown and PNG files go.
        seed: seed of training and of random choices.
        min_run_time: seconds each model is timed for in each round (``Timer.blocked_autorange``).
            Short rounds let the drift of a busy machine cancel in the paired speedups.
    """

    models: list[ModelSpec] = field(default_factory=_default_models)
    methods: list[str] = field(default_factory=lambda: ["magnitude", "taylor", "masking"])
    ratios: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    target: TargetKind = "ratio"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 256])
    threads: int | None = 2
    device: str = "cpu"
    warmup: int = 10
    warmup_seconds: float = 0.5
    settle: float | None = 0.05
    max_warmup_seconds: float = 10.0
    steady_allocator: bool = True
    repeats: int = 30
    accuracy: bool = True
    datamodule: pl.LightningDataModule | None = None
    num_classes: int = 10
    train_epochs: int = 8
    finetune_epochs: int = 0
    sparse_epochs: int = 3
    regularization_strength: float = 1e-4
    recalibrate_bn: bool = True
    recalibration_batches: int = 16
    round_to: int | None = None
    lr: float = 3e-3
    profile: bool = True
    profile_top: int = 12
    chrome_trace: bool = False
    plots: bool = True
    output_dir: str = "outputs/bench"
    seed: int = 0
    min_run_time: float = 0.05

    def __post_init__(self) -> None:
        """Reject what cannot run before anything is trained or timed."""
        from .methods import get_method

        if not self.models:
            raise ValueError("bench: `models` is empty; list at least one model, e.g. [{name: small_resnet}]")
        if not self.methods:
            raise ValueError("bench: `methods` is empty; e.g. [magnitude, taylor, masking]")
        for name in self.methods:
            get_method(name)  # raises with the list of valid names
        if not self.ratios:
            raise ValueError("bench: `ratios` is empty; e.g. [0.3, 0.5, 0.7]")
        for r in self.ratios:
            if not 0 < r < 1:
                raise ValueError(f"bench: every entry of `ratios` must be in (0, 1), got {r}")
        if self.target not in ("ratio", "macs", "params"):
            raise ValueError(f"bench: `target` must be ratio, macs or params, got {self.target!r}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"bench: `batch_sizes` must be positive ints, got {self.batch_sizes}")
        if self.settle is not None and not 0 < self.settle < 1:
            raise ValueError(f"bench: `settle` must be in (0, 1) or null, got {self.settle}")
        if self.warmup_seconds < 0:
            raise ValueError(f"bench: `warmup_seconds` must be >= 0, got {self.warmup_seconds}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"bench: need repeats >= 1 and warmup >= 0, got {self.repeats} and {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"bench: `threads` must be >= 1 or null, got {self.threads}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"bench: `device` must be cpu, cuda or cuda:N, got {self.device!r}")
        for key in ("train_epochs", "finetune_epochs", "sparse_epochs", "recalibration_batches"):
            if getattr(self, key) < 0:
                raise ValueError(f"bench: `{key}` must be >= 0, got {getattr(self, key)}")
        for spec in self.models:
            if spec.input_shape is None and not self.accuracy:
                raise ValueError(f"bench: model {spec.name!r} needs `input_shape` when accuracy is off "
                                 f"(there is no datamodule to take it from)")
        if not self.min_run_time > 0:
            raise ValueError(f"bench: `min_run_time` must be > 0 seconds, got {self.min_run_time}")
