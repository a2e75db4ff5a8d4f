"""Dependency graph: tracing, channel labels, groups."""

from ..errors import TraceError
from .dependency import DependencyGraph, resolve_ignored
from .group import Dependency, Group, GroupItem, Idxs, Node

__all__ = ["DependencyGraph", "Dependency", "Group", "GroupItem", "Idxs", "Node", "TraceError", "resolve_ignored"]
