"""lightning-prune: structural pruning for PyTorch and Lightning.

``lightning_prune.engine`` is standalone (torch only). The Lightning pieces are imported
lazily, so ``import lightning_prune.engine`` never imports Lightning.
"""

__version__ = "0.1.0"

from . import engine  # noqa: E402

_LAZY = {"PruningCallback", "PruningCheckpointMixin", "PruningSchedule", "load_pruned_checkpoint"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import callback

        return getattr(callback, name)
    raise AttributeError(f"module 'lightning_prune' has no attribute {name!r}")


__all__ = ["engine", "__version__", *sorted(_LAZY)]
