"""Side-by-side comparison with Torch-Pruning: graph build, pruning time and the pruned model, in one run.

    python benchmarks/compare_torch_pruning.py [--models resnet18 resnet50 ...] [--repeats 3]
                                               [--threads 2] [--ratio 0.5] [--markdown PATH]

For each torchvision model (random init, input 1x3x224x224), with the same configuration
for both libraries (``MetaPruner``, ``pruning_ratio=0.5``, L2 group magnitude importance,
the final ``nn.Linear`` in ``ignored_layers``), it measures:

* graph build: ``DependencyGraph().build_dependency(model, x)``, median over
  ``--repeats`` runs after one untimed warm-up;
* pruning: ``MetaPruner`` construction (which builds the graph again) and one ``step()``,
  each run on a fresh ``copy.deepcopy`` made outside the timed region; medians over
  ``--repeats`` runs after one untimed warm-up run;
* the two libraries' timed runs take turns, so both see the same machine;
* the pruned model's MACs and parameters, both counted by *our*
  ``count_ops_and_params`` so that the figures are comparable (Torch-Pruning's counter
  follows slightly different conventions, see ``lightning_prune.engine.measure.mac_rules``);

and prints a table with a ``dense`` row (the unpruned model), ``ours``, ``TP`` and
``ours/TP`` for each model; ``--markdown PATH`` also writes it as Markdown. Times are
wall-clock on the machine it runs on.

Torch-Pruning's pruned ``vit_b_16`` keeps the old ``model.hidden_dim`` (our pruners update
it); it is set to the new width, outside any timed region, before its MACs are counted,
as Torch-Pruning's own ViT example does.

Torch-Pruning is only a baseline here: lightning_prune never imports it. Without it
installed this script says so on stderr and exits with code 0.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torchvision
import torchvision.models as tvm
from graph_build import interleaved, timed_ms, torch_pruning_or_none  # sibling scripts, same directory
from pruner_step import final_linear, medians, pruning_run
from torch import nn

import lightning_prune.engine as lp

MODELS = ("resnet18", "resnet50", "mobilenet_v3_large", "densenet121", "vit_b_16")
COLUMNS = ("model", "library", "graph build (ms)", "construct (ms)", "step (ms)", "construct+step (ms)",
           "MACs (G)", "params (M)")


@dataclass
class Measure:
    """One library's figures for one model; ``error`` is set when it could not run."""

    build_ms: float | None = None
    construct_ms: float | None = None
    step_ms: float | None = None
    macs: int | None = None
    params: int | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def prune_ms(self) -> float | None:
        if self.construct_ms is None or self.step_ms is None:
            return None
        return self.construct_ms + self.step_ms


def ours_pruner(model: nn.Module, x: torch.Tensor, ratio: float) -> object:
    return lp.pruner.MetaPruner(model, x, importance=lp.importance.GroupMagnitudeImportance(p=2),
                                pruning_ratio=ratio, ignored_layers=[final_linear(model)])


def tp_pruner(tpp) -> Callable[[nn.Module, torch.Tensor, float], object]:
    def make(model: nn.Module, x: torch.Tensor, ratio: float) -> object:
        return tpp.pruner.MetaPruner(model, x, importance=tpp.importance.GroupMagnitudeImportance(p=2),
                                     pruning_ratio=ratio, ignored_layers=[final_linear(model)])

    return make


def fix_widths_after_tp(model: nn.Module) -> None:
    """Width attributes Torch-Pruning leaves stale (ours updates them while pruning)."""
    if isinstance(model, tvm.VisionTransformer):
        model.hidden_dim = model.conv_proj.out_channels


def measure_all(libraries: list[tuple[Callable, Callable, Callable | None]], base: nn.Module, x: torch.Tensor,
                ratio: float, repeats: int) -> list[Measure]:
    """One :class:`Measure` per ``(build_graph, make_pruner, after)`` library.

    Each library runs once untimed (a warm-up, and a library that fails there is reported
    and left out); then the libraries take turns for the timed graph builds and for the
    timed prunes (see ``graph_build.interleaved``), so they share the machine's drift.
    """
    measures = [Measure() for _ in libraries]
    live = []
    for k, (build_graph, make, after) in enumerate(libraries):
        last: dict = {}
        build = timed_ms(lambda bg=build_graph: bg(base, x))
        prune = pruning_run(lambda model, x, mk=make: (lambda: mk(model, x, ratio), lambda p: p.step()), base, x, last)
        try:
            build()
            prune()
        except Exception as err:  # noqa: BLE001 - shown in the table, the other libraries go on
            measures[k].error = _error_text(err)
            continue
        live.append((measures[k], build, prune, last, after))
    build_times = interleaved([b for _, b, _, _, _ in live], repeats, warm_up=False)
    prune_times = interleaved([p for _, _, p, _, _ in live], repeats, warm_up=False)
    for (m, _, _, last, after), bt, pt in zip(live, build_times, prune_times):
        m.build_ms = statistics.median(bt)
        m.construct_ms, m.step_ms = medians(pt)
        try:
            if after is not None:
                after(last["model"])
            m.macs, m.params = lp.utils.count_ops_and_params(last["model"], x)
        except Exception as err:  # noqa: BLE001 - shown in the table
            m.error = _error_text(err)
    return measures


