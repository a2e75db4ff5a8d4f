"""Prune to a measured latency: ``target_latency=0.5`` runs in half the dense time.

MACs are a poor stand-in for speed: depthwise convolutions, normalization, attention's
softmax and every elementwise op cost time that falls slower than the MACs, and kernels
run some widths faster than others. So the budget is solved on measurements, on the
configured device, batch size and thread count:

1. the dense model and trial prunes (runnable copies, :mod:`.latency_trial`) are timed
   whole with :func:`~lightning_prune.engine.measure.latency.measure_latency`; the channel
   ratio is found by regula falsi on the measured latency, as :mod:`.budget` does on MACs;
2. at the ratio found, every group's width snaps to the one its layers run best at,
   from a per-layer width timing table (:mod:`..measure.layer_timing`), and the snapped
   model is timed again (one correction step if snapping moved it off target);
3. the result is re-timed interleaved with the dense model, so that machine drift
   cancels in the ratio, and reported as :class:`LatencyReport` with its spread.

A target below what the model can reach (the floor: every prunable group at its minimum
width, leaving the layers that cannot be pruned) prunes to the floor and warns, naming it.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from ..measure.latency import LatencyStats, measure_latency
from ..measure.layer_timing import LayerSpec, WidthTable, time_layer_ms
from ..measure.op_counter import count_ops_and_params
from ..tree import map_tensors
from .budget import meta_clone, simulate
from .latency_trial import materialize, pruned_clone, snap_widths
from .planning import unit_scores

if TYPE_CHECKING:
    from .meta import MetaPruner

__all__ = ["DefaultLatencyTimer", "LatencyBudget", "LatencyReport", "LatencyTimer", "latency_inputs"]

ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Relative tolerance of the search (tighter than the 5% promised, which noise must fit in).
SEARCH_TOLERANCE = 0.02
#: Relative distance from the target within which a result counts as reached.
REPORT_TOLERANCE = 0.05


class LatencyTimer(Protocol):
    """What the latency budget measures with; :class:`DefaultLatencyTimer` unless one is given."""

    def model(self, module: nn.Module, inputs: Any) -> LatencyStats:
        """Statistics of whole forwards of ``module`` on ``inputs``."""

    def layer(self, spec: LayerSpec) -> float:
        """Milliseconds of one forward of the standalone layer ``spec``."""


class DefaultLatencyTimer:
    """:func:`measure_latency` on ``device`` with ``threads``.

    Each measurement times at least ``repeats`` runs and at least ``min_seconds`` of them
    (a short forward on a shared machine is preempted at random; a longer measurement
    averages that out), after two untimed ones; layers get three timed runs.
    """

    def __init__(self, device: torch.device | str, threads: int, repeats: int = 5, min_seconds: float = 0.5) -> None:
        self.device, self.threads, self.repeats, self.min_seconds = torch.device(device), threads, repeats, min_seconds

    def model(self, module: nn.Module, inputs: Any) -> LatencyStats:
        probe = measure_latency(module, inputs, warmup=2, repeats=1, device=self.device, threads=self.threads)
        repeats = max(self.repeats, min(100, math.ceil(self.min_seconds * 1000 / max(probe.median_ms, 1e-3))))
        return measure_latency(module, inputs, warmup=0, repeats=repeats, device=self.device, threads=self.threads)

    def layer(self, spec: LayerSpec) -> float:
        return time_layer_ms(spec, self.device, self.threads)


@dataclass(frozen=True)
class LatencyReport:
    """How fast a latency-budget step made the model, measured interleaved with the dense one.

    ``realized`` is the median over rounds of pruned / dense time, ``spread`` the
    interquartile range of that ratio; ``floor`` is the ratio at the minimum widths when the
    target was out of reach (else ``None``).
    """

    target: float
    realized: float
    spread: float
    dense_ms: float
    pruned_ms: float
    batch_size: int
    threads: int
    device: str
    load_average: tuple[float, float, float] | None
    trials: int
    snapped_groups: int
    floor: float | None = None

    @property
    def within_tolerance(self) -> bool:
        """The realized ratio is within 5% (relative) of the target."""
        return abs(self.realized - self.target) <= REPORT_TOLERANCE * self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_tolerance": self.within_tolerance}

    def __str__(self) -> str:
        load = "n/a" if self.load_average is None else " ".join(f"{x:.2f}" for x in self.load_average)
        floor = f", floor {self.floor:.3f}" if self.floor is not None else ""
        return (f"latency {self.realized:.3f} ± {self.spread:.3f} of dense (target {self.target:.3f}{floor}): "
                f"{self.dense_ms:.2f} -> {self.pruned_ms:.2f} ms at batch {self.batch_size}, {self.threads} "
                f"threads on {self.device}; load average {load}")


@dataclass
class Trial:
    """One measured trial prune: channel ratio, MACs fraction, latency (a fraction of the dense
    latency timed next to it) and snapped widths."""

    ratio: float
    macs: float
    latency: float
    widths: dict[str, int]


def latency_inputs(example_inputs: Any, batch_size: int | None) -> Any:
    """``example_inputs`` with every batched tensor repeated (or cut) to ``batch_size`` rows."""
    if batch_size is None:
        return example_inputs

    def resize(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or t.shape[0] == 0:
            return t
        reps = -(-batch_size // t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:batch_size].contiguous()

    return map_tensors(example_inputs, resize)


def batch_of(inputs: Any) -> int:
    """Rows of the first batched tensor in ``inputs`` (1 if there is none)."""
    found: list[int] = []

    def visit(t: torch.Tensor) -> torch.Tensor:
        if t.dim() > 0:
            found.append(int(t.shape[0]))
        return t

    map_tensors(inputs, visit)
    return found[0] if found else 1


class LatencyBudget:
    """The latency budget of one pruner: settings, the dense reference and the width table.

    Args:
        model: the dense model (a meta clone is kept as the reference; nothing is copied).
        example_inputs: the pruner's example inputs.
        target: fraction of the dense latency to reach, in (0, 1).
        batch_size: rows of the timed input (default: the example's).
        threads: intra-op threads while timing (default: torch's current count).
        device: where to time (default: the model's device).
        timer: a :class:`LatencyTimer` instead of measuring with ``device`` and ``threads``.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, target: float, batch_size: int | None = None,
                 threads: int | None = None, device: torch.device | str | None = None,
                 timer: LatencyTimer | None = None) -> None:
        first = next(iter(model.parameters()), None)
        self.device = torch.device(device) if device is not None else torch.device(getattr(timer, "device", None) or (
            first.device if first is not None else "cpu"))
        self.threads = threads if threads is not None else getattr(timer, "threads", None) or torch.get_num_threads()
        self.target = float(target)
        self.inputs = map_tensors(latency_inputs(example_inputs, batch_size), lambda t: t.to(self.device))
        self.batch_size = batch_of(self.inputs)
        self.timer: LatencyTimer = timer if timer is not None else DefaultLatencyTimer(self.device, self.threads)
        self.table = WidthTable(self.timer.layer)
        self.dense_reference = meta_clone(model)
        self.report: LatencyReport | None = None
        self.trials: list[tuple[float, float, float]] = []  # (channel ratio, MACs, latency) of the last solve,
        # MACs and latency as fractions of the dense model's

    # ------------------------------------------------------------------ measuring
    def _runnable(self, clone: nn.Module, pruner: MetaPruner) -> nn.Module:
        return materialize(clone, pruner.model, self.device).eval()

    def _dense(self, pruner: MetaPruner) -> nn.Module:
        return self._runnable(meta_clone(self.dense_reference), pruner)

    def _time(self, module: nn.Module) -> float:
        return self.timer.model(module, self.inputs).median_ms

    # ------------------------------------------------------------------ solving
    def solve(self, pruner: MetaPruner, fraction: float) -> tuple[float, dict[str, int]]:
        """``(channel ratio, {group root: units to keep})`` that bring the model to ``fraction``
        of the dense latency; sets :attr:`report`. The model itself is not touched."""
        with pruner.scoring_pass():
            scores = {g.root_name: unit_scores(g, pruner.estimate_importance(g)) for g in pruner.groups(pruner.DG)}
        forward_fn = pruner.graph_kwargs["forward_fn"]
        dense_macs = float(count_ops_and_params(self.dense_reference, pruner.example_inputs, forward_fn=forward_fn)[0])
        dense = self._dense(pruner)
        # Every trial is timed next to a fresh timing of the dense model and counted as the
        # ratio of the two, so that a machine whose speed drifts (other work starting and
        # stopping) moves both alike: the search runs in units of the dense latency.
        target = fraction  # in units of the dense latency, as every trial
        self.trials = []

        def measure(ratio: float, snap: bool) -> Trial:
            widths = snap_widths(pruner, ratio, scores, self.table, self.inputs) if snap and ratio > 0 else {}
            clone, _ = pruned_clone(pruner, ratio, scores, widths)
            macs = float(count_ops_and_params(clone, pruner.example_inputs, forward_fn=forward_fn)[0]) / dense_macs
            relative = self._time(self._runnable(clone, pruner)) / self._time(dense)
            self.trials.append((ratio, macs, relative))
            return Trial(ratio, macs, relative, widths)

        cap = min(pruner.max_pruning_ratio, 0.999)
        grid = [(simulate(pruner, r, scores, "macs") / dense_macs, r) for r in _grid(cap)]
        first = measure(0.0, False)
        best, at_cap, points = first, False, [first]
        if first.latency > target * (1 + SEARCH_TOLERANCE):
            # Plain widths first (cheap), then snapped ones from where that search ended: the
            # snapped widths move the latency a little, and the search follows.
            best, at_cap = self._search(lambda r: measure(r, False), grid, points, target, cap, 5)
            if not at_cap and all(t.latency > target * (1 + REPORT_TOLERANCE) for t in points):
                top = measure(cap, False)  # out of trials short of the target: is it reachable at all?
                at_cap = top.latency > target * (1 + REPORT_TOLERANCE)
                best = min((best, top), key=lambda t: abs(t.latency - target))
            if not at_cap:  # the snapped trials have a line of their own: they run faster per MAC
                snapped, _ = self._search(lambda r: measure(r, True), grid, [first], target, cap, 3,
                                          snapped=True, start=best.macs)
                if abs(snapped.latency - target) <= max(abs(best.latency - target), SEARCH_TOLERANCE * target):
                    best = snapped
        at_floor = at_cap and best.latency > target * (1 + REPORT_TOLERANCE)
        # Trials keep no model (a ViT each); the chosen one is rebuilt for the final timing.
        module = self._runnable(pruned_clone(pruner, best.ratio, scores, best.widths)[0], pruner)
        self.report = self._verify(dense, module, fraction, len(self.trials), len(best.widths), at_floor)
        self._warn(self.report, pruner.max_pruning_ratio)
        return best.ratio, best.widths

    def _search(self, measure: Any, grid: list[tuple[float, float]], points: list[Trial], target: float,
                cap: float, iterations: int, snapped: bool = False, start: float | None = None) -> tuple[Trial, bool]:
        """Secant search on latency against MACs (a line, ``a + b * macs``, between two trials).

        The channel ratio for a MACs fraction comes from ``grid`` (``(macs, ratio)`` of meta
        trials) and the trials in ``points``, interpolated; ``points`` (trials of one kind,
        appended to) also feed the line. Returns the trial of this kind closest to the target and
        whether the target was still out of reach at ``cap``.
        """
        x_floor = min(x for x, _ in grid)
        guess = start if start is not None else _secant(points, target)
        mine: list[Trial] = []
        for _ in range(iterations):
            known = grid + [(t.macs, t.ratio) for t in points]
            ratio = _ratio_for(max(guess, x_floor), known)
            if any(abs(ratio - t.ratio) < 1e-4 for t in mine):
                break  # the channel granularity allows nothing between the trials
            trial = measure(ratio)
            points.append(trial)
            mine.append(trial)
            if abs(trial.latency - target) <= SEARCH_TOLERANCE * target:
                break
            if trial.latency > target and ratio >= cap:
                return min(mine, key=lambda t: abs(t.latency - target)), True
            guess = _secant(points, target)
            if guess <= x_floor and trial.latency > target:
                guess = x_floor  # the target is below the line's floor: try the cap itself
        return min(mine or points, key=lambda t: abs(t.latency - target)), False

    def _verify(self, dense: nn.Module, module: nn.Module, fraction: float, trials: int, snapped: int,
                at_floor: bool, rounds: int = 3) -> LatencyReport:
        """Dense and pruned timed in alternation, ``rounds`` times: the ratio with its spread."""
        d_ms, p_ms, ratios = [], [], []
        for _ in range(rounds):
            d, p = self.timer.model(dense, self.inputs).median_ms, self.timer.model(module, self.inputs).median_ms
            d_ms.append(d)
            p_ms.append(p)
            ratios.append(p / d)
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (ratios[0],) * 3
        realized = statistics.median(ratios)
        return LatencyReport(
            target=fraction, realized=realized, spread=q3 - q1, dense_ms=statistics.median(d_ms),
            pruned_ms=statistics.median(p_ms), batch_size=self.batch_size, threads=self.threads,
            device=str(self.device), load_average=_load_average(), trials=trials, snapped_groups=snapped,
            floor=realized if at_floor and realized > fraction * (1 + REPORT_TOLERANCE) else None)

    def _warn(self, report: LatencyReport, max_pruning_ratio: float) -> None:
        if report.floor is not None:
            warnings.warn(
                f"target_latency: {report.target:.3f} of the dense latency is out of reach: the floor is "
                f"{report.floor:.3f} ({report.pruned_ms:.2f} of {report.dense_ms:.2f} ms at batch {report.batch_size}, "
                f"{report.threads} threads on {report.device}) with every prunable group at its minimum width "
                f"(max_pruning_ratio={max_pruning_ratio}); "
                f"what is left is the cost of what cannot be pruned (ignored layers, the input stem, the outputs, "
                f"and ops whose time does not depend on width). Pruned to the floor", stacklevel=user_stacklevel())
        elif not report.within_tolerance:
            warnings.warn(
                f"target_latency: realized {report.realized:.3f} ± {report.spread:.3f} of the dense latency, more "
                f"than {100 * REPORT_TOLERANCE:.0f}% from the target {report.target:.3f}; timing noise (load average "
                f"{report.load_average}) or the channel granularity; see pruner.latency_report", stacklevel=user_stacklevel())


def _grid(cap: float, points: int = 7) -> list[float]:
    """Channel ratios from 0 to ``cap`` at which MACs are counted, denser where they fall fast."""
    return sorted({round(cap * (1 - (1 - i / (points - 1)) ** 1.5), 4) for i in range(points)})


def _ratio_for(macs: float, known: list[tuple[float, float]]) -> float:
    """The channel ratio with this MACs fraction, interpolated between known ``(macs, ratio)`` pairs."""
    pairs = sorted(known)
    if macs <= pairs[0][0]:
        return pairs[0][1]
    for (x1, r1), (x2, r2) in zip(pairs, pairs[1:]):
        if x1 <= macs <= x2:
            return r1 if x2 == x1 else r1 + (r2 - r1) * (macs - x1) / (x2 - x1)
    return pairs[-1][1]


def _secant(points: list[Trial], target: float) -> float:
    """The MACs fraction where the line through the trials nearest the target on each side reaches it.

    With trials on one side only, it extrapolates from the one nearest the target in
    proportion to MACs; a line that does not fall with MACs (noise) is bisected.
    """
    above = sorted((t for t in points if t.latency > target), key=lambda t: t.latency)
    below = sorted((t for t in points if t.latency <= target), key=lambda t: -t.latency)
    if above and below:
        a, b = above[0], below[0]
        if a.macs > b.macs and a.latency > b.latency:
            return a.macs + (target - a.latency) * (a.macs - b.macs) / (a.latency - b.latency)
        return (a.macs + b.macs) / 2
    side = sorted(points, key=lambda t: abs(t.latency - target))
    if len(side) >= 2 and side[0].macs != side[1].macs:
        slope = (side[0].latency - side[1].latency) / (side[0].macs - side[1].macs)
        if slope > 0:  # extrapolate the line, at least as far as proportion would
            line = side[0].macs + (target - side[0].latency) / slope
            proportional = side[0].macs * target / side[0].latency
            return min(line, proportional) if above else max(line, proportional)
    return side[0].macs * target / side[0].latency


def user_stacklevel() -> int:
    """``stacklevel`` for a warning of the caller's, pointing at the first frame outside the engine."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(ENGINE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def _load_average() -> tuple[float, float, float] | None:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except (OSError, AttributeError):
        return None
