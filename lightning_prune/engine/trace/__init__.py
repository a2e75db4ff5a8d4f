"""Tracing: one forward pass that turns every op into unions between channel elements.

``tracer`` runs the model (on meta tensors when it can) and calls, for each op, the rule
in ``ops`` / ``ops_math`` / ``ops_shape`` and, for each known layer, the rule in
``layer_rules``; ``labels`` holds the union-find of channel elements, ``state`` the
labels of each live tensor, ``fast_meta`` the shape-only forwards of builtin layers, and
``tied`` couples layers that share a weight. The result is read by :mod:`..graph`.
"""

from .tracer import Space, Tracer, TraceResult

__all__ = ["Space", "TraceResult", "Tracer"]
