"""Prune every float torchvision model (and a small timm sample) and check it still works.

Usage:
    python scripts/prune_zoo.py [--ratio 0.5] [--only NAME ...] [--timm | --no-timm]
                                [--image-size PX] [--threads 2] [--markdown docs/zoo_report.md]

Prints one line per model and, at the end, ``pruned N/M models``. Models are random-init
(nothing is downloaded). ``--markdown`` writes the prunability report: model, task,
status, params and MACs before/after, graph-build time, groups pruned and a note, under
a header with the exact command, the date and the library versions.

timm models are named ``timm/<name>`` (``--only resnet18 timm/convnext_atto`` works). The
timm sample (``lightning_prune.bench.zoo.TIMM_SAMPLE``) is added when timm is importable
and no ``--only`` is given, or always with ``--timm``; ``--no-timm`` leaves it out.

Exit code 1 if any model fails; a failing model never stops the sweep.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import torch

from lightning_prune.bench.zoo import (
    ZooResult,
    float_model_names,
    is_timm,
    run_zoo,
    timm_available,
    timm_model_names,
)
from lightning_prune.bench.zoo_report import describe_environment, write_markdown


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of channels to remove per group")
    parser.add_argument("--only", nargs="*", help="model names (default: all float torchvision models); "
                                                  "timm models as timm/<name>")
    parser.add_argument("--timm", action=argparse.BooleanOptionalAction, default=None,
                        help="add the timm sample (default: when timm is importable and --only is not given)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="shrink image inputs to this size where the model allows it (faster)")
    parser.add_argument("--markdown", help="also write the Markdown report to this path")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def command_line(argv: list[str]) -> str:
    """The command that runs this script with ``argv``, as typed from the current directory."""
    script = os.path.relpath(os.path.abspath(__file__))
    if script.startswith(os.pardir):
        script = os.path.abspath(__file__)
    return shlex.join(["python", script, *argv])


def progress_line(i: int, n: int, r: ZooResult) -> str:
    macs = (f"{r.macs_before / 1e9:7.3f}G -> {r.macs_after / 1e9:7.3f}G"
            if r.macs_before and r.macs_after else f"{'n/a':>19s}")
    return (f"[{i:3d}/{n}] {r.name:42s} {r.status:4s} params {r.params_before / 1e6:8.2f}M -> "
            f"{r.params_after / 1e6:8.2f}M MACs {macs} groups {r.pruned_groups}/{r.groups} "
            f"build {r.build_s * 1000:7.1f} ms ({r.total_s:5.1f} s) {r.error}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.timm and not timm_available():
        parser.error("--timm: timm is not installed (pip install 'timm>=0.9')")
    use_timm = args.timm if args.timm is not None else (timm_available() and not args.only)
    torch.set_num_threads(args.threads)
    names = list(args.only) if args.only else float_model_names()
    if use_timm:
        names += [n for n in timm_model_names() if n not in names]
    has_timm = any(is_timm(n) for n in names)
    environment = describe_environment(timm_used=has_timm, threads=args.threads)

    def report(i: int, r: ZooResult) -> None:
        print(progress_line(i, len(names), r), flush=True)

    results = run_zoo(names, args.ratio, args.image_size, on_result=report)
    ok = sum(r.ok for r in results)
    print(f"pruned {ok}/{len(results)} models")
    if args.markdown:
        write_markdown(args.markdown, results, ratio=args.ratio, command=command_line(argv),
                       environment=environment, image_size=args.image_size)
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
