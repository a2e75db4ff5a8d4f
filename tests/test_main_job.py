"""The main job (configs/digits.yaml) looks like a Lightning run: a CSV log with the prune
points (and their epoch), the dense baseline and the before -> after summary; checkpoints
that Lightning's own ``load_from_checkpoint`` loads; nothing written outside the log dir."""

from __future__ import annotations

import csv
import os

import lightning.pytorch as pl
import pytest
import torch

import lightning_prune
from lightning_prune.callback.summary import format_summary, summary_metrics, summary_rows
from lightning_prune.cli import cli_main
from lightning_prune.lightning import ImageClassifier
from lightning_prune.models import SmallResNet

CONFIG = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "configs", "digits.yaml"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("main_job")
    cwd, logs, export = root / "cwd", root / "logs", root / "pruned.pt"
    cwd.mkdir()
    here = os.getcwd()
    os.chdir(cwd)  # anything written relative to the working directory would land here
    try:
        cli = cli_main(["fit", "--config", CONFIG, "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false",
                        f"--trainer.logger.init_args.save_dir={logs}",
                        "--trainer.callbacks.init_args.start_epoch=1", "--trainer.callbacks.init_args.every_n_epochs=1",
                        "--trainer.callbacks.init_args.pruning_steps=2",
                        "--trainer.callbacks.init_args.measure_latency=false",  # seconds; see the summary test
                        f"--trainer.callbacks.init_args.export_path={export}"])
    finally:
        os.chdir(here)
    return cli, cwd, export


def test_the_main_job_asks_for_a_real_speedup():
    """11x fewer MACs, timed where arithmetic dominates (batch 256) and at batch 1, labelled."""
    import yaml

    with open(CONFIG) as f:
        callback = yaml.safe_load(f)["trainer"]["callbacks"][-1]["init_args"]
    assert callback["target_macs"] <= 0.1 and callback["pruning_steps"] > 1
    assert max(callback["latency_batch_sizes"]) >= 256 and 1 in callback["latency_batch_sizes"]


def _rows(cli):
    with open(os.path.join(cli.trainer.log_dir, "metrics.csv")) as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def test_the_log_has_the_prune_points_the_dense_baseline_and_the_summary(run):
    cli, cwd, _ = run
    assert os.listdir(cwd) == []  # config.yaml went to the log dir, not the working directory
    assert os.path.exists(os.path.join(cli.trainer.log_dir, "config.yaml"))
    rows = _rows(cli)
    prunes = [r for r in rows if "pruning/step" in r]
    assert [(r["pruning/step"], r["epoch"]) for r in prunes] == [(1, 1), (2, 2)]
    dense = [r for r in rows if "pruning/macs" in r and "pruning/step" not in r]
    assert len(dense) == 1 and dense[0]["epoch"] == 1
    assert dense[0]["pruning/macs"] > prunes[0]["pruning/macs"] > prunes[1]["pruning/macs"]
    summary = next(r for r in rows if "pruning/summary/macs/after" in r)
    assert summary["pruning/summary/macs/before"] == pytest.approx(dense[0]["pruning/macs"] / 1e6)
    assert summary["pruning/summary/macs/after"] == pytest.approx(prunes[-1]["pruning/macs"] / 1e6)
    for key in ("params", "val_acc_last", "val_acc_best"):
        assert f"pruning/summary/{key}/before" in summary and f"pruning/summary/{key}/after" in summary
    assert summary["pruning/summary/val_acc_last/after"] == [r for r in rows if "val_acc" in r][-1]["val_acc"]


def test_the_latency_rows_name_batch_size_threads_speedup_and_load():
    before = {"params": 2e5, "macs": 4e6, "latency_ms_bs256": 40.0, "latency_iqr_ms_bs256": 1.0,
              "latency_ms_bs1": 0.6, "latency_iqr_ms_bs1": 0.05, "latency_threads": 2.0}
    after = {**before, "params": 1e5, "macs": 2e6, "latency_ms_bs256": 10.0, "latency_ms_bs1": 0.4,
             "latency_iqr_ms_bs1": 0.02, "speedup_bs256": 4.1, "speedup_p25_bs256": 3.9, "speedup_p75_bs256": 4.3,
             "load_before": 0.5, "load_after": 0.7, "load_cpus": 2.0}
    rows = summary_rows(before, after, {"dense_last": 0.9, "pruned_last": 0.95}, "val_acc")
    text = format_summary(rows)
    assert "latency (ms, batch 256, 2 threads)" in text
    assert "speedup 4.10x (IQR 3.90-4.30x), dense re-timed in turns" in text
    assert "load average 0.5 -> 0.7 on 2 CPUs" in text
    # batch 1 is labelled as what it measures; without paired rounds the ratio of medians is shown
    assert "latency (ms, batch 1, 2 threads): per-operator overhead, not arithmetic" in text
    assert "speedup 1.50x, dense timed before the first prune (IQR 0.050 -> 0.020 ms)" in text
    assert [r.key for r in rows if r.key.startswith("latency")] == ["latency_ms_bs256", "latency_ms_bs1"]
    assert summary_metrics(rows)["pruning/summary/latency_ms_bs256/after"] == 10.0


def test_checkpoints_load_with_lightnings_own_api_and_give_the_logged_accuracy(run):
    cli, _, export = run
    ckpt_dir = os.path.join(cli.trainer.log_dir, "checkpoints")
    best = next(f for f in os.listdir(ckpt_dir) if f.startswith("best-"))
    logged = {r["epoch"]: r["val_acc"] for r in _rows(cli) if "val_acc" in r}
    final = cli.model.eval()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    x = torch.randn(4, 1, 8, 8)
    params = {r["epoch"]: r["pruning/params"] for r in _rows(cli) if "pruning/step" in r}
    for name in (best, "last.ckpt"):
        path = os.path.join(ckpt_dir, name)
        model = ImageClassifier.load_from_checkpoint(path)  # no arguments: the CLI saved the network's config
        epoch = torch.load(path, weights_only=True)["epoch"]
        pruned_by_then = [n for e, n in sorted(params.items()) if e <= epoch]  # before or after the last prune
        assert sum(p.numel() for p in model.parameters()) == pruned_by_then[-1]
        acc = trainer.validate(model, datamodule=cli.datamodule, verbose=False)[0]["val_acc"]
        assert acc == pytest.approx(logged[epoch], abs=1e-6)
    last = ImageClassifier.load_from_checkpoint(os.path.join(ckpt_dir, "last.ckpt")).eval()
    net = lightning_prune.load_pruned_checkpoint(SmallResNet(width=32), str(export)).eval()
    with torch.no_grad():
        torch.testing.assert_close(last(x), final(x))
        torch.testing.assert_close(net(x), final(x))
