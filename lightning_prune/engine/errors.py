"""The engine's own exceptions, in one place so that every module can raise them without cycles."""

from __future__ import annotations


class PruningError(ValueError):
    """A prune was refused; the model is unchanged. The message says what to do instead."""


class TraceError(RuntimeError):
    """The model could not be traced on the given example inputs."""
