"""``tp.pruning``: Torch-Pruning's name for the low-level pruning functions and layer pruners.

The code lives in :mod:`.layers`; this module keeps ``tp.pruning.prune_conv_out_channels``
and ``from lightning_prune.engine.pruning import ...`` working.
"""

from .layers import *  # noqa: F403
from .layers import __all__  # noqa: F401
from .layers.functions import *  # noqa: F403 - the singleton pruners as well
