"""Optimizers (PyTorch's update rules) and learning-rate schedules."""

from convnet.optim.optimizers import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, clip_grad_norm_
from convnet.optim.schedules import ConstantLR, CosineAnnealingLR, LinearWarmup, StepLR

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "ConstantLR", "CosineAnnealingLR",
           "LinearWarmup", "Optimizer", "StepLR", "clip_grad_norm_"]
