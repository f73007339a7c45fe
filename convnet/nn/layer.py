"""The contract every layer keeps: forward, backward, output_shape, parameters, train/eval.

A layer keeps from `forward` only what `backward` needs, and `backward(dy)` returns the
gradient with respect to its input while accumulating its parameters' gradients.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

import numpy

from convnet.core.backend import array_module, return_freed_memory
from convnet.nn import symbolic
from convnet.nn.init import initial_weight
from convnet.nn.parameter import Parameter, changed, switched

Shape = tuple[int, ...]

# Per thread, as in PyTorch: an explorer answering requests under no_grad() must not stop a
# trainer in another thread from keeping its caches.
_grad_mode = threading.local()


def grad_enabled() -> bool:
    """Whether layers keep what backward needs (off inside `no_grad()`, in this thread)."""
    return getattr(_grad_mode, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """Inference without caching for backward: less memory, a little faster. This thread only."""
    previous = grad_enabled()
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


class Layer:
    """Base class. Subclasses say plainly which arrays they own in `own_parameters`."""

    # Short lowercase stem for display names such as conv1, pool2 (see Sequential).
    kind = "layer"
    # A merge (Concat, Add, Mul) takes a list of inputs; a split returns a tuple of outputs.
    multi_input = False
    multi_output = False

    def __init__(self) -> None:
        self.training = True
        self.name = self.kind
        self.user_named = False  # named by the user: containers and graphs keep the name
        self.cache = None  # what forward keeps for backward

    def named(self, name: str) -> Layer:
        """Give this layer a name of your own (kept in summaries, state dicts and graphs):
        `cn.Conv2d(3, 16, 3).named("stem")(x)`."""
        if not isinstance(name, str) or not name or any(c in name for c in ".:/ "):
            raise ValueError(f"{type(self).__name__}: a layer name must be a non-empty string "
                             f"without '.', ':', '/' or spaces, received {name!r}")
        self.name = name
        self.user_named = True
        return self

    # -- computation -------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def backward_parameters(self, dy) -> None:
        """Fill the parameters' gradients without returning the input gradient: what the first
        layer of a model does in training. Layers that can skip computing it override this."""
        self.backward(dy)

    def takes_backward_of(self, activation: Layer, dy) -> bool:
        """Whether `backward_activated(dy, activation)` runs the activation's backward inside
        this layer's (the activation read this layer's output alone, forward called each once:
        the container knows that). Layers that can override it."""
        return False

    def backward_activated(self, dy, activation: Layer, input_grad: bool = True):
        """This layer's backward of the activation's input gradient for dy: the two backwards
        in one where `takes_backward_of` says so, else one after the other. None for the input
        gradient with input_grad=False."""
        grad = activation.backward(dy)
        if input_grad:
            return self.backward(grad)
        self.backward_parameters(grad)
        return None

    def __call__(self, x):
        """forward(x) on arrays; on symbolic tensors (cn.Input), a node of a graph model."""
        if symbolic.is_symbolic(x):
            return symbolic.apply(self, x)
        return self.forward(x)

    def output_shape(self, input_shape: Shape) -> Shape:
        """Per-sample output shape for a per-sample input shape; ShapeError if it won't fit."""
        return tuple(input_shape)

    def _take_cache(self):
        """Hand the forward cache to backward once, so its memory is freed afterwards."""
        if self.cache is None:
            raise RuntimeError(
                f"{self.name} ({type(self).__name__}): backward called without a forward that "
                f"kept its cache (run forward outside no_grad(), once per backward)"
            )
        cache, self.cache = self.cache, None
        return cache

    # -- parameters ----------------------------------------------------------------------
    def own_parameters(self) -> dict[str, Parameter]:
        """The trainable arrays this layer itself holds, by name (not its children's)."""
        return {}

    def own_buffers(self) -> dict[str, object]:
        """Non-trainable state saved with the model (batch-norm running statistics)."""
        return {}

    def set_buffer(self, name: str, value) -> None:
        setattr(self, name, value)
        changed()

    def children(self) -> list[tuple[str, Layer]]:
        """Sub-layers, by name, for containers."""
        return []

    def summary_children(self) -> tuple[str, list[Layer]]:
        """How the summary lists this layer's sub-layers: ("chain", layers) in its place, one
        after another (a Sequential); ("nested", layers) indented under its own row, each fed
        this layer's input (a Residual's body and projection); ("leaf", []) for none."""
        return ("leaf", [])

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, param in self.own_parameters().items():
            yield prefix + name, param
        for child_name, child in self.children():
            yield from child.named_parameters(f"{prefix}{child_name}.")

    def parameters(self) -> list[Parameter]:
        return [param for _, param in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, object]]:
        for name, value in self.own_buffers().items():
            yield prefix + name, value
        for child_name, child in self.children():
            yield from child.named_buffers(f"{prefix}{child_name}.")

    def modules(self) -> Iterator[Layer]:
        yield self
        for _, child in self.children():
            yield from child.modules()

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.zero_grad()

    def state_dict(self) -> dict[str, object]:
        """Parameters and buffers by their stable names: PyTorch's keys, in PyTorch's order
        (each layer's parameters, then its buffers, then its children's), for the same model."""
        return dict(self._state_items())

    def _state_items(self, prefix: str = "") -> Iterator[tuple[str, object]]:
        for name, param in self.own_parameters().items():
            yield prefix + name, param.data
        yield from ((prefix + name, value) for name, value in self.own_buffers().items())
        for child_name, child in self.children():
            yield from child._state_items(f"{prefix}{child_name}.")

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays in by name; shapes must match. strict=True refuses missing or extra keys."""
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        missing = [k for k in [*params, *buffers] if k not in state]
        unexpected = [k for k in state if k not in params and k not in buffers]
        if strict and (missing or unexpected):
            raise KeyError(
                f"state dict does not match the model: missing {missing or 'none'}, "
                f"unexpected {unexpected or 'none'}"
            )
        for name, param in params.items():
            if name in state:
                xp = array_module(param.data)
                param.assign(xp.asarray(state[name], dtype=param.data.dtype), name)
        owners = self._buffer_owners()
        for name in buffers:
            if name in state:
                owner, attr = owners[name]
                old = getattr(owner, attr)
                new = array_module(old).asarray(state[name], dtype=old.dtype)
                if new.shape != old.shape:
                    raise ValueError(f"{name}: expected shape {old.shape}, received {new.shape}")
                owner.set_buffer(attr, new.copy())

    def _buffer_owners(self, prefix: str = "") -> dict[str, tuple[Layer, str]]:
        owners = {prefix + name: (self, name) for name in self.own_buffers()}
        for child_name, child in self.children():
            owners.update(child._buffer_owners(f"{prefix}{child_name}."))
        return owners

    # -- modes and dtype -------------------------------------------------------------------
    def train(self, mode: bool = True) -> Layer:
        switch = False
        for module in self.modules():
            switch = switch or module.training != mode
            module.training = mode
        if switch:  # inference plans repack: training may have changed weights in place
            switched()  # (an eval() of a model in eval mode is no switch: nothing to repack)
        if switch and mode:  # and while it trains, no plan needs its buffers (20-28 MB for
            released = False  # vggish, resnet8, mobilenet-mini, 100 for unet-mini; made again
            for module in self.modules():  # at eval), which malloc would keep
                for plan in module.__dict__.get("_inference_plans", {}).values():
                    released = plan.release() or released
            if released:
                return_freed_memory()
        return self

    def eval(self) -> Layer:
        return self.train(False)

    def astype(self, dtype) -> Layer:
        """Cast parameters and float buffers to `dtype` (float64 for gradient checks)."""
        for module in self.modules():
            for param in module.own_parameters().values():
                param.data = param.data.astype(dtype)
                param.grad = param.grad.astype(dtype)
            for name, value in module.own_buffers().items():
                if value.dtype.kind == "f":
                    module.set_buffer(name, value.astype(dtype))
        return self

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].data.dtype if params else None

    # -- description (summary, CLI, web page) --------------------------------------------
    def param_formula(self, input_shape: Shape) -> str:
        """How the parameter count comes about, e.g. '10 x (5*5*3 + 1) = 760'."""
        count = self.num_parameters()
        return f"{count:,}" if count else ""

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """Multiply-adds per sample in forward."""
        return 0

    def receptive_field(self, field, input_shape: Shape):
        """The receptive field after this layer, given the field of its input units."""
        return field

    def weight_sharing(self, input_shape: Shape, output_shape: Shape) -> dict | None:
        """For a layer that shares weights across positions (a convolution): its parameter
        count beside those of layers giving the same output volume without sharing (see
        Conv2d.weight_sharing); None for the others."""
        return None

    def size_fix(self, input_shape: Shape, target_hw) -> str | None:
        """How this layer could give spatial size `target_hw` from `input_shape` (asked by a
        merge whose inputs disagree), or None when it has no such setting."""
        return None

    def dropped_pixels(self, input_shape: Shape) -> tuple[int, int]:
        """Border (rows, cols) this layer never covers (only with strict=False)."""
        return (0, 0)

    def summary_description(self) -> str:
        """What the summary's description column says of this layer."""
        return repr(self)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class WeightedLayer(Layer):
    """A layer owning a `weight` drawn by its `init` scheme and an optional zero `bias`."""

    def _create_parameters(self, weight_shape, bias: bool, init: str, dtype) -> None:
        check_parameter_size(weight_shape, dtype, type(self).__name__)
        self.init = init
        self.weight = Parameter(numpy.zeros(weight_shape, dtype=dtype))
        self.bias = Parameter(numpy.zeros(weight_shape[0], dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.weight.data[...] = initial_weight(self.weight.shape, self.init, self.weight.data.dtype)
        self.weight.mark_changed()
        if self.bias is not None:
            self.bias.data[...] = 0
            self.bias.mark_changed()

    def own_parameters(self):
        params = {"weight": self.weight}
        if self.bias is not None:
            params["bias"] = self.bias
        return params


def check_input(
    layer: Layer, x, ndim: int, channels: int | None = None, what: str = "", dtype=None
) -> None:
    """Refuse inputs of the wrong type, rank, dtype or channel count with a message that helps."""
    label = f"{layer.name} ({type(layer).__name__})"
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{label}: expected an array, received {type(x).__name__}")
    layout = what or {2: "(N, features)", 4: "(N, C, H, W)"}.get(ndim, f"{ndim}-D")
    if x.ndim != ndim:
        hint = " (add cn.Flatten() before a Linear layer)" if ndim == 2 and x.ndim == 4 else ""
        if ndim == 4 and x.ndim == 3:
            hint = " (add a batch axis: x[None])"
        raise ValueError(
            f"{label}: expected a {ndim}-D array {layout}, received shape {tuple(x.shape)}{hint}"
        )
    if numpy.dtype(x.dtype).kind != "f":
        raise TypeError(
            f"{label}: expected a floating-point array (float32), received dtype {x.dtype}; "
            f"convert with x.astype(numpy.float32)"
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{label}: expected {dtype} input to match the layer's weights, received {x.dtype}; "
            f"convert with x.astype(numpy.{dtype}) or the model with model.astype(numpy.{x.dtype})"
        )
    if any(dim == 0 for dim in x.shape):
        raise ValueError(f"{label}: received an empty array of shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{label}: expected {channels} input channels, received {x.shape[1]} "
            f"(input shape {tuple(x.shape)})"
        )


# The most one parameter array may hold: VGG-16's largest layer (fc6, 25088 x 4096) is 392 MiB
# in float32; an absurd size in a model file (out_features = 1000000000) is refused before
# anything is allocated or drawn, not after minutes of swapping or a MemoryError.
MAX_PARAMETER_BYTES = 2 * 1024**3


def check_parameter_size(shape, dtype, layer: str) -> None:
    """ValueError when an array of `shape` would hold more than MAX_PARAMETER_BYTES."""
    count = math.prod(int(v) for v in shape)
    size = count * numpy.dtype(dtype).itemsize
    if size > MAX_PARAMETER_BYTES:
        dims = " x ".join(f"{int(v):,}" for v in shape)
        raise ValueError(f"{layer}: a weight of {dims} = {count:,} values ({size / 1024**3:,.1f} "
                         f"GiB as {numpy.dtype(dtype).name}) is more than the "
                         f"{MAX_PARAMETER_BYTES / 1024**3:.0f} GiB one layer may hold; check "
                         f"the sizes (a Linear's in_features x out_features, a Conv2d's "
                         f"out_channels x in_channels x kernel)")


def check_finite_input(x, owner: str) -> None:
    """A model's input: an array without NaN or infinite values (they would spread silently)."""
    if type(x) is numpy.ndarray and (x.dtype.kind != "f" or numpy.isfinite(x).all()):
        return  # the common case in one line (at batch 1 every microsecond shows)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{owner}: expected an array, received {type(x).__name__}")
    xp = array_module(x)
    if x.dtype.kind == "f" and x.size and not bool(xp.isfinite(x).all()):
        bad = int((~xp.isfinite(x)).sum())
        raise ValueError(
            f"{owner}: the input holds {bad} NaN or infinite value(s) (shape "
            f"{tuple(x.shape)}); clean or re-normalise the data before the model"
        )


def positive_int(value, name: str, layer: str, minimum: int = 1) -> int:
    """Validate a hyperparameter such as in_channels or out_features."""
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < minimum:
        raise ValueError(f"{layer}: {name} must be an int >= {minimum}, received {value!r}")
    return int(value)
