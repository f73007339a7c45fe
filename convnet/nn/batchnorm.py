"""BatchNorm2d: per-channel normalisation with batch statistics in training and running
statistics in evaluation, following PyTorch exactly (momentum 0.1, unbiased running variance).

Synchronized batch norm (data parallelism): when a trainer sets `synchronize` (a function that
sums an array over every process's slice of the global batch; see
`convnet.training.distributed`), training takes the statistics of the whole global batch, in
forward and in backward, as one process would on it (PyTorch's SyncBatchNorm)."""

from __future__ import annotations

import numpy

from convnet.core import activation_kernels, batchnorm_kernels
from convnet.core.backend import array_module
from convnet.core.errors import ShapeError
from convnet.nn.activations import Hardtanh, ReLU, ReLU6
from convnet.nn.layer import (
    Layer,
    Shape,
    check_input,
    check_parameter_size,
    grad_enabled,
    positive_int,
)
from convnet.nn.parameter import Parameter
from convnet.nn.window import chw


class BatchNorm2d(Layer):
    """(N, C, H, W) -> (N, C, H, W): y = (x - mean) / sqrt(var + eps) * weight + bias."""

    kind = "bn"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, *, dtype=numpy.float32):
        super().__init__()
        self.num_features = positive_int(num_features, "num_features", "BatchNorm2d")
        check_parameter_size((num_features,), dtype, "BatchNorm2d")
        if not eps > 0:
            raise ValueError(f"BatchNorm2d: eps must be > 0, received {eps!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm2d: momentum must be in [0, 1], received {momentum!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = Parameter(numpy.ones(num_features, dtype=dtype)) if affine else None
        self.bias = Parameter(numpy.zeros(num_features, dtype=dtype)) if affine else None
        self.running_mean = numpy.zeros(num_features, dtype=dtype)
        self.running_var = numpy.ones(num_features, dtype=dtype)
        self.num_batches_tracked = numpy.zeros((), dtype=numpy.int64)
        # synchronize(sums, "forward" | "backward") -> the sums over all processes' slices,
        # set by a data-parallel trainer (--sync-bn); None: this batch's own statistics.
        self.synchronize = None

    def own_parameters(self):
        return {} if self.weight is None else {"weight": self.weight, "bias": self.bias}

    def own_buffers(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var,
                "num_batches_tracked": self.num_batches_tracked}

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, _, _ = chw(self, input_shape)
        if channels != self.num_features:
            raise ShapeError(
                f"{self.name} (BatchNorm2d): num_features={self.num_features} but the input "
                f"reaching it has {channels} channels; set num_features={channels}"
            )
        return tuple(input_shape)

    def forward(self, x):
        return self._forward(x, None)

    def forward_activated(self, x, activation: Layer):
        """activation.forward(self.forward(x)). In training on the compiled passes a ReLU, ReLU6
        or Hardtanh is applied in the normalising pass, which also leaves the activation the
        cache its own forward would (ReLU's mask, Hardtanh's output): one pass over the
        activation fewer. Backward is each layer's own. `takes_in(self, activation)` says
        whether this layer can; containers ask it."""
        taken = _taken(activation)
        if taken is None or not self._compiled_training(x):
            return activation.forward(self.forward(x))
        return self._forward(x, (taken, activation))

    def _compiled_training(self, x) -> bool:
        return self.training and self.synchronize is None and batchnorm_kernels.usable(x)

    def _forward(self, x, taken_in):
        check_input(self, x, 4, self.num_features, dtype=self.running_mean.dtype)
        xp = array_module(x)
        if self.training:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            if count < 2:
                raise ValueError(
                    f"{self.name} (BatchNorm2d): training needs more than one value per channel, "
                    f"received input shape {tuple(x.shape)}; use a batch of 2 or more or eval()"
                )
            if self._compiled_training(x):
                return self._compiled_forward(x, count, taken_in)
            if self.synchronize is None:
                mean = x.mean(axis=(0, 2, 3))
                var = x.var(axis=(0, 2, 3))
            else:
                mean, var, count = self._global_statistics(x, count)
            self._update_running(mean, var, count)
        else:
            mean, var, count = self.running_mean, self.running_var, 0
        inv_std = 1.0 / xp.sqrt(var + self.eps)  # (C,)
        xhat = (x - mean[:, None, None]) * inv_std[:, None, None]
        out = xhat
        if self.weight is not None:
            out = xhat * self.weight.data[:, None, None] + self.bias.data[:, None, None]
        if grad_enabled():
            self.cache = (xhat, inv_std, self.training, count)
        return out.astype(x.dtype, copy=False)

    def _compiled_forward(self, x, count: int, taken_in):
        """Training on batch statistics, on the compiled passes (convnet.core.batchnorm_kernels);
        taken_in: None, or (the activation as the passes apply it, the activation layer)."""
        taken, activation = taken_in or (batchnorm_kernels.NO_ACTIVATION, None)
        out, positive, mean, var, inv_std = batchnorm_kernels.forward(
            x, None if self.weight is None else self.weight.data,
            None if self.bias is None else self.bias.data, self.eps, taken)
        self._update_running(mean.astype(x.dtype), var.astype(x.dtype), count)
        if grad_enabled():
            self.cache = (x, (mean, inv_std), "compiled", count)  # x, not xhat: see there
            if activation is not None:  # what its own forward keeps for its backward
                activation.cache = out if positive is None else positive
        return out

    def _update_running(self, mean, var, count) -> None:
        m = self.momentum
        self.running_mean[...] = (1 - m) * self.running_mean + m * mean
        self.running_var[...] = (1 - m) * self.running_var + m * var * (count / (count - 1))
        self.num_batches_tracked += 1

    def _global_statistics(self, x, count: int):
        """Mean and (biased) variance per channel of the global batch, and its value count:
        sums of x and x**2 in float64 over every process's slice."""
        xp = array_module(x)
        channels = self.num_features
        sums = xp.concatenate([x.sum(axis=(0, 2, 3), dtype=xp.float64),  # C
                               xp.square(x, dtype=xp.float64).sum(axis=(0, 2, 3)),  # C
                               xp.asarray([count], dtype=xp.float64)])
        sums = self.synchronize(sums, "forward")
        total = float(sums[-1])
        mean = sums[:channels] / total
        var = xp.maximum(sums[channels:2 * channels] / total - mean * mean, 0.0)
        dtype = self.running_mean.dtype
        return mean.astype(dtype), var.astype(dtype), total

    def takes_backward_of(self, activation: Layer, dy) -> bool:
        """A ReLU after it on the compiled training passes: its mask is applied where those
        passes read dy (`batchnorm_kernels.backward`), with no pass of its own and no array
        for its input gradient."""
        return (type(activation) is ReLU and self.cache is not None
                and self.cache[2] == "compiled"
                and activation_kernels.usable_mask(activation.cache, dy.shape)
                and type(dy) is numpy.ndarray and dy.dtype == self.cache[0].dtype)

    def backward_activated(self, dy, activation: Layer, input_grad: bool = True):
        if not self.takes_backward_of(activation, dy):
            return super().backward_activated(dy, activation, input_grad)
        dx = self._backward(dy, activation._take_cache())
        return dx if input_grad else None

    def backward(self, dy):
        return self._backward(dy, None)

    def _backward(self, dy, positive):
        saved, statistics, mode, count = self._take_cache()
        if mode == "compiled":  # saved: x; statistics: (mean, inv_std) in float64
            dx, sum_dy, sum_dy_xhat = batchnorm_kernels.backward(
                dy, saved, None if self.weight is None else self.weight.data, *statistics,
                positive)
            if self.weight is not None:
                self.weight.grad += sum_dy_xhat.astype(self.weight.grad.dtype)
                self.bias.grad += sum_dy.astype(self.bias.grad.dtype)
            return dx
        xhat, inv_std, batch_statistics = saved, statistics, mode  # the NumPy forward's
        if self.weight is not None:
            self.weight.grad += (dy * xhat).sum(axis=(0, 2, 3))
            self.bias.grad += dy.sum(axis=(0, 2, 3))
            dxhat = dy * self.weight.data[:, None, None]
        else:
            dxhat = dy
        if not batch_statistics:
            return dxhat * inv_std[:, None, None]
        # Through the batch mean and variance as well:
        # dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
        if self.synchronize is None:
            mean_dxhat = dxhat.mean(axis=(0, 2, 3), keepdims=True)
            mean_dxhat_xhat = (dxhat * xhat).mean(axis=(0, 2, 3), keepdims=True)
        else:  # the means over the global batch, whose statistics the forward used
            xp = array_module(dy)
            sums = self.synchronize(xp.concatenate(
                [dxhat.sum(axis=(0, 2, 3), dtype=xp.float64),
                 (dxhat * xhat).sum(axis=(0, 2, 3), dtype=xp.float64)]), "backward")
            means = (sums / count).astype(dxhat.dtype)
            mean_dxhat = means[None, :self.num_features, None, None]
            mean_dxhat_xhat = means[None, self.num_features:, None, None]
        return (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * inv_std[:, None, None]

    def param_formula(self, input_shape: Shape) -> str:
        if self.weight is None:
            return ""
        return f"2 x {self.num_features} = {self.num_parameters():,}"

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        return 2 * int(numpy.prod(input_shape))

    def extra_repr(self) -> str:
        return str(self.num_features)


def _taken(activation: Layer):
    """The activation as batchnorm_kernels applies it (relu(), clip(low, high)), or None."""
    kind = type(activation)
    if kind is ReLU:
        return batchnorm_kernels.relu()
    if kind in (Hardtanh, ReLU6):
        return batchnorm_kernels.clip(activation.min_val, activation.max_val)
    return None


def takes_in(layer: Layer, following: Layer) -> bool:
    """Whether `layer.forward_activated(x, following)` serves for the pair: a BatchNorm2d and
    a ReLU, ReLU6 or Hardtanh after it that alone reads its output (the container knows that)."""
    return isinstance(layer, BatchNorm2d) and _taken(following) is not None
