"""The ``lightning-prune`` command: a LightningCLI with ``fit``, ``validate`` and ``test``.

    lightning-prune fit --config configs/digits.yaml
    lightning-prune fit --config configs/digits.yaml --print_config
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI


def cli_main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv`` (tests)."""
    return LightningCLI(args=args, run=run, save_config_kwargs={"overwrite": True},
                        auto_configure_optimizers=True)


if __name__ == "__main__":
    cli_main()
