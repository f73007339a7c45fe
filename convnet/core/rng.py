"""One seeded generator for everything random in convnet: initialisation, dropout, shuffling.

`manual_seed(s)` makes a model built afterwards, and its training, reproduce exactly.
"""

from __future__ import annotations

import numpy

_generator = numpy.random.default_rng(0)


def manual_seed(seed: int) -> numpy.random.Generator:
    """Reset the shared generator; returns it."""
    global _generator
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, received {seed!r}")
    _generator = numpy.random.default_rng(seed)
    return _generator


def generator() -> numpy.random.Generator:
    """The shared generator."""
    return _generator


def get_state() -> dict:
    """The generator's state, JSON-serialisable, for exact resumption."""
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    _generator.bit_generator.state = state
