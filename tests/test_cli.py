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


DIGITS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "configs", "digits.yaml"))


def configured_target_macs() -> float:
    """The main job's MACs target, as its YAML states it."""
    import yaml

    with open(DIGITS) as f:
        return float(yaml.safe_load(f)["trainer"]["callbacks"][-1]["init_args"]["target_macs"])


def fit_from_yaml(tmp_path, monkeypatch, *overrides: str):
    """``lightning-prune fit --config configs/digits.yaml`` with SGD, run from ``tmp_path``.

    Everything the run writes lands under ``tmp_path``, never in the repository: the
    config's relative paths (logs, checkpoints, the exported model) resolve against the
    working directory, and so does LightningCLI's ``config.yaml`` (the log dir, or
    ``default_root_dir`` when there is no logger).
    """
    monkeypatch.chdir(tmp_path)
    export = tmp_path / "pruned.pt"
    cli = cli_main(["fit", "--config", DIGITS, f"--trainer.default_root_dir={tmp_path}",
                    "--trainer.enable_progress_bar=false", f"--trainer.callbacks.init_args.export_path={export}",
                    "--optimizer=torch.optim.SGD", "--optimizer.lr=0.05", "--optimizer.momentum=0.9", *overrides])
    assert export.exists() and list(tmp_path.rglob("config.yaml"))
    cb = next(c for c in cli.trainer.callbacks if type(c).__name__ == "PruningCallback")
    opt = cli.trainer.optimizers[0]
    assert type(opt).__name__ == "SGD"
    for p in cli.model.parameters():  # momentum follows the pruned shapes
        if p in opt.state and "momentum_buffer" in opt.state[p]:
            assert opt.state[p]["momentum_buffer"].shape == p.shape
    return cli, cb


def test_short_fit_from_yaml_with_the_cli_optimizer_key(tmp_path, monkeypatch):
    """Two epochs of a few batches, one prune at epoch 1: the CLI path end to end, in seconds.

    The callback's latency timing is off here (it waits for stable timings, which on a
    busy machine took most of this test); the slow fit below keeps it on.
    """
    cli, cb = fit_from_yaml(tmp_path, monkeypatch, "--trainer.max_epochs=2", "--trainer.limit_train_batches=4",
                            "--trainer.limit_val_batches=2", "--trainer.callbacks.init_args.start_epoch=1",
                            "--trainer.callbacks.init_args.pruning_steps=1",
                            "--trainer.callbacks.init_args.measure_latency=false")
    assert cb.pruner.current_step == 1
    assert cb.summary["after"]["macs"] / cb.summary["before"]["macs"] == pytest.approx(configured_target_macs(), abs=0.02)
    assert any(p in cli.trainer.optimizers[0].state for p in cli.model.parameters())  # SGD really stepped


@pytest.mark.slow
def test_fit_from_yaml_with_two_prunes(tmp_path, monkeypatch):
    _, cb = fit_from_yaml(tmp_path, monkeypatch, "--trainer.max_epochs=3", "--trainer.callbacks.init_args.start_epoch=1",
                          "--trainer.callbacks.init_args.every_n_epochs=1",
                          "--trainer.callbacks.init_args.pruning_steps=2")
    assert cb.pruner.current_step == 2
    assert cb.summary["after"]["macs"] / cb.summary["before"]["macs"] == pytest.approx(configured_target_macs(), abs=0.02)
    assert cb.summary["after"]["latency_ms_bs1"] > 0
