"""The lightning-prune CLI: configs print, and a short fit runs from YAML."""

from __future__ import annotations

import glob
import os

import pytest

from lightning_prune.cli import cli_main

ALL_CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.yaml")))
BENCH_CONFIGS = [c for c in ALL_CONFIGS if os.path.basename(c).startswith("bench_")]
CONFIGS = [c for c in ALL_CONFIGS if c not in BENCH_CONFIGS]  # fit configs


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_print_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "lightning_prune.PruningCallback" in out


@pytest.mark.parametrize("config", BENCH_CONFIGS, ids=os.path.basename)
def test_bench_print_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--config", config, "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "methods:" in out and "batch_sizes:" in out and "settle:" in out


def test_short_fit_from_yaml_with_the_cli_optimizer_key(tmp_path):
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "digits.yaml")
    export = tmp_path / "pruned.pt"
    cli = cli_main(["fit", "--config", config, "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false",
                    "--trainer.callbacks.init_args.start_epoch=1", "--trainer.callbacks.init_args.every_n_epochs=1",
                    "--trainer.callbacks.init_args.pruning_steps=2",
                    f"--trainer.callbacks.init_args.export_path={export}",
                    "--optimizer=torch.optim.SGD", "--optimizer.lr=0.05", "--optimizer.momentum=0.9"])
    cb = next(c for c in cli.trainer.callbacks if type(c).__name__ == "PruningCallback")
    assert cb.pruner.current_step == 2
    assert cb.summary["after"]["macs"] / cb.summary["before"]["macs"] == pytest.approx(0.5, abs=0.02)
    opt = cli.trainer.optimizers[0]
    assert type(opt).__name__ == "SGD"
    for p in cli.model.parameters():  # momentum follows the pruned shapes
        if p in opt.state and "momentum_buffer" in opt.state[p]:
            assert opt.state[p]["momentum_buffer"].shape == p.shape
    assert export.exists()
