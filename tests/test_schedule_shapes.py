"""The callback's schedule shapes spread a budget over the prunes (issue 14: an exponential
schedule used to reach the whole target at its first prune)."""

from __future__ import annotations

import pytest

from lightning_prune.callback.schedule import PruningSchedule
from lightning_prune.engine.pruner.scheduler import SCHEDULERS


@pytest.mark.parametrize("shape", sorted(SCHEDULERS))
@pytest.mark.parametrize("target", [0.5, 0.92])
def test_every_shape_reaches_the_target_in_increasing_steps_and_not_at_once(shape, target):
    schedule = PruningSchedule.build(steps=4, start_epoch=2, every_n_epochs=2, shape=shape)
    ratios = schedule.scheduler(target, schedule.steps)
    assert len(ratios) == 5 and ratios[0] == 0 and ratios[-1] == pytest.approx(target)
    assert all(a < b for a, b in zip(ratios, ratios[1:]))
    assert ratios[1] < 0.75 * target  # the first prune leaves most of the way to later ones


def test_the_exponential_shape_keeps_the_same_fraction_of_what_remains_at_every_prune():
    keep = 0.08  # target_macs: the pruner asks for the ratio 1 - keep
    ratios = PruningSchedule.build(steps=4, shape="exponential").scheduler(1 - keep, 4)
    kept = [1 - r for r in ratios]
    steps = [b / a for a, b in zip(kept, kept[1:])]
    assert steps == pytest.approx([keep ** 0.25] * 4)


def test_explicit_fractions_still_scale_the_target():
    schedule = PruningSchedule.build(epochs=[1, 3], fractions=[0.25, 1.0])
    assert schedule.scheduler(0.6, 2) == pytest.approx([0.0, 0.15, 0.6])
