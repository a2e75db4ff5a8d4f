"""Fit time with PruningCallback (prunes that happen) against plain Lightning, same model and data.

    python benchmarks/callback_overhead.py [--epochs 6] [--repeats 3] [--load N] [--threads T]
                                           [--regularization group_norm]

Every round runs one plain ``trainer.fit`` and one with ``PruningCallback`` (by default
``pruning_ratio=0.5`` in two prunes, at the start of epochs 1 and 2), taking turns: the
order flips every round, so both see the same machine. Both runs build the same
:class:`~lightning_prune.models.SmallResNet` on the digits from the same seed, so they
train the same network until the first prune. ``--regularization`` adds the callback's
sparse training (``bn_scale``, ``group_norm``, ``growing_reg``) to its run.

Printed for each run kind: the median fit time, its spread (min-max over the rounds) and
the ratio of the medians; the median training step in epoch 0, where both still train
the dense model (the callback's per-step overhead); the time spent inside the callback's
own hooks, by hook, and inside them in the pruner's ``step()``, BatchNorm recalibration
and the before/after measurement (params, MACs, latency); and the fit time
left when the callback's hooks are taken out (what the rest of the run cost, mostly the
training steps, which get cheaper once the model is pruned).

``--load N`` starts N busy-loop processes for the whole measurement (and stops them),
to see the run on a machine whose cores are shared. The load average is printed before
and after. ``--threads`` sets torch's intra-op threads for this process (default: torch's
own choice); the script owns its process, so it may.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from lightning_prune import PruningCallback
from lightning_prune.lightning import DigitsDataModule, ImageClassifier
from lightning_prune.models import SmallResNet

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-fit banners

#: The hooks of PruningCallback that are timed (every Lightning hook it may implement).
HOOKS = (
    "setup", "on_fit_start", "on_train_start", "on_train_epoch_start", "on_train_batch_start",
    "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad",
    "on_train_batch_end", "on_train_epoch_end", "on_validation_start", "on_validation_epoch_end",
    "on_validation_end", "on_save_checkpoint", "on_train_end", "on_fit_end", "teardown",
)


class StepTimer(Callback):
    """Wall time of every training step (batch start to batch end) of epoch 0: the dense model."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx > 0:  # the first batch warms up
            self.times.append(time.perf_counter() - self._t)


def _timed(fn, spent: dict[str, float], key: str):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - t0

    return timed


def time_hooks(callback: Callback) -> dict[str, float]:
    """Wrap the callback's hooks (instance attributes, which Lightning calls); seconds spent per hook.

    Inside the hooks, three parts are timed too (keys with a leading ``.``): the pruner's
    ``step()`` (wrapped once ``setup`` made the pruner), BatchNorm recalibration, and the
    before/after measurement of params, MACs and latency.
    """
    spent: dict[str, float] = defaultdict(float)
    for name in HOOKS:
        method = getattr(callback, name, None)
        if method is None or getattr(type(callback), name, None) is getattr(Callback, name, None):
            continue  # not overridden: Lightning's no-op
        setattr(callback, name, _timed(method, spent, name))
    setup = callback.setup

    def setup_then_wrap_step(*args, **kwargs):
        out = setup(*args, **kwargs)
        pruner = getattr(callback, "pruner", None)
        if pruner is not None and not hasattr(pruner.step, "__wrapped__"):
            pruner.step = _timed(pruner.step, spent, ".pruner.step()")
        return out

    callback.setup = setup_then_wrap_step
    return spent


