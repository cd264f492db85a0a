"""Shapes and the sums of their areas."""

from geometry.shapes import Circle, Square, total_area

__all__ = ["Circle", "Square", "total_area"]
