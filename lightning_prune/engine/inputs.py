"""The engine's input convention, for code outside the engine (the callback, the benchmarks).

Kept as a public name of its own: the callback and ``lightning_prune.bench`` import it.
The code lives in :mod:`lightning_prune.engine.harness`, which the engine itself uses.
"""

from .harness import call_model, move_inputs

__all__ = ["call_model", "move_inputs"]
