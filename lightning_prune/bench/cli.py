"""``lightning-prune bench``: run a benchmark from a YAML config.

    lightning-prune bench --config configs/bench_digits.yaml
    lightning-prune bench --config configs/bench_digits.yaml --ratios '[0.5]' --repeats 10
    lightning-prune bench --help

Parsed by jsonargparse from :class:`~lightning_prune.bench.config.BenchConfig`, like the
rest of the CLI: every option can come from the YAML file or the command line, and types
and choices are checked before anything runs.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from jsonargparse import ActionConfigFile, ArgumentParser

from .config import BenchConfig

if TYPE_CHECKING:
    from .runner import BenchRun

__all__ = ["bench_main", "bench_parser", "parse_bench_config"]


def bench_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lightning-prune bench",
                            description="Benchmark pruning methods: models x methods x ratios; accuracy, params, "
                                        "MACs, latency and torch.profiler tables, written as CSV, JSON, Markdown "
                                        "and PNG plots.")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with the options below")
    parser.add_class_arguments(BenchConfig, as_group=False)
    return parser


def parse_bench_config(args: list[str]) -> BenchConfig:
    """A validated :class:`BenchConfig` from command-line arguments (``--config`` files included)."""
    parser = bench_parser()
    namespace = parser.parse_args(args)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    values = instantiate(namespace).as_dict()
    values.pop("config", None)
    return BenchConfig(**values)


def bench_main(args: list[str]) -> BenchRun:
    """Run the benchmark, write its files and print where they are (``args``: after ``bench``)."""
    from .outputs import write_outputs
    from .runner import run_benchmark

    cfg = parse_bench_config(args)
    run = run_benchmark(cfg)
    paths = write_outputs(run, command=shlex.join(["lightning-prune", "bench", *args]))
    failed = sum(not r.ok for r in run.results)
    print(f"\n{len(run.results) - failed}/{len(run.results)} runs ok in {run.seconds:.0f} s; wrote:")
    for key, path in paths.items():
        if not key.startswith("profile:"):
            print(f"  {path}")
    print(f"  and {sum(k.startswith('profile:') for k in paths)} profiler tables (profile_*.txt)")
    return run
