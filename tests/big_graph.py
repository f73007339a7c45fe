"""A graph model of 200+ nodes for the explorer's tests (this module holds no tests): a stem,
a stack of Inception-like blocks (four branches: 1x1; 1x1 then 3x3; 1x1 then 5x5; 3x3 max pool
then 1x1; concatenated) and a classifier head. Small channels and maps: a forward pass of one
12x12 image takes milliseconds."""

from __future__ import annotations

import convnet as cn


def inception_stack(blocks: int = 15, size: int = 12, classes: int = 2) -> cn.Model:
    x = cn.Input((1, size, size))
    h = cn.ReLU()(cn.Conv2d(1, 4, 3, padding=1)(x))
    channels = 4
    for _ in range(blocks):
        a = cn.ReLU()(cn.Conv2d(channels, 2, 1)(h))
        b = cn.ReLU()(cn.Conv2d(2, 2, 3, padding=1)(cn.ReLU()(cn.Conv2d(channels, 2, 1)(h))))
        c = cn.ReLU()(cn.Conv2d(2, 2, 5, padding=2)(cn.ReLU()(cn.Conv2d(channels, 2, 1)(h))))
        d = cn.ReLU()(cn.Conv2d(channels, 2, 1)(cn.MaxPool2d(3, stride=1, padding=1)(h)))
        h = cn.Concat(axis=1)([a, b, c, d])
        channels = 8
    scores = cn.Linear(channels, classes)(cn.Flatten()(cn.GlobalAvgPool2d()(h)))
    return cn.Model(x, scores)
