"""Lightning integration: prune during ``trainer.fit``."""

from .callback import PruningCallback
from .checkpoint import HISTORY_KEY, load_pruned_checkpoint
from .schedule import PruningSchedule

__all__ = ["PruningCallback", "PruningSchedule", "load_pruned_checkpoint", "HISTORY_KEY"]
