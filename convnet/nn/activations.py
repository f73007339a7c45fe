"""Elementwise nonlinearities and the inference-time softmax. Shapes pass through unchanged."""

from __future__ import annotations

from convnet.core.backend import array_module, run_chunks, sample_chunks
from convnet.nn.layer import Layer, check_input, grad_enabled


class _Elementwise(Layer):
    kind = "act"

    def forward(self, x):
        check_input(self, x, x.ndim if hasattr(x, "ndim") else 0, what="(N, ...)")
        out = self._apply(array_module(x), x)
        if grad_enabled():
            self.cache = self._keep(x, out)
        return out

    def backward(self, dy):
        return self._gradient(array_module(dy), dy, self._take_cache())


class ReLU(_Elementwise):
    """max(0, x); the gradient passes where x > 0. Batch chunks go to the worker threads."""

    kind = "relu"

    def forward(self, x):
        check_input(self, x, x.ndim if hasattr(x, "ndim") else 0, what="(N, ...)")
        xp = array_module(x)
        out = xp.empty_like(x)
        # A boolean mask for backward: a quarter of the memory of x.
        positive = xp.empty(x.shape, dtype=bool) if grad_enabled() else None

        def work(part):
            xp.maximum(x[part], 0, out=out[part])
            if positive is not None:
                xp.greater(out[part], 0, out=positive[part])

        run_chunks(work, sample_chunks(x))
        if positive is not None:
            self.cache = positive
        return out

    def backward(self, dy):
        positive = self._take_cache()
        xp = array_module(dy)
        dx = xp.empty_like(dy)
        run_chunks(lambda part: xp.multiply(dy[part], positive[part], out=dx[part]),
                   sample_chunks(dy))
        return dx


class LeakyReLU(_Elementwise):
    """x where x > 0, negative_slope * x elsewhere."""

    kind = "lrelu"

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if not isinstance(negative_slope, (int, float)) or isinstance(negative_slope, bool):
            raise TypeError(f"LeakyReLU: negative_slope must be a number, received "
                            f"{negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def _apply(self, xp, x):
        return xp.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def _keep(self, x, out):
        return x > 0

    def _gradient(self, xp, dy, positive):
        return xp.where(positive, dy, dy * dy.dtype.type(self.negative_slope))

    def extra_repr(self) -> str:
        return "" if self.negative_slope == 0.01 else f"negative_slope={self.negative_slope}"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""

    kind = "sigmoid"

    def _apply(self, xp, x):
        # exp of a non-positive number never overflows: use exp(-|x|) on both branches.
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)

    def _keep(self, x, out):
        return out

    def _gradient(self, xp, dy, out):
        return dy * out * (1 - out)


class Tanh(_Elementwise):
    kind = "tanh"

    def _apply(self, xp, x):
        return xp.tanh(x)

    def _keep(self, x, out):
        return out

    def _gradient(self, xp, dy, out):
        return dy * (1 - out * out)


class Softmax(Layer):
    """Class probabilities over axis 1, for inference: (N, K) -> (N, K), rows sum to 1.

    Train with CrossEntropyLoss on the raw scores instead: it fuses log-softmax and is stable.
    """

    kind = "softmax"

    def __init__(self, dim: int = 1):
        super().__init__()
        if dim != 1:
            raise ValueError(f"Softmax: only dim=1 (the class axis) is supported, received {dim}")
        self.dim = dim

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 2), what="(N, K, ...)")
        xp = array_module(x)
        shifted = x - x.max(axis=1, keepdims=True)
        e = xp.exp(shifted)
        out = e / e.sum(axis=1, keepdims=True)
        if grad_enabled():
            self.cache = out
        return out

    def backward(self, dy):
        out = self._take_cache()
        return out * (dy - (dy * out).sum(axis=1, keepdims=True))
