"""Dependency graph: tracing, channel labels, groups."""

from .dependency import DependencyGraph, resolve_ignored
from .group import Dependency, Group, GroupItem, Idxs, Node
from .trace import TraceError

__all__ = ["DependencyGraph", "Dependency", "Group", "GroupItem", "Idxs", "Node", "TraceError", "resolve_ignored"]
