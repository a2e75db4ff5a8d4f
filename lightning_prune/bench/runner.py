"""Run a benchmark: every model x method x ratio, measured the same way, failures isolated.

For each model the runner trains the dense network once (when accuracy is measured),
measures it, then gives every method a fresh deep copy of the trained network at every
ratio. The trained dense network stays around: every method row re-times it in turns
with the pruned one (:mod:`.timing`), so the speedups are paired and the machine's drift
cancels. A model or a method that fails becomes an ``error`` row with the reason; the
sweep goes on.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..engine.utils import count_ops_and_params, layer_widths
from ..lightning import DigitsDataModule, ImageClassifier
from .accuracy import top1_accuracy, validation_size
from .allocator import steady_allocator
from .analysis import prunedness
from .config import BenchConfig, ModelSpec
from .environment import OtherLoad, environment
from .methods import MethodContext, PruneTarget, get_method
from .models import build_model
from .profiling import profile_operators
from .results import RunResult, file_slug
from .timing import time_row

__all__ = ["BenchRun", "run_benchmark"]

log = logging.getLogger(__name__)


@dataclass
class BenchRun:
    """What :func:`run_benchmark` measured: rows, profiler tables, and the run's context."""

    config: BenchConfig
    results: list[RunResult] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def config_dict(self) -> dict[str, Any]:
        """The config as plain data (the datamodule as its class path)."""
        cfg = {k: v for k, v in asdict(self.config).items() if k != "datamodule"}
        dm = self.config.datamodule
        cfg["datamodule"] = None if dm is None else f"{type(dm).__module__}.{type(dm).__qualname__}"
        return cfg


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's per-fit banners would drown the progress lines."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning_prune", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class _Progress:
    def __init__(self, total: int, report: Callable[[str], None] | None) -> None:
        self.total, self.done, self.report, self.start = total, 0, report, time.perf_counter()

    def step(self, label: str, status: str, seconds: float) -> None:
        self.done += 1
        if self.report is None:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        self.report(f"[{self.done:3d}/{self.total}] {label:<44s} {status:<5s} {seconds:6.1f} s   "
                    f"(elapsed {elapsed:5.0f} s, about {eta:4.0f} s left)")


def _error_text(err: BaseException) -> str:
    last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" [{Path(last.filename).name}:{last.lineno}]" if last else ""
    return f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}{where}"


def run_benchmark(cfg: BenchConfig, progress: Callable[[str], None] | None = print) -> BenchRun:
    """Measure every model x method x ratio of ``cfg``; see the module docstring.

    ``progress`` receives one line per finished run (``None``: silent).
    """
    run = BenchRun(config=cfg, environment=environment(cfg))
    run.environment["allocator"] = steady_allocator() if cfg.steady_allocator else "default"
    start, other_load = time.perf_counter(), OtherLoad()
    datamodule = _datamodule(cfg)
    tracker = _Progress(len(cfg.models) * (1 + len(cfg.methods) * len(cfg.ratios)), progress)
    labels = _model_labels(cfg.models)
    with _quiet_lightning():
        for spec, label in zip(cfg.models, labels, strict=True):
            _run_model(cfg, spec, label, datamodule, run, tracker)
    run.seconds = time.perf_counter() - start
    run.environment["other_cpu_load"] = other_load.fraction()
    return run


def _datamodule(cfg: BenchConfig) -> pl.LightningDataModule | None:
    if not cfg.accuracy:
        return None
    dm = cfg.datamodule
    if dm is None:
        dm = DigitsDataModule()
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _model_labels(specs: list[ModelSpec]) -> list[str]:
    labels, seen = [], {}
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        labels.append(spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}")
    return labels


def _most_pruned(cfg: BenchConfig) -> float:
    return max(cfg.ratios, key=lambda r: prunedness(r, cfg.target))


def _run_model(cfg: BenchConfig, spec: ModelSpec, label: str, datamodule: pl.LightningDataModule | None,
               run: BenchRun, tracker: _Progress) -> None:
    """The dense row of one model, then one row per method and ratio."""
    t0 = time.perf_counter()
    try:
        dense, input_shape = _train_dense(cfg, spec, datamodule)
        base = _measure(dense.model, label, "dense", "dense", cfg, input_shape, datamodule, f"{label} / dense", run)
    except Exception as err:  # noqa: BLE001 - one failing model is reported, the sweep goes on
        run.results.append(RunResult(model=label, method="dense", kind="dense", status="error",
                                     error=_error_text(err)))
        tracker.step(f"{label} dense", "error", time.perf_counter() - t0)
        for method in cfg.methods:
            for ratio in cfg.ratios:
                run.results.append(RunResult(model=label, method=method, kind="", target=cfg.target, ratio=ratio,
                                             status="error", error="dense model failed; see its row"))
                tracker.step(f"{label} {method} {ratio}", "skip", 0.0)
        return
    run.results.append(base)
    tracker.step(f"{label} dense", "ok", time.perf_counter() - t0)
    ctx = _ctx(cfg, input_shape, datamodule, spec)
    for name in cfg.methods:
        for ratio in cfg.ratios:
            t0 = time.perf_counter()
            row = _method_row(cfg, label, name, ratio, dense, base, input_shape, datamodule, ctx, run)
            run.results.append(row)
            tracker.step(f"{label} {name} {ratio}", row.status, time.perf_counter() - t0)