def _error_text(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:160]}" if str(err) else type(err).__name__


def _fmt(value: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value / scale:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def rows_for(name: str, dense: tuple[int, int], ours: Measure, theirs: Measure | None) -> list[list[str]]:
    def row(who: str, m: Measure) -> list[str]:
        if m.error:
            return [name, who, m.error, "", "", "", "", ""]
        return [name, who, _fmt(m.build_ms, digits=1), _fmt(m.construct_ms), _fmt(m.step_ms), _fmt(m.prune_ms),
                _fmt(m.macs, 1e9, 3), _fmt(m.params, 1e6, 2)]

    rows = [[name, "dense", "", "", "", "", _fmt(dense[0], 1e9, 3), _fmt(dense[1], 1e6, 2)], row("ours", ours)]
    if theirs is not None:
        rows.append(row("TP", theirs))
        if not ours.error and not theirs.error:
            rows.append([name, "ours/TP", _ratio(ours.build_ms, theirs.build_ms),
                         _ratio(ours.construct_ms, theirs.construct_ms), _ratio(ours.step_ms, theirs.step_ms),
                         _ratio(ours.prune_ms, theirs.prune_ms), _ratio(ours.macs, theirs.macs),
                         _ratio(ours.params, theirs.params)])
    return rows


def print_row(cells: list[str]) -> None:
    name, who, *nums = cells
    print(f"{name:20s} {who:8s} " + " ".join(f"{c:>{max(10, len(h))}s}" for c, h in zip(nums, COLUMNS[2:])),
          flush=True)


def markdown(rows: list[list[str]], header_lines: list[str]) -> str:
    lines = [*header_lines, "", "| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="torchvision model names")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--ratio", type=float, default=0.5, help="pruning_ratio for both libraries")
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    tpp = torch_pruning_or_none()
    if tpp is None:
        print("compare_torch_pruning: torch_pruning is not installed, nothing to compare against "
              "(pip install 'torch-pruning>=1.6', or pip install -e '.[bench]').", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module=r"torch_pruning(\.|$)")  # its notes on unwrapped parameters

    try:
        averages = os.getloadavg()
    except (AttributeError, OSError):
        averages = None
    load = "n/a" if averages is None else " / ".join(f"{v:.1f}" for v in averages)
    if averages is not None and args.threads > 1 and averages[0] + args.threads > (os.cpu_count() or 1) + 0.5:
        warnings.warn(f"load average {averages[0]:.1f} with {args.threads} threads on {os.cpu_count()} cores: "
                      "real-tensor work (Torch-Pruning's graph build, both steps) slows down far more than "
                      "our meta-device tracing when threads compete; --threads 1 gives fairer figures",
                      stacklevel=1)
    header = [
        "# lightning_prune vs Torch-Pruning",
        "",
        f"Generated by `{shlex.join(['python', 'benchmarks/compare_torch_pruning.py', *argv])}` on "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, torch-pruning {getattr(tpp, '__version__', '?')}.",
        "",
        f"MetaPruner, pruning_ratio {args.ratio:g}, L2 group magnitude, final Linear ignored, input 1x3x224x224, "
        f"random init. Times: wall-clock medians of {args.repeats} run(s) after one warm-up, torch threads "
        f"{args.threads}, on this machine ({os.cpu_count()} CPU cores, load average {load} at the start). MACs and "
        "params of both pruned models are counted by lightning_prune's count_ops_and_params.",
    ]
    for line in header[2:]:
        if line:
            print(line)
    print()
    print_row(list(COLUMNS))
    rows: list[list[str]] = []
    for name in args.models:
        torch.manual_seed(0)
        base = tvm.get_model(name, weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        dense = lp.utils.count_ops_and_params(base, x)
        ours, theirs = measure_all([
            (lambda m, x: lp.DependencyGraph().build_dependency(m, x), ours_pruner, None),
            (lambda m, x: tpp.DependencyGraph().build_dependency(m, x), tp_pruner(tpp), fix_widths_after_tp),
        ], base, x, args.ratio, args.repeats)
        for r in rows_for(name, dense, ours, theirs):
            print_row(r)
            rows.append(r)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
