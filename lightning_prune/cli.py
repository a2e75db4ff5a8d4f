"""The ``lightning-prune`` command: a LightningCLI with ``fit``, ``validate`` and ``test``,
plus ``bench`` for the pruning benchmark.

    lightning-prune fit --config configs/digits.yaml
    lightning-prune fit --config configs/digits.yaml --print_config
    lightning-prune bench --config configs/bench_digits.yaml
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.cli import LightningCLI


def cli_main(args: list[str] | None = None, run: bool = True) -> Any:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (tests).

    ``bench`` goes to :func:`lightning_prune.bench.cli.bench_main` (returns its ``BenchRun``;
    with ``run=False`` only the validated ``BenchConfig``); everything else to LightningCLI
    (returns the ``LightningCLI``).
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] == "bench":
        from .bench.cli import bench_main, parse_bench_config

        return bench_main(argv[1:]) if run else parse_bench_config(argv[1:])
    return LightningCLI(args=args, run=run, save_config_kwargs={"overwrite": True},
                        auto_configure_optimizers=True)


def main() -> int:
    """Console-script entry point: run the command and exit 0 (errors raise and exit 1)."""
    cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
