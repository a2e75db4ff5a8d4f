"""Lightning integration: prune during ``trainer.fit``, load pruned checkpoints anywhere."""

from .callback import PruningCallback
from .checkpoint import PruningCheckpointMixin, load_pruned_checkpoint
from .history import HISTORY_KEY, ModuleHistory
from .schedule import PruningSchedule

__all__ = ["PruningCallback", "PruningCheckpointMixin", "PruningSchedule", "ModuleHistory", "load_pruned_checkpoint",
           "HISTORY_KEY"]
