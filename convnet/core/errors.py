"""Errors convnet raises for shapes and inputs that do not fit."""


class ShapeError(ValueError):
    """A layer configuration or input shape that does not fit; the message says how to fix it."""
