"""Importance criteria on real data: SmallResNet trained on scikit-learn's digits, pruned once.

The model is trained once per module (seed 0, ~20 s on one busy core). Accuracies are
measured on the validation split right after the prune, with no finetuning.

Measured over training seeds 0-5 (``benchmarks/importance_digits.py --seed N``), in
points of validation accuracy:

* ratio 0.5 with BN recalibration: magnitude 82-89, random (mean of 3) 65-78; magnitude
  leads by 10-19 on every seed. Taylor 50-67, *below* random by 9-22 on every seed.
* ratio 0.5 without recalibration: every criterion 10-20 (chance is ~10).
  Recalibration adds 60-79 for magnitude.
* ratio 0.3 without recalibration: everything collapses (magnitude 16-48, Taylor 13-36,
  random 10-26); the lead over random is -2..38 for magnitude and -13..26 for Taylor,
  so no margin holds across seeds. The stale BN statistics of the first residual stream
  (stem + stage 1) cause it: pruning only that group at 0.3 leaves ~30%, and
  recalibrating restores 99%.

Torch-Pruning 1.6 on the same trained model (seed 0) gives the same picture: at 0.5 with
recalibration magnitude 88.9, Taylor 58.8, random 75.9 (ours: 88.9, 59.1, 76.2).

The last two issue expectations (Taylor at 0.5 with recalibration, both at 0.3 without)
are therefore marked ``xfail`` with these numbers rather than loosened.

A search over 26 other setups (2026-11-21: plain conv-BN-ReLU CNNs of 2-4 layers, AdamW
and SGD, weight decay 5e-4 to 0.2, 15-30 epochs, label smoothing; training seeds 0-9)
found none where Taylor meets both expectations on every seed. Magnitude does on a plain
CNN trained with SGD (smallest leads 10.7 and 21.3 points over 10 seeds). Per-batch
squared Taylor in train mode (Molchanov et al.) comes closest (it misses by 0.8 points
on one seed of ten). Without recalibration, accuracies swing between 10% and 90% from
seed to seed, so which seed fails flips between neighbouring settings.
"""

from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("torchmetrics")

from lightning_prune.bench.digits_importance import (  # noqa: E402
    count_params,
    evaluate,
    prune_copy,
    train_small_resnet,
)

RANDOM_SEEDS = (0, 1, 2)
MARGIN = 0.05  # five points of accuracy


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model, data = train_small_resnet(seed=0)
    return model, data


@pytest.fixture(scope="module")
def accuracy(trained):
    """``accuracy(method, ratio, recalibrate)``: validation accuracy, cached; random is a seed mean."""
    model, data = trained

    @functools.cache
    def acc(method: str, ratio: float, recalibrate: bool) -> float:
        seeds = RANDOM_SEEDS if method == "random" else (0,)
        values = [evaluate(prune_copy(model, method, ratio, data, recalibrate=recalibrate, seed=s),
                           data.x_val, data.y_val) for s in seeds]
        return sum(values) / len(values)

    return acc


def test_dense_model_is_accurate(trained):
    model, data = trained
    assert evaluate(model, data.x_val, data.y_val) >= 0.97


def test_magnitude_beats_random_at_05_with_recalibration(accuracy):
    mag, rnd = accuracy("magnitude", 0.5, True), accuracy("random", 0.5, True)
    assert mag >= rnd + MARGIN, f"magnitude {mag:.3f} vs random {rnd:.3f}"


@pytest.mark.xfail(strict=True, reason="measured: Taylor is 9-22 points BELOW random at 0.5 with "
                   "recalibration on training seeds 0-5 (50-67% vs 65-78%); same with Torch-Pruning's Taylor")
def test_taylor_beats_random_at_05_with_recalibration(accuracy):
    tay, rnd = accuracy("taylor", 0.5, True), accuracy("random", 0.5, True)
    assert tay >= rnd + MARGIN, f"taylor {tay:.3f} vs random {rnd:.3f}"


@pytest.mark.xfail(strict=False, reason="measured: at 0.3 without recalibration every criterion collapses "
                   "(10-48%); lead over random -2..38 (magnitude) and -13..26 (Taylor) over training seeds 0-5")
@pytest.mark.parametrize("method", ["magnitude", "taylor"])
def test_criterion_beats_random_at_03_without_recalibration(accuracy, method):
    ours, rnd = accuracy(method, 0.3, False), accuracy("random", 0.3, False)
    assert ours >= rnd + MARGIN, f"{method} {ours:.3f} vs random {rnd:.3f}"


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_recalibration_raises_accuracy_at_05(accuracy, method):
    before, after = accuracy(method, 0.5, False), accuracy(method, 0.5, True)
    assert after >= before + 0.2, f"{method}: {before:.3f} without, {after:.3f} with recalibration"


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_pruned_model_is_smaller_and_runs(trained, ratio):
    model, data = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_copy(model, "magnitude", ratio, data, recalibrate=True)
    assert count_params(pruned) < (1 - ratio) * count_params(model)
    with torch.no_grad():
        out = pruned(data.x_val[:5])
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    after = model.state_dict()  # the trained model is left untouched
    assert all(torch.equal(before[k], after[k]) for k in before)
