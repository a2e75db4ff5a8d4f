"""Prune every float torchvision model (and a small timm sample) and check it still works.

Usage:
    python benchmarks/prune_zoo.py [--ratio 0.5] [--only NAME ...] [--timm | --no-timm]
                                [--image-size PX] [--threads 2] [--markdown docs/zoo_report.md]
    python benchmarks/prune_zoo.py --timm-families [FAMILY ...] [--no-torchvision] [--only NAME ...]
                                [--timeout 300] [--real-forward-gmacs 8] [--repick-families]
                                [--ratio 0.5] [--threads 2] [--markdown docs/zoo_timm.md]

Prints one line per model and, at the end, ``pruned N/M models``. Models are random-init
(nothing is downloaded). ``--markdown`` writes the prunability report: model, task,
status, params and MACs before/after, graph-build time, groups pruned and a note, under
a header with the exact command, the date and the library versions.

timm models are named ``timm/<name>`` (``--only resnet18 timm/convnext_atto`` works). The
timm sample (``lightning_prune.bench.zoo.TIMM_SAMPLE``) is added when timm is importable
and no ``--only`` is given, or always with ``--timm``; ``--no-timm`` leaves it out.

``--timm-families`` sweeps one model per timm family instead of the timm sample (all
families of the installed timm, or those named), each at its default input size, and
classifies each model as pruned / refused / silent / crash (or timeout, or skipped when
timm cannot build it); see :mod:`lightning_prune.bench.zoo_families`. The torchvision
models (all, or those of ``--only``) come first, at their default sizes, unless
``--no-torchvision``. It prints one line per model, then the tally and the pass rate;
``--markdown`` writes the family table (``docs/zoo_timm.md``).

Exit code 1 if any model fails (with ``--timm-families``: any silent or crash); a failing
model never stops the sweep.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

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
    families = parser.add_argument_group("one model per timm family")
    families.add_argument("--timm-families", nargs="*", metavar="FAMILY",
                          help="sweep the cheapest model of each timm family (all, or those named) "
                               "instead of the timm sample")
    families.add_argument("--torchvision", action=argparse.BooleanOptionalAction, default=True,
                          help="with --timm-families: also the torchvision models (all, or those of --only)")
    families.add_argument("--timeout", type=float, default=300.0,
                          help="with --timm-families: seconds per model before it is a timeout (0: no limit)")
    families.add_argument("--real-forward-gmacs", type=float, default=8.0,
                          help="with --timm-families: models up to this many GMACs get a real forward, "
                               "bigger ones a meta-device one")
    families.add_argument("--repick-families", action="store_true",
                          help="with --timm-families: count every model of each family on meta to pick "
                               "the cheapest instead of the pinned picks (about 10 minutes)")
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
    if args.timm_families is not None:
        return sweep_families(parser, args, argv)
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


def sweep_families(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    """``--timm-families``: one model per timm family (and the torchvision models), classified."""
    from lightning_prune.bench import zoo_families

    if not timm_available():
        parser.error("--timm-families: timm is not installed (pip install 'timm>=0.9')")
    if args.image_size is not None or args.timm is not None:
        parser.error("--timm-families runs every model at its default input size and replaces the timm "
                     "sample: --image-size and --timm/--no-timm do not apply")
    torch.set_num_threads(args.threads)
    environment = describe_environment(timm_used=True, threads=args.threads)
    start = time.perf_counter()
    entries: list[tuple[str, str, int]] = []
    if args.torchvision:
        tv_names = [n for n in (args.only or float_model_names()) if not is_timm(n)]
        entries += [(zoo_families.TORCHVISION_FAMILY, n, 0) for n in tv_names]
    try:
        picks = zoo_families.family_picks(args.timm_families or None, repick=args.repick_families)
    except ValueError as err:
        parser.error(str(err))
    entries += [(p.family, p.model, p.members) for p in picks]

    def report(i: int, r: zoo_families.FamilyResult) -> None:
        print(zoo_families.progress_line(i, len(entries), r), flush=True)

    results = zoo_families.run_families(entries, args.ratio, args.timeout or None, args.real_forward_gmacs,
                                        on_result=report)
    wall = time.perf_counter() - start
    print(zoo_families.tally_line(results))
    print(f"wall time {wall / 60:.1f} min")
    if args.markdown:
        zoo_families.write_markdown(args.markdown, results, ratio=args.ratio, command=command_line(argv),
                                    environment=environment, timeout_s=args.timeout or None,
                                    real_forward_gmacs=args.real_forward_gmacs, wall_s=wall)
    return 1 if any(r.status in ("silent", "crash") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
