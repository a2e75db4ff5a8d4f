"""lightning-prune: structural pruning for PyTorch and Lightning."""

__version__ = "0.1.0"

from . import engine  # noqa: E402

__all__ = ["engine", "__version__"]
