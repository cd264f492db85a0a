"""Plane shapes with an area."""

import math


class Circle:
    """A circle of a given radius."""

    def __init__(self, radius: float) -> None:
        self.radius = radius

    def area(self) -> float:
        return math.pi * self.radius**2


class Square:
    """A square of a given side."""

    def __init__(self, side: float) -> None:
        self.side = side

    def area(self) -> float:
        return self.side * self.side


def total_area(shapes: list[Circle | Square]) -> float:
    """The sum of the areas of ``shapes``."""
    return sum(shape.area() for shape in shapes)
