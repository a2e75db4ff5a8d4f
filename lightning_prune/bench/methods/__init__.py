"""Benchmark methods, one file per family, all behind one registry.

* :mod:`.structural`: one importance criterion, channels removed;
* :mod:`.sparse`: sparse training with a regularizer, then a structural prune;
* :mod:`.masking`: the ``torch.nn.utils.prune`` baseline that only zeroes weights.

Register your own with :func:`register_method`.
"""

from . import masking, sparse, structural  # noqa: F401 - importing registers the methods
from .base import (
           METHODS,
           MethodContext,
           PruneTarget,
           PruningMethod,
           get_method,
           output_layers,
           register_method,
)

__all__ = ["METHODS", "MethodContext", "PruneTarget", "PruningMethod", "get_method", "output_layers",
           "register_method"]
