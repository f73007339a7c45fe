"""Constant: a tensor the model holds, given to the graph as if a layer had computed it.

    x = cn.Input((3, 32, 32))
    mean = cn.Constant(numpy.full((3, 1, 1), 0.5, numpy.float32))(x)   # (N, 3, 1, 1)
    y = cn.Sub()([x, mean])                                          # (x - 0.5), per channel

Its input only says how many samples there are: the output is `value` (a per-sample shape,
no batch axis) repeated for each sample, and no gradient flows back to the input. The value
is saved in the state dict under 'value': a trainable Parameter (its gradient is the sum over
the batch, so fine-tuning learns it like a bias) or, with trainable=False, a buffer that
checkpoints and ONNX export keep but optimizers leave alone. Imported ONNX graphs use it for
the constant operand of Add, Mul, Concat, MatMul and friends.
"""

from __future__ import annotations

import numpy

from convnet.core.backend import array_module
from convnet.nn.layer import Layer, Shape, grad_enabled
from convnet.nn.parameter import Parameter


class Constant(Layer):
    """(N, ...) -> (N, *value.shape): `value` for every sample."""

    kind = "const"

    def __init__(self, value, trainable: bool = False, *, dtype=numpy.float32):
        super().__init__()
        array = numpy.array(value, dtype=dtype)
        if array.ndim == 0:
            array = array.reshape(1)
        if not numpy.isfinite(array).all():
            raise ValueError(f"Constant: value holds NaN or infinite entries (shape "
                             f"{array.shape})")
        self.trainable = bool(trainable)
        if self.trainable:
            self.weight = Parameter(array)
        else:
            self.value = array

    @property
    def data(self):
        """The held array (per sample)."""
        return self.weight.data if self.trainable else self.value

    def own_parameters(self):
        return {"value": self.weight} if self.trainable else {}

    def own_buffers(self):
        return {} if self.trainable else {"value": self.value}

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(self.data.shape)

    def forward(self, x):
        if not hasattr(x, "shape") or getattr(x, "ndim", 0) < 1:
            raise TypeError(f"{self.name} (Constant): expected an array with a batch axis, "
                            f"received {type(x).__name__}")
        data = self.data
        if grad_enabled():
            self.cache = (x.shape, x.dtype)
        return array_module(data).broadcast_to(data, (x.shape[0], *data.shape))

    def backward(self, dy):
        shape, dtype = self._take_cache()
        if self.trainable:
            self.weight.grad += dy.sum(axis=0)
        return array_module(dy).zeros(shape, dtype=dy.dtype)

    def param_formula(self, input_shape: Shape) -> str:
        shape = "x".join(map(str, self.data.shape))
        return f"{shape} = {self.data.size:,}" if self.trainable else ""

    def summary_description(self) -> str:
        return repr(self)

    def extra_repr(self) -> str:
        data = self.data
        if data.size <= 4:
            shown = numpy.array2string(data.reshape(-1), precision=4, separator=", ")
            text = f"{shown}" + (f" shape {data.shape}" if data.ndim > 1 else "")
        else:
            text = f"shape {data.shape}"
        return text + (", trainable=True" if self.trainable else "")