@contextlib.contextmanager
def timed_parts(spent: dict[str, float]) -> Iterator[None]:
    """Time the callback's measurement and recalibration (module functions it calls), where they exist."""
    import lightning_prune.callback.callback as cb_module
    import lightning_prune.engine as engine

    saved = []
    for owner, name, key in ((cb_module, "measure", ".measure (params, MACs, latency)"),
                             (engine, "recalibrate_batchnorm", ".recalibrate_batchnorm")):
        fn = getattr(owner, name, None)
        if callable(fn):
            saved.append((owner, name, fn))
            setattr(owner, name, _timed(fn, spent, key))
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def one_fit(epochs: int, prune: bool, ratio: float, steps: int, start: int, regularization: str = "none") -> dict:
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(SmallResNet(width=32), num_classes=10, input_shape=[1, 1, 8, 8])
    timer = StepTimer()
    callbacks: list[Callback] = [timer]
    spent: dict[str, float] = {}
    if prune:
        cb = PruningCallback(pruning_ratio=ratio, pruning_steps=steps, start_epoch=start,
                             regularization=regularization)
        spent = time_hooks(cb)
        callbacks.append(cb)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), timed_parts(spent if prune else defaultdict(float)):
        trainer.fit(model, DigitsDataModule())  # stdout: the callback's before -> after table, every fit
    fit = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return {"fit": fit, "step": statistics.median(timer.times), "hooks": dict(spent), "params": params}


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        if procs:
            time.sleep(2)  # let the load settle
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each runs plain and pruned once")
    parser.add_argument("--ratio", type=float, default=0.5, help="the callback's pruning_ratio")
    parser.add_argument("--pruning-steps", type=int, default=2)
    parser.add_argument("--start-epoch", type=int, default=1)
    parser.add_argument("--regularization", default="none", choices=["none", "bn_scale", "group_norm", "growing_reg"],
                        help="the callback's sparse training (default none)")
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes to run meanwhile")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.start_epoch + args.pruning_steps > args.epochs:
        parser.error("the prunes must fall inside --epochs (start_epoch + pruning_steps <= epochs)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, {args.load} busy process(es), "
          f"{args.epochs} epochs, prunes at epochs {args.start_epoch}..{args.start_epoch + args.pruning_steps - 1} "
          f"to pruning_ratio={args.ratio}, regularization {args.regularization}; "
          f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    runs: dict[bool, list[dict]] = {False: [], True: []}
    with busy_processes(args.load):
        one_fit(1, False, args.ratio, args.pruning_steps, args.start_epoch)  # warm-up: imports, first-call costs
        for k in range(args.repeats):
            for prune in ((False, True) if k % 2 == 0 else (True, False)):
                runs[prune].append(one_fit(args.epochs, prune, args.ratio, args.pruning_steps, args.start_epoch,
                                           args.regularization))
        during = os.getloadavg()
    plain, pruned = runs[False], runs[True]
    p_fit = statistics.median(r["fit"] for r in plain)
    print(f"load average at the end (inside the load): {' '.join(f'{v:.2f}' for v in during)}\n")
    print(f"{'run':<22s} {'fit s (median)':>14s} {'spread s':>11s} {'ratio':>6s} {'epoch-0 step ms':>16s} "
          f"{'ratio':>6s} {'params':>8s}")
    p_step = statistics.median(r["step"] for r in plain)
    for name, rs in (("plain Lightning", plain), ("PruningCallback", pruned)):
        fit = statistics.median(r["fit"] for r in rs)
        step = statistics.median(r["step"] for r in rs)
        print(f"{name:<22s} {fit:14.2f} {spread([r['fit'] for r in rs]):>11s} {fit / p_fit:5.2f}x "
              f"{1000 * step:16.2f} {step / p_step:5.2f}x {rs[0]['params']:8d}")
    hooks = sorted({h for r in pruned for h in r["hooks"]}, key=lambda h: (h.startswith("."), h))
    total = [sum(v for h, v in r["hooks"].items() if not h.startswith(".")) for r in pruned]
    print("\ntime inside PruningCallback's hooks, median over rounds (s):")
    for h in hooks:
        values = [r["hooks"].get(h, 0.0) for r in pruned]
        if max(values) >= 0.0005:
            if h.startswith("."):
                continue
            print(f"  {h:<46s} {statistics.median(values):7.3f}")
    print(f"  {'all hooks':<46s} {statistics.median(total):7.3f}")
    for h in hooks:
        values = [r["hooks"].get(h, 0.0) for r in pruned]
        if h.startswith("."):
            print(f"  {'inside them: ' + h[1:]:<46s} {statistics.median(values):7.3f}")
    rest = [r["fit"] - t for r, t in zip(pruned, total)]
    print(f"fit without the callback's hooks: {statistics.median(rest):.2f} s "
          f"({statistics.median(rest) / p_fit:.2f}x plain)")


if __name__ == "__main__":
    main()
