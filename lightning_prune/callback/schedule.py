"""Which epochs prune, and how much is gone after each of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.pruner.scheduler import SCHEDULERS


@dataclass(frozen=True)
class PruningSchedule:
    """Prune at the start of ``epochs``, reaching ``cumulative[i]`` of the target after epoch ``epochs[i]``.

    Built from either an explicit list of epochs (and optionally the cumulative fraction of
    the target reached at each), or a range ``start_epoch, start_epoch + every, ...`` of
    ``steps`` prunes with a ``shape`` (linear, cosine, exponential).
    """

    epochs: tuple[int, ...]
    fractions: tuple[float, ...]  # cumulative fraction of the final target after each prune
    # the shape the fractions follow, None for explicit ones: an exponential schedule's fractions depend on the
    # target itself (at a target ratio of 1.0, the only one known here, it would remove everything at once)
    shape: str | None = None

    @classmethod
    def build(cls, steps: int = 1, start_epoch: int = 0, every_n_epochs: int = 1, shape: str = "linear",
              epochs: Sequence[int] | None = None, fractions: Sequence[float] | None = None) -> PruningSchedule:
        if epochs is not None:
            epochs = [int(e) for e in epochs]
            if not epochs or any(e < 0 for e in epochs) or sorted(set(epochs)) != epochs:
                raise ValueError(f"prune_epochs must be a non-empty, strictly increasing list of epochs >= 0, "
                                 f"got {epochs}")
            steps = len(epochs)
        else:
            if steps < 1:
                raise ValueError(f"pruning_steps must be >= 1, got {steps}")
            if start_epoch < 0 or every_n_epochs < 1:
                raise ValueError(f"start_epoch must be >= 0 and every_n_epochs >= 1, got {start_epoch}, {every_n_epochs}")
            epochs = [start_epoch + i * every_n_epochs for i in range(steps)]
        if fractions is not None:
            fractions = [float(f) for f in fractions]
            if len(fractions) != steps or any(b < a for a, b in zip(fractions, fractions[1:])) \
                    or not 0 < fractions[-1] <= 1 or fractions[0] <= 0:
                raise ValueError(f"schedule fractions must be {steps} increasing values in (0, 1] ending at 1, "
                                 f"got {fractions}")
        else:
            if shape not in SCHEDULERS:
                raise ValueError(f"schedule shape must be one of {sorted(SCHEDULERS)}, got {shape!r}")
            fractions = SCHEDULERS[shape](1.0, steps)[1:]
            return cls(tuple(epochs), tuple(fractions), shape)
        return cls(tuple(epochs), tuple(fractions))

    def step_at(self, epoch: int) -> int | None:
        """1-based index of the prune that happens at ``epoch``, or ``None``."""
        return self.epochs.index(epoch) + 1 if epoch in self.epochs else None

    @property
    def steps(self) -> int:
        return len(self.epochs)

    def scheduler(self, target: float, steps: int) -> list[float]:
        """A MetaPruner ratio scheduler following this schedule."""
        if self.shape is not None:
            return SCHEDULERS[self.shape](target, steps)
        return [0.0] + [target * f for f in self.fractions]
