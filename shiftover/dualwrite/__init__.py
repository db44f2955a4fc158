"""What applications import: the dual-writer, shadow reads and read routing."""

from shiftover.dualwrite.writer import DualWriter

__all__ = ["DualWriter"]