def _train_dense(cfg: BenchConfig, spec: ModelSpec,
                 datamodule: pl.LightningDataModule | None) -> tuple[ImageClassifier, list[int]]:
    """Build the model and train it ``train_epochs`` (when there is data), so accuracy means something."""
    input_shape = spec.input_shape or [1, *next(iter(datamodule.val_dataloader()))[0].shape[1:]]
    pl.seed_everything(cfg.seed, verbose=False)
    dense = ImageClassifier(build_model(spec, input_shape, cfg.num_classes), num_classes=cfg.num_classes,
                            input_shape=input_shape, lr=cfg.lr)
    if datamodule is not None and cfg.train_epochs > 0:
        _ctx(cfg, input_shape, datamodule, spec).trainer(cfg.train_epochs, []).fit(dense, datamodule)
    return dense, input_shape


def _method_row(cfg: BenchConfig, label: str, name: str, ratio: float, dense: ImageClassifier, base: RunResult,
                input_shape: list[int], datamodule: pl.LightningDataModule | None, ctx: MethodContext,
                run: BenchRun) -> RunResult:
    """Apply one method at one ratio to a fresh copy of the trained dense network and measure it."""
    method = get_method(name)
    t0 = time.perf_counter()
    try:
        pl.seed_everything(cfg.seed, verbose=False)
        pruned = ImageClassifier(copy.deepcopy(dense.model), num_classes=cfg.num_classes,
                                 input_shape=input_shape, lr=cfg.lr)
        method.apply(pruned, PruneTarget(cfg.target, ratio), ctx)
        seconds = time.perf_counter() - t0
        profile_key = f"{label} / {name} @ {ratio}" if ratio == _most_pruned(cfg) else None
        row = _measure(pruned.model, label, name, method.kind, cfg, input_shape, datamodule, profile_key, run,
                       dense=dense.model)
        row.target, row.ratio, row.prune_seconds = cfg.target, ratio, seconds
        _relate(row, base)
        return row
    except Exception as err:  # noqa: BLE001 - reported in the table, the sweep goes on
        return RunResult(model=label, method=name, kind=method.kind, target=cfg.target, ratio=ratio,
                         status="error", error=_error_text(err))


def _ctx(cfg: BenchConfig, input_shape: list[int], datamodule: pl.LightningDataModule | None,
         spec: ModelSpec) -> MethodContext:
    return MethodContext(example_input=torch.zeros(input_shape), datamodule=datamodule,
                         ignored_layers=list(spec.ignored_layers), finetune_epochs=cfg.finetune_epochs,
                         sparse_epochs=cfg.sparse_epochs, regularization_strength=cfg.regularization_strength,
                         recalibrate_bn=cfg.recalibrate_bn, recalibration_batches=cfg.recalibration_batches,
                         round_to=cfg.round_to, device=cfg.device)


def _measure(network: nn.Module, label: str, method: str, kind: str, cfg: BenchConfig, input_shape: list[int],
             datamodule: pl.LightningDataModule | None, profile_key: str | None, run: BenchRun,
             dense: nn.Module | None = None) -> RunResult:
    """One row: size, latency at every batch size, accuracy, and a profile when ``profile_key`` is given.

    ``dense`` (the model's dense network, for a method row) is re-timed in turns with ``network``.
    """
    was_training = network.training
    network = network.cpu().eval()
    example = torch.zeros(input_shape)
    macs, params = count_ops_and_params(network, example)
    row = RunResult(model=label, method=method, kind=kind, params=int(params), macs=float(macs),
                    nonzero_params=int(sum(int(torch.count_nonzero(p)) for p in network.parameters())),
                    size_mb=sum(t.numel() * t.element_size() for t in network.state_dict().values()) / 2**20,
                    widths=layer_widths(network))
    dense_was_training = dense.training if dense is not None else False
    try:
        time_row(row, network.to(cfg.device), input_shape, cfg,
                 dense=None if dense is None else dense.to(cfg.device))
    finally:
        if dense is not None:
            dense.cpu().train(dense_was_training)
    if datamodule is not None:
        row.accuracy = top1_accuracy(network, datamodule, cfg.num_classes, cfg.device)
        row.accuracy_samples = validation_size(datamodule)
    if cfg.profile and profile_key is not None:
        trace = None
        if cfg.chrome_trace:
            Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
            trace = str(Path(cfg.output_dir) / f"trace_{file_slug(profile_key)}.json")
        prof = profile_operators(network, torch.randn(max(cfg.batch_sizes), *input_shape[1:]), device=cfg.device,
                                 threads=cfg.threads, row_limit=cfg.profile_top, trace_path=trace)
        run.profiles[profile_key] = prof.table
        row.profile_top = prof.top
    network.cpu().train(was_training)
    return row


def _relate(row: RunResult, base: RunResult) -> None:
    """Fractions and accuracy change relative to the dense row (speedups are paired: :mod:`.timing`)."""
    row.macs_fraction = row.macs / base.macs if base.macs else None
    row.params_fraction = row.params / base.params if base.params else None
    if row.accuracy is not None and base.accuracy is not None:
        row.accuracy_delta = row.accuracy - base.accuracy
