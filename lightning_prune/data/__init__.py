"""Small real datasets that ship with their dependencies (no download), for tests and examples."""

from .digits import load_digits_split

__all__ = ["load_digits_split"]
