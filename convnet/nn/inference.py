"""Inference plans: a model in eval mode, run under no_grad(), as compiled steps over the
blocked channel layout of `convnet.core.blocked`.

A Sequential or a graph Model answers `forward` from a plan when every layer is in eval mode,
no gradient is being recorded, the input is float32 NumPy and the compiled kernels are on
(CONVNET_COMPILED_KERNELS=0 switches plans off with them). The plan is built once per input
shape and holds:

- the layers flattened into one graph (nested Sequentials, Residual blocks, graph models);
- fusions: a convolution takes the batch norm that alone reads it (folded into its filters and
  bias), then the activation that alone reads it (ReLU, ReLU6/Hardtanh, LeakyReLU, Hardswish,
  Hardsigmoid, SiLU, Sigmoid), or the residual Add that alone reads it and the activation after
  that: y = act(conv(x) + bias + shortcut), as onnxruntime fuses them; then a 2x2 stride-2
  max pool that alone reads it (`ConvStep._pool_fits`);
- one step per remaining node: blocked kernels for convolutions (any stride, dilation and
  padding; groups when each group's channels are multiples of 8; depthwise), max and average
  pooling, global average pooling, activations, batch norm, Add/Sub/Mul/Div and Concat of whole
  blocks of channels; every other layer runs its own NumPy forward (a fallback) on the plain
  layout, converted to and from as needed (once per tensor);
- the filters packed for the kernels. They are repacked when any weight or buffer has changed
  since (see `convnet.nn.parameter`): an optimizer step, load_state_dict, an assignment to a
  parameter's `.data`, `mark_changed()`, or a train()/eval() switch.

Each blocked tensor is allocated with the zero border its readers pad with, so convolutions
read padding in place. Tensors are freed after their last reader. Outputs are plain (N, C, H, W)
arrays, equal to the layers' own forward up to float32 rounding (tests/test_inference.py checks
every zoo model, every fused pattern and the repacking).
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field

import numpy

from convnet.core import blocked, kernels, team
from convnet.core.backend import num_threads, thread_slices
from convnet.core.team import run_chunks
from convnet.core.thread_choice import run_chosen
from convnet.nn import activations as act
from convnet.nn.batchnorm import BatchNorm2d
from convnet.nn.conv import Conv2d
from convnet.nn.conv_transpose import ConvTranspose2d
from convnet.nn.layer import Layer, grad_enabled, no_grad
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.merge import Add, Concat, Div, Mul, Sub
from convnet.nn.parameter import generation, switches
from convnet.nn.pixel_shuffle import DepthToSpace, PixelShuffle, PixelUnshuffle, SpaceToDepth
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convnet.nn.resize import Resize

# The containers' kinds (Sequential.kind, Residual.kind, Model.kind).
SEQUENTIAL, RESIDUAL, GRAPH = "seq", "res", "model"

# Loading Numba and the kernels costs about a second and 135 MB once per process: a batch with
# fewer multiply-adds than this runs the layers' NumPy forward until the kernels are loaded
# (`convnet predict` on one image), as `convnet.core.kernels.MIN_LOAD_MACS` rules for training.
MIN_LOAD_MACS = kernels.MIN_LOAD_MACS
# ...but a plan called this many times on one image loads them on its next: a loop over
# single images or a server, where the load pays back within a second (LeNet-5 on one image,
# two threads: 0.19 ms an image with the layers, 0.02 ms from the plan). Batches of more keep
# their path whatever came before (an evaluation prints the same bits on any process count).
SMALL_CALLS_BEFORE_LOAD = 3


def applies(model: Layer, arrays) -> bool:
    """Whether `model.forward(*arrays)` runs from a plan (see the module doc)."""
    if grad_enabled() or model.training or not kernels._enabled:
        return False
    for x in arrays:
        if type(x) is not numpy.ndarray or x.dtype != numpy.float32 or x.ndim != 4:
            return False
    return True


def answer(model: Layer, arrays) -> list | None:
    """The outputs of `model` for `arrays` from a plan that has run on their shapes before
    (so the layers' checks of those shapes passed when it was made), where `applies` and
    every value is finite (checked by a kernel: NumPy's check took 1.4 of LeNet-5's 16 us on
    one image); else None, and the caller checks the arrays and goes on to `run`."""
    plans = model.__dict__.get("_inference_plans")
    if not plans or not applies(model, arrays):
        return None
    plan = plans.get((arrays[0].shape[1:],) if len(arrays) == 1
                     else tuple(x.shape[1:] for x in arrays))
    if plan is None or plan.finite is None:
        return None
    for x in arrays:
        if not x.flags.c_contiguous or not plan.finite(x):
            return None
    return plan.run(arrays)


def run(model: Layer, arrays) -> list:
    """The outputs of `model` for `arrays` (a list of (N, C, H, W) float32 arrays), from the
    plan for their shapes, built or refreshed as needed; None when no plan serves (the caller
    then runs the layers)."""
    plans = model.__dict__.setdefault("_inference_plans", {})
    key = (arrays[0].shape[1:],) if len(arrays) == 1 else tuple(x.shape[1:] for x in arrays)
    plan = plans.get(key)
    if plan is None:
        plan = Plan(model, [tuple(s) for s in key])
        if len(plans) >= 8:
            plans.pop(next(iter(plans)))
        plans[key] = plan
    if not plan.useful:
        return None
    if not plan.loaded() and not blocked.loaded("conv") and (
            plan.macs * arrays[0].shape[0] < MIN_LOAD_MACS):
        one_image = arrays[0].shape[0] == 1
        if not one_image or plan.small_calls < SMALL_CALLS_BEFORE_LOAD:
            plan.small_calls += one_image
            return None
    return plan.run(arrays)


# -- the graph -----------------------------------------------------------------------------------
@dataclass
class Node:
    layer: Layer
    inputs: list[int]
    outputs: list[int]


@dataclass
class Graph:
    inputs: list[int]
    outputs: list[int]
    nodes: list[Node] = field(default_factory=list)
    values: int = 0

    def new(self) -> int:
        self.values += 1
        return self.values - 1


def flatten(model: Layer) -> Graph:
    """The leaf layers of `model` as one graph of numbered values; a Residual's shortcut
    projection comes before its body, so that the body's last layer can add it in.

    Containers are told apart by their spec kind ("seq", "res", "model"), not by class: they
    call this module from their forward, so it does not import them back."""
    graph = Graph([], [])

    def add(layer: Layer, sources: list[int], count: int = 1) -> list[int]:
        kind = getattr(layer, "kind", None)
        if kind == SEQUENTIAL:
            value = sources[0]
            for child in layer.layers:
                (value,) = add(child, [value])
            return [value]
        if kind == RESIDUAL:
            shortcut = sources[0]
            if layer.projection is not None:
                (shortcut,) = add(layer.projection, sources)
            (body,) = add(layer.body, sources)
            out = graph.new()
            graph.nodes.append(Node(_ResidualAdd(), [body, shortcut], [out]))
            return [out]
        if kind == GRAPH:
            slots = [None] * layer.slots
            for slot, value in zip(layer.input_slots, sources, strict=True):
                slots[slot] = value
            for step in layer.steps:
                outs = add(step.layer, [slots[s] for s in step.inputs], len(step.outputs))
                for slot, value in zip(step.outputs, outs, strict=True):
                    slots[slot] = value
            return [slots[s] for s in layer.output_slots]
        outs = [graph.new() for _ in range(count)]
        graph.nodes.append(Node(layer, list(sources), outs))
        return outs

    count = len(model.input_slots) if getattr(model, "kind", None) == GRAPH else 1
    graph.inputs = [graph.new() for _ in range(count)]
    graph.outputs = add(model, list(graph.inputs))
    return graph


class _ResidualAdd(Add):
    """The join of a Residual block (body + shortcut)."""


def _activation(layer: Layer):
    """(code, alpha, beta) of an activation a kernel can apply, or None."""
    codes = blocked.ACTIVATIONS
    kind = type(layer)
    if kind is act.ReLU:
        return codes["relu"], 0.0, 0.0
    if isinstance(layer, act.Hardtanh):
        return codes["clip"], layer.min_val, layer.max_val
    if kind is act.LeakyReLU:
        return codes["leaky"], layer.negative_slope, 0.0
    if kind is act.Hardswish:
        return codes["hardswish"], 0.0, 0.0
    if kind is act.Hardsigmoid:
        return codes["hardsigmoid"], layer.alpha, layer.beta
    if kind is act.SiLU:
        return codes["silu"], 0.0, 0.0
    if kind is act.Sigmoid:
        return codes["sigmoid"], 0.0, 0.0
    return None


# -- steps ---------------------------------------------------------------------------------------
class Step:
    """One node of the plan: reads values `inputs`, writes `outputs`."""

    inputs: list[int]
    outputs: list[int]
    fingerprint = None  # what the packed copies were made from
    module_kinds: tuple[str, ...] = ()  # the blocked modules it runs on, of no tile

    def modules(self, n: int, threads: int) -> list[tuple]:
        """The blocked kernel modules a runner of n images on `threads` threads runs the step
        on, (kind, dtype, tile) each (`blocked.compile_ahead`)."""
        return [(kind, numpy.float32, None) for kind in self.module_kinds]

    def prepare(self) -> None:
        """(Re)pack what the step keeps from its layers' weights."""

    def bind(self, rt: Runner) -> Bound:
        """The step with the buffers of `rt`: what depends only on shapes (geometry, strides,
        work splits) is worked out here, once per batch size; the packed weights are read at
        each call (a repack replaces them)."""
        return Bound(lambda values: self.run(values, rt))

    def run(self, values: list, rt: Runner) -> None:
        raise NotImplementedError


def _plain_strides(shape) -> tuple[int, int, int, int]:
    """(batch, channel, row, column) strides in elements of a C-contiguous (N, C, H, W)."""
    _, c, h, w = shape
    return (c * h * w, h * w, w, 1)


class KernelCall:
    """kernel(*args_of(chunk)) for every chunk of a step. Called alone, it runs them over the
    team's threads when there is more than one chunk and the kernel has a `task` (its
    C-callable twin, see `convnet.core.team`), else over the worker threads. With a task it
    can also join a `Segment`: a run of steps' chunks in one program (`Programmed`)."""

    def __init__(self, kernel, chunks, args_of, task=None, packed=lambda: None, fresh=None):
        self.kernel, self.chunks, self.args_of = kernel, chunks, args_of
        self.task, self.packed = task, packed
        # fresh: a one-item list holding the flat array the first argument is at this call
        # (a plan's input, set by the step's pre): a program made before is readdressed
        self.fresh = fresh
        # its program alone, holding it weakly: a cycle would keep the call (and the buffers
        # its arguments view) until a garbage collection, past train()'s malloc_trim
        self._alone = Programmed([weakref.proxy(self)])

    def step(self) -> tuple:
        """(task address, every chunk's arguments): one step of a team.Program."""
        return self.task.address, [self.args_of(chunk) for chunk in self.chunks]

    def __call__(self) -> None:
        if len(self.chunks) == 1:
            self.kernel(*self.args_of(self.chunks[0]))
        elif self.task is None:
            run_chunks(lambda chunk: self.kernel(*self.args_of(chunk)), self.chunks)
        else:
            self._alone.run(shared=True)


class Programmed:
    """KernelCalls as one team.Program, which holds their arrays' addresses: made again when
    any call's `packed()` (what its step's packed filters were made from) is another, and
    each call with a `fresh` input pointed at this call's array."""

    def __init__(self, calls: list[KernelCall]):
        self.calls = calls
        self._fresh = [(step, call.fresh) for step, call in enumerate(calls)
                       if call.fresh is not None]
        self._program, self._packed, self._stamp = None, None, None

    def run(self, shared: bool, stamp=None) -> None:
        """`stamp`: the plan's generation, when steps repack only as it changes (the packed
        filters are then looked at only when it has: 9 calls cost 1.5 us at batch 1)."""
        if stamp is None or stamp != self._stamp:
            packed = [call.packed() for call in self.calls]
            if self._program is None or any(a is not b for a, b in zip(packed, self._packed,
                                                                        strict=True)):
                self._program = team.Program([call.step() for call in self.calls])
                self._packed = packed
            self._stamp = stamp
        for step, fresh in self._fresh:
            self._program.readdress(step, fresh[0])
        self._program.run(shared)


class Bound:
    """A step bound to a runner's buffers: `pre(values)` (Python reading the values before the
    kernels: None, or copies into the kernels' inputs), `calls` (KernelCalls, in order), then
    `post(values)` (Python: setting the step's outputs in the values, or all of a step that
    runs no kernel). `bookkeeping`: a step with no kernel whose post only names values anew
    (a reshape, an alias), so that it can sit in a segment (its post runs after it)."""

    def __init__(self, post, calls=(), pre=None, bookkeeping: bool = False, reads=None):
        self.post, self.calls, self.pre = post, list(calls), pre
        self.bookkeeping = bookkeeping
        # reads: [(value, holder)] when all the pre does is point each holder at its value's
        # array, flat (a runner can then skip its steps' Python: Runner._run_direct)
        self.reads = reads

    @property
    def joins(self) -> bool:
        """Whether it can be part of a segment: every kernel has a task, or it has none and
        only keeps the books."""
        if not self.calls:
            return self.bookkeeping
        return all(call.task is not None for call in self.calls)

    def __call__(self, values) -> None:
        if self.pre is not None:
            self.pre(values)
        for call in self.calls:
            call()
        self.post(values)


class Segment:
    """Consecutive bound steps whose kernels run as one team.Program: no Python between
    them, one handoff to the team's threads for the lot (or none, on a runner of one thread).
    Only the first step may have Python before its kernels."""

    def __init__(self, plan: Plan, bounds: list[Bound], shared: bool):
        self.plan = plan
        self.calls = [call for bound in bounds for call in bound.calls]
        # Steps of one chunk each stay on the calling thread: a helper taking one would only
        # move the step's data to the other core (at batch 1 with no step split, two threads
        # ran bottleneck in 169 us against 122 on one, inception-mini in 151 against 97)
        self.shared = shared and any(len(call.chunks) > 1 for call in self.calls)
        self.pre, self.reads = bounds[0].pre, bounds[0].reads
        self.posts = [bound.post for bound in bounds]
        self._programmed = Programmed(self.calls)

    def __call__(self, values) -> None:
        if self.pre is not None:
            self.pre(values)
        self.run_kernels()
        for post in self.posts:
            post(values)

    def run_kernels(self) -> None:
        if self.calls:  # (a segment of a Flatten and a Dropout runs no kernel)
            self._programmed.run(self.shared, self.plan.generation)


def _versions(params) -> tuple:
    """What a step's packed weights were made from: each parameter's array and its version
    (any update changes one of them), None parameters left out."""
    return tuple((id(p.data), p.version) for p in params if p is not None)


class ConvStep(Step):
    """A Conv2d (with the batch norm, activation and residual Add fused into it) on the
    direct-convolution kernel, blocked output."""

    def __init__(self, plan: Plan, conv: Conv2d, source: int, out: int, bn=None,
                 activation=None, residual: int | None = None, pool=None):
        self.plan, self.conv, self.bn = plan, conv, bn
        self.inputs = [source] + ([residual] if residual is not None else [])
        self.outputs = [out]
        self.residual = residual
        self.activation = activation or (0, 0.0, 0.0)
        c, h, w = plan.shapes[source]
        self.in_hw = (h, w)
        self.geometry = conv.geometry((h, w))
        self.out_hw = self.geometry.out_hw
        self.groups = conv.groups
        self.blocked_input = plan.blocked[source]
        self.kernel = "conv"
        self.tile = blocked.choose_tile(conv.out_channels // conv.groups,
                                        self.out_hw[0] * self.out_hw[1], self.out_hw[1])
        if (not self.blocked_input and conv.groups == 1 and residual is None
                and blocked.takes_rows(conv.out_channels, conv.stride[1], self.out_hw[1])):
            self.kernel, self.tile = blocked.row_kernel(conv.out_channels)
        self.macs = conv.macs(plan.shapes[source], plan.shapes[out])
        self.fingerprint = None
        self.pool = False
        if pool is not None and self._pool_fits(pool.layer):
            tile = self.tile
            if self.kernel == "conv":
                tile = blocked.choose_tile(conv.out_channels, self.out_hw[0] * self.out_hw[1],
                                           self.out_hw[1], pooled=True)
            # the kernels' pooled stores pair a tile's positions and need whole filter tiles
            # (choose_tile(pooled=True) gives such a tile; the row kernel's is one block)
            if tile[0] % 2 == 0 and blocked.blocks(conv.out_channels) % tile[1] == 0:
                self.pool, self.tile, self.outputs = True, tile, [pool.outputs[0]]
        span = self._span_tile()
        if span is not None:
            self.kernel, self.tile = "conv_span", span
        # Output rows whose window hangs over the image's top or bottom skip the taps that
        # read the zero border only, the filters and offsets listed kernel row by kernel row
        # (a 3x3 layer on 8x8: a third of the taps of a quarter of the rows; resnet8 0.946 of
        # its time at batch 128 and 0.982 at batch 1, two threads)
        kh, kw = conv.kernel_size
        self.row_table = blocked.row_tap_table(h, self.out_hw[0], kh, conv.stride[0],
                                               conv.dilation[0], self.geometry.padding.top,
                                               c // conv.groups * kw)
        self.tap_order = None if self.row_table is None else blocked.row_major_taps(
            c // conv.groups, (kh, kw), blocked.LANES if self.blocked_input else 1)
        # a runner of one image may take Winograd instead (`_bind_winograd`), its products'
        # tile chosen for the grid of 2 x 2 tiles
        self.winograd_tile = (blocked.choose_tile(conv.out_channels, (h // 2) * (w // 2),
                                                  w // 2) if self._winograd_fits(c) else None)

    def modules(self, n: int, threads: int) -> list[tuple]:
        found = [(self.kernel, numpy.float32, self.tile), ("merge", numpy.float32, None)]
        if self.takes_winograd(n, threads):  # one image's bands, or the three calls
            found += ([("winograd_band", numpy.float32, self.winograd_tile)] if n == 1 else
                      [("winograd", numpy.float32, None),
                       ("conv", numpy.float32, self.winograd_tile)])
        return found

    def takes_winograd(self, n: int, threads: int) -> bool:
        """Whether a runner of n images on `threads` threads runs this step as Winograd
        (`_bind_winograd`, where it fits): one image, its calls split between the threads, or
        images one by one on one thread (a large batch's lanes, `Plan._in_lanes`) where
        WINOGRAD_LANES; one image only if the layer has `one_image_winograd_floor`
        multiply-adds or more. A batch run whole on several threads takes the direct kernel,
        split by images."""
        if self.winograd_tile is None:
            return False
        if n == 1:
            return self.macs >= one_image_winograd_floor()
        return threads == 1 and WINOGRAD_LANES

    def _winograd_fits(self, channels: int) -> bool:
        """Whether Winograd F(2x2, 3x3) serves this step (`blocked.winograd_sources`): a 3x3
        convolution of stride 1, dilation 1, one group and a padding of 1 on a blocked input
        of at least WINOGRAD_MIN_CHANNELS channels, to an even-sized output of as many
        filters, any shortcut blocked."""
        conv = self.conv
        pad = self.geometry.padding
        return (WINOGRAD and self.blocked_input and conv.groups == 1
                and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and (pad.top, pad.bottom, pad.left, pad.right)
                == (1, 1, 1, 1) and self.out_hw[0] % 2 == 0 and self.out_hw[1] % 2 == 0
                and min(channels, conv.out_channels) >= WINOGRAD_MIN_CHANNELS
                and (self.residual is None or self.plan.blocked[self.residual]))

    def _span_tile(self) -> tuple[int, int, int] | None:
        """The span kernel's tile (P, B, elements between two output columns' input pixels)
        where it serves this step (`blocked.conv_span_source`): column stride 1 (stride 2
        would be a module of its own for few layers, of the bench's networks fcn-mini's
        8 -> 16 4x4; not measured), rows of at least its P columns, a tile of 16 lanes of
        filters chosen, no pool taken in and a blocked shortcut if any; on a CPU with AVX-512
        (its 16 sums need 32 registers), at full or half rate. Of its tiles, the one that
        recomputes the fewest columns of a row, if that is few (`blocked.SPAN_MAX_WASTE`).
        At half rate (Zen 4), batch 128, two threads, one plan with it and one without
        alternated in one process, medians of 12 (2026-12-04 17:15 UTC): resnet8 0.930-0.992
        of the time (its steps: 16 -> 16 on 32x32 2.95 -> 2.82 and, with the shortcut,
        3.21 -> 2.96 ms, 32 -> 32 on 16x16 2.96 -> 2.75), mobilenet-mini 0.948, fcn-mini
        0.977, unet-mini 0.984, inception-mini, squeezenet-mini and bottleneck level; one
        image 0.86-1.05 (the host's spread either way)."""
        if not (kernels.wide_registers() and self.kernel == "conv" and self.conv.stride[1] == 1
                and self.tile[1] == 2 and not self.pool
                and (self.residual is None or self.plan.blocked[self.residual])):
            return None
        out_w = self.out_hw[1]

        def columns(tile) -> int:  # computed for a row of out_w
            return -(-out_w // tile[0]) * tile[0]

        fitting = [tile for tile in blocked.SPAN_TILES
                   if out_w >= tile[0] and columns(tile) <= blocked.SPAN_MAX_WASTE * out_w]
        if not fitting:
            return None
        return (*min(fitting, key=columns), blocked.LANES if self.blocked_input else 1)

    def _pool_fits(self, pool: Layer) -> bool:
        """Whether the MaxPool2d reading this step's output could be taken into its stores:
        2x2 windows of stride 2 on an even-sized output, no padding; no activation, ReLU or a
        clip; one group and no shortcut (the kernels' fast stores). In inference the pool's
        pass over the full-size output, a fifth of vggish's time outside its convolutions,
        is then not made."""
        out_h, out_w = self.out_hw
        if not (type(pool) is MaxPool2d and pool.kernel_size == (2, 2)
                and pool.stride == (2, 2) and out_h % 2 == 0 and out_w % 2 == 0):
            return False
        window = pool.geometry(self.out_hw)
        return (window.padding.is_zero and window.out_hw == (out_h // 2, out_w // 2)
                and self.activation[0] in (blocked.ACTIVATIONS["none"],
                                           blocked.ACTIVATIONS["relu"],
                                           blocked.ACTIVATIONS["clip"])
                and self.groups == 1 and self.residual is None)

    def needs_border(self) -> int:
        pad = self.geometry.padding
        return max(pad.top, pad.bottom, pad.left, pad.right)

    def may_overwrite_residual(self) -> bool:
        """Whether the kernel may write the output over a blocked shortcut's own buffer (the
        tile kernel reads each position's shortcut before it stores there, and stores a
        tile's clamped repeats of its last position from sums made before any store)."""
        return (self.residual is not None and self.plan.blocked[self.residual]
                and self.kernel in ("conv", "conv_span"))  # (Winograd's output side too)

    def folded(self):
        """The filters and bias with the batch norm folded in (float32)."""
        conv, bn = self.conv, self.bn
        weight = conv.weight.data.astype(numpy.float32)
        bias = (conv.bias.data.astype(numpy.float32) if conv.bias is not None
                else numpy.zeros(conv.out_channels, numpy.float32))
        if bn is not None:
            scale = 1.0 / numpy.sqrt(bn.running_var.astype(numpy.float64) + bn.eps)
            shift = -bn.running_mean.astype(numpy.float64) * scale
            if bn.weight is not None:
                scale = scale * bn.weight.data
                shift = shift * bn.weight.data + bn.bias.data
            weight = (weight * scale[:, None, None, None]).astype(numpy.float32)
            bias = (bias * scale + shift).astype(numpy.float32)
        return weight, bias

    def _fingerprint(self):
        params = [self.conv.weight, self.conv.bias]
        buffers = []
        if self.bn is not None:
            params += [self.bn.weight, self.bn.bias]
            buffers = [self.bn.running_mean, self.bn.running_var]
        return (_versions(params),
                tuple(id(b) for b in buffers))

    def prepare(self) -> None:
        fingerprint = self._fingerprint()
        if fingerprint == self.fingerprint:
            return
        weight, bias = self.folded()
        if self.winograd_tile is not None:
            self._pack_winograd(weight, bias)
        groups, k = self.groups, self.conv.out_channels
        per_group = k // groups
        lanes_in = blocked.LANES if self.blocked_input else 1
        self.filters = [blocked.pack_filters(weight[g * per_group : (g + 1) * per_group],
                                             self.tile[1], lanes_in, live_only=True)
                        for g in range(groups)]
        if self.tap_order is not None:
            lanes = blocked.LANES * self.tile[1]
            self.filters = [numpy.ascontiguousarray(
                f.reshape(-1, len(self.tap_order), lanes)[:, self.tap_order]).reshape(-1)
                for f in self.filters]
        self.biases = [blocked.pack_bias(bias[g * per_group : (g + 1) * per_group], per_group,
                                         self.tile[1], numpy.float32) for g in range(groups)]
        self.fingerprint = fingerprint

    def _pack_winograd(self, weight, bias) -> None:
        """The filters transformed, G g G^T (4 x 4 per filter and channel, in float64), as 16
        1x1 convolutions' packed filters; the bias for the output side."""
        k = weight.shape[0]
        transformed = blocked.winograd_filters(weight)
        tile = self.winograd_tile
        # the 16 positions' packed filters one after the other (what one image's bands read),
        # and each position's as a view of them (what a runner of several images' calls read)
        self.winograd_packed = numpy.concatenate([
            blocked.pack_filters(u, tile[1], blocked.LANES, live_only=True)
            for u in transformed])
        self.winograd_filters = numpy.split(self.winograd_packed, 16)
        self.winograd_zeros = blocked.pack_bias(None, k, tile[1], numpy.float32)
        self.winograd_bias = blocked.pack_bias(bias, k, 1, numpy.float32)

    def _winograd_target(self, rt):
        """(out value, its buffer, its flat target and strides and origin, the shortcut's flat
        array and [has_residual, its strides, its origin]) of the Winograd output side."""
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        out_flat, strides, out_origin = rt.target(out_value)
        shortcut, res = _EMPTY, [0, 0, 0, 0, 0, 0]
        if self.residual is not None:
            held = rt.buffer(self.residual)
            shortcut = held.data.reshape(-1)
            res = [1, *held.strides(), held.origin()]
        return out_value, out, out_flat, strides, out_origin, shortcut, res

    def _winograd_bands(self, threads: int) -> int:
        """How many bands of tile rows one image's Winograd runs in: the fewest that divide
        its tile rows, give each thread one and keep a band's v and m (16 grids of its tiles
        for the input's and the output's blocks) within `blocked.WINOGRAD_BAND_BYTES`; one
        row a band where none does."""
        th, tw = self.out_hw[0] // 2, self.out_hw[1] // 2
        per_row = blocked.winograd_row_bytes(blocked.blocks(self.conv.in_channels)
                                             + blocked.blocks(self.conv.out_channels), tw)
        for bands in range(1, th + 1):
            if (th % bands == 0 and bands >= threads
                    and th // bands * per_row <= blocked.WINOGRAD_BAND_BYTES):
                return bands
        return th

    def _bind_winograd_one(self, rt):
        """One image in bands of tile rows (`_winograd_bands`), a chunk each
        (`blocked.WINOGRAD_BAND_SOURCE`): the band's input tiles transformed into its own v,
        its sixteen 1x1 convolutions into its own m, m transformed back into the output
        (+ bias, shortcut, activation, pool)."""
        conv, lanes = self.conv, blocked.LANES
        c, k = conv.in_channels, conv.out_channels
        th, tw = self.out_hw[0] // 2, self.out_hw[1] // 2
        cbs, kbs = blocked.blocks(c), blocked.blocks(k)
        bands = self._winograd_bands(rt.threads_for(self.macs))
        rows = th // bands
        plane = rows * tw * lanes
        skew = blocked.WINOGRAD_SKEW
        v_stride, m_stride = cbs * plane + skew, kbs * plane + skew
        v = numpy.zeros((bands, 16 * v_stride), numpy.float32)
        m = numpy.zeros((bands, 16 * m_stride), numpy.float32)
        x = rt.buffer(self.inputs[0])
        bs, ks, rs, cs = x.strides()
        flat = x.data.reshape(-1)
        module = blocked.compiled("winograd_band", numpy.float32, self.winograd_tile)
        offsets = blocked.tap_offsets(c, (1, 1), (1, 1), (plane, tw * lanes, lanes), lanes,
                                      live_only=True)
        tiles = len(self.winograd_zeros) // (lanes * self.winograd_tile[1])
        out_value, out, out_flat, (obs, oks, ors, ocs), out_origin, shortcut, res = (
            self._winograd_target(rt))
        code = self.activation[0]
        alpha, beta = numpy.float32(self.activation[1]), numpy.float32(self.activation[2])
        per = len(self.winograd_packed) // 16
        products = blocked.geometry_vector(
            b0=0, b1=1, i0=0, i1=rows * tw, k0=0, k1=tiles, x_batch=cbs * plane,
            x_row=tw * lanes, x_col=lanes, stride_h=1, stride_w=1, out_batch=kbs * plane,
            out_block=plane, out_lane=1, out_row=tw * lanes, out_col=lanes, out_channels=k,
            out_store=kbs * lanes, out_w=tw)
        out_rows = rows if self.pool else 2 * rows  # a band's rows of the output
        chunks = []
        for band in range(bands):
            inputs = [0, 1, 0, cbs, bs, ks, rs, x.origin() - rs - cs + band * 2 * rows * rs,
                      cbs, rows, tw, v_stride]
            outputs = [0, 1, 0, kbs, kbs, rows, tw, m_stride, obs, oks, ors, ocs,
                       out_origin + band * out_rows * ors, code, int(self.pool), *res[:5],
                       res[5] + band * 2 * rows * res[3]]
            chunks.append((band, numpy.array([per, v_stride, m_stride, *inputs, *products,
                                              *outputs], numpy.int64)))
        call = KernelCall(module.winograd_band, chunks,
                          lambda g: (flat, self.winograd_packed, self.winograd_zeros, offsets,
                                     self.winograd_bias, out_flat, shortcut, v[g[0]], m[g[0]],
                                     g[1], alpha, beta),
                          module.winograd_band_task, lambda: self.fingerprint)

        def post(values):
            values[out_value] = out
        return Bound(post, [call])

    def _bind_winograd(self, rt):
        """A runner of several images (on one thread, `takes_winograd`): for each image, three
        calls: its input's tiles transformed into v, sixteen 1x1 convolutions of v into m, m
        transformed back into the output (+ bias, shortcut, activation, pool). v and m hold
        one image's (four times its input's and output's size), the same for every image of
        the runner. A lane of 16 images whole in each call instead left the cache (vggish at
        batch 128 20.7-23.1 ms against 16.8-19.7 direct)."""
        conv, n, lanes = self.conv, rt.n, blocked.LANES
        c, k = conv.in_channels, conv.out_channels
        th, tw = self.out_hw[0] // 2, self.out_hw[1] // 2
        cbs, kbs = blocked.blocks(c), blocked.blocks(k)
        plane = th * tw * lanes
        x = rt.buffer(self.inputs[0])
        bs, ks, rs, cs = x.strides()
        flat = x.data.reshape(-1)
        # the 16 transformed tiles' blocks a cache line more than their size apart
        skew = blocked.WINOGRAD_SKEW
        v_stride, m_stride = cbs * plane + skew, kbs * plane + skew
        v = numpy.zeros(16 * v_stride, numpy.float32)
        m = numpy.zeros(16 * m_stride, numpy.float32)
        threads = rt.threads_for(self.macs)
        transforms = blocked.compiled("winograd")
        module = blocked.compiled("conv", numpy.float32, self.winograd_tile)
        offsets = blocked.tap_offsets(c, (1, 1), (1, 1), (plane, tw * lanes, lanes), lanes,
                                      live_only=True)
        tiles = len(self.winograd_zeros) // (lanes * self.winograd_tile[1])
        products = [(p, blocked.geometry_vector(
            b0=0, b1=1, i0=0, i1=th * tw, k0=0, k1=tiles, x_batch=cbs * plane,
            x_origin=p * v_stride, x_row=tw * lanes, x_col=lanes, stride_h=1, stride_w=1,
            out_batch=kbs * plane, out_block=plane, out_lane=1, out_row=tw * lanes,
            out_col=lanes, out_origin=p * m_stride, out_channels=k, out_store=kbs * lanes,
            out_w=tw)) for p in range(16)]
        zero = numpy.float32(0)
        out_value, out, out_flat, (obs, oks, ors, ocs), out_origin, shortcut, res = (
            self._winograd_target(rt))
        code = self.activation[0]
        alpha, beta = numpy.float32(self.activation[1]), numpy.float32(self.activation[2])
        calls = []
        for image in range(n):
            inputs = [numpy.array([0, 1, k0, k1, bs, ks, rs, x.origin() - rs - cs + image * bs,
                                   cbs, th, tw, v_stride], numpy.int64)
                      for _, _, k0, k1 in blocked.work_splits(1, cbs, threads)]
            calls.append(KernelCall(transforms.winograd_input, inputs, lambda g: (flat, v, g),
                                    transforms.winograd_input_task))
            calls.append(KernelCall(
                module.conv, products,
                lambda g: (v, self.winograd_filters[g[0]], self.winograd_zeros, offsets, m,
                           _EMPTY, g[1], zero, zero),
                module.conv_task, lambda: self.fingerprint))
            shifted = res[:5] + [res[5] + image * res[1]]
            outputs = [numpy.array([0, 1, k0, k1, kbs, th, tw, m_stride, obs, oks, ors, ocs,
                                    out_origin + image * obs, code, int(self.pool), *shifted],
                                   numpy.int64)
                       for _, _, k0, k1 in blocked.work_splits(1, kbs, threads)]
            calls.append(KernelCall(transforms.winograd_output, outputs,
                                    lambda g: (m, self.winograd_bias, out_flat, shortcut, g,
                                               alpha, beta),
                                    transforms.winograd_output_task, lambda: self.fingerprint))

        def post(values):
            values[out_value] = out
        return Bound(post, calls)

    def bind(self, rt):
        if self.takes_winograd(rt.n, rt.threads):
            return self._bind_winograd_one(rt) if rt.n == 1 else self._bind_winograd(rt)
        conv, n = self.conv, rt.n
        pad = self.geometry.padding
        c = conv.in_channels
        source = self.inputs[0]
        copy_in = None
        if self.blocked_input:
            x = rt.buffer(source)
            bs, ks, rs, cs = x.strides()
            origin = x.origin() - pad.top * rs - pad.left * cs
            flat = x.data.reshape(-1)
            channel_step = (c // self.groups) // blocked.LANES * ks  # a group's blocks
        else:  # a plain input: copied into the interior of a zero-padded buffer, by a kernel
            h, w = self.in_hw
            xp = numpy.zeros((n, c, h + pad.top + pad.bottom, w + pad.left + pad.right),
                             numpy.float32)
            copy_in = [None]  # the input at this call, flat
            bs, ks, rs, cs = _plain_strides(xp.shape)
            origin = 0
            flat = xp.reshape(-1)
            channel_step = (c // self.groups) * ks
        offsets = self.plan.offsets(self, (ks, rs, cs), c // self.groups)
        taps = 0
        if self.tap_order is not None:  # (blocked.row_tap_table)
            taps = len(self.tap_order)
            offsets = numpy.concatenate([offsets[self.tap_order], self.row_table.reshape(-1)])
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        out_flat, (obs, oks, ors, ocs), out_origin = rt.target(out_value)
        per_group = conv.out_channels // self.groups
        fields = dict(x_batch=bs, x_row=rs, x_col=cs, stride_h=conv.stride[0],
                      stride_w=conv.stride[1], out_batch=obs, out_block=oks, out_lane=1,
                      out_row=ors, out_col=ocs, out_channels=per_group,
                      out_store=blocked.blocks(per_group) * blocked.LANES,
                      out_w=self.out_hw[1], act=self.activation[0], pool=int(self.pool),
                      taps=taps)
        residual, plain_residual = _EMPTY, None
        if self.residual is not None:
            if self.plan.blocked[self.residual]:
                shortcut = rt.buffer(self.residual)
                rbs, rks, rrs, rcs = shortcut.strides()
                fields.update(res_batch=rbs, res_block=rks, res_lane=1, res_row=rrs,
                              res_col=rcs, res_origin=shortcut.origin(), has_residual=1)
                residual = shortcut.data.reshape(-1)
            else:  # a plain shortcut, contiguous at each call
                plain_residual = self.residual
                rbs, rks, rrs, rcs = _plain_strides((n, *self.plan.shapes[self.residual]))
                fields.update(res_batch=rbs, res_block=8 * rks, res_lane=rks, res_row=rrs,
                              res_col=rcs, res_origin=0, has_residual=1)
        module = blocked.compiled(self.kernel, numpy.float32, self.tile)
        per_group_blocks = per_group // blocked.LANES
        alpha, beta = numpy.float32(self.activation[1]), numpy.float32(self.activation[2])
        tiles = len(self.biases[0]) // (blocked.LANES * self.tile[1])
        threads = rt.threads_for(self.macs * n)
        calls = []
        for g in range(self.groups):
            for b0, b1, i0, i1 in blocked.work_splits(  # a pooling window's rows together
                    n, self.out_hw[0] * self.out_hw[1], threads,
                    2 * self.out_hw[1] if self.pool else 1):
                geometry = blocked.geometry_vector(b0=b0, b1=b1, i0=i0, i1=i1, k0=0, k1=tiles,
                                     x_origin=origin + g * channel_step,
                                     out_origin=out_origin + g * per_group_blocks * oks,
                                     **fields)
                if self.residual is not None:
                    geometry[blocked.G["res_origin"]] += g * per_group_blocks * (
                        fields["res_block"])
                calls.append((g, geometry))
        shortcut = [residual]
        call = KernelCall(module.conv, calls,
                          lambda c: (flat, self.filters[c[0]], self.biases[c[0]], offsets,
                                     out_flat, shortcut[0], c[1], alpha, beta),
                          module.conv_task if plain_residual is None else None,
                          lambda: self.fingerprint)

        calls = [call]
        if copy_in is not None:
            pad_chunks = [numpy.array([b0, b1, c, *self.in_hw, bs, ks, rs,
                                       pad.top * rs + pad.left * cs], dtype=numpy.int64)
                          for b0, b1, _, _ in blocked.work_splits(n, 1, threads)]
            merge = blocked.compiled("merge")
            calls.insert(0, KernelCall(merge.pad_copy, pad_chunks,
                                       lambda g: (copy_in[0], flat, g), merge.pad_copy_task,
                                       fresh=copy_in))

        def pre(values):
            if copy_in is not None:
                copy_in[0] = numpy.ascontiguousarray(values[source],
                                                     numpy.float32).reshape(-1)
            if plain_residual is not None:
                shortcut[0] = numpy.ascontiguousarray(values[plain_residual],
                                                      numpy.float32).reshape(-1)

        def post(values):
            values[out_value] = out
        if plain_residual is not None:
            return Bound(post, calls, pre)
        if copy_in is not None:
            return Bound(post, calls, pre, reads=[(source, copy_in)])
        return Bound(post, calls)


_EMPTY = numpy.zeros(1, numpy.float32)

# Winograd F(2x2, 3x3) for the 3x3 convolutions that fit (ConvStep._winograd_fits), on runners of
# one image and on a large batch's lanes (ConvStep.takes_winograd, WINOGRAD_LANES): there the direct
# kernel is at the cores' peak of multiply-adds and Winograd does 2.25x fewer. Two threads, one
# image, alternated processes, 2026-12-03 11:21 UTC (us): vggish 112.7-131.6 against 144.9-148.2
# direct, resnet8 74.2-75.9 / 80.2-93.6, fcn-mini 118.5-126.2 / 144.7-150.4, unet-mini 234-242 /
# 265-288; with 16 channels and more instead of 32, vggish, resnet8 and unet-mini were slower (its
# products have too few taps a tile), with 64 vggish lost its gain. Batch 128 on Zen 3 (lanes of
# images on one thread each), the whole network, direct / Winograd alternated in one process, best
# of 6, five runs, 2026-12-03 22:25-22:34 UTC: two threads vggish 1.22-1.35x, resnet8 1.05-1.09x,
# unet-mini 1.01-1.07x, fcn-mini 0.91-1.09x (once below 1); one thread 1.31x, 1.11x, 1.06x, 1.07x
# (taking it only from 64 input channels or with a pool: 1.02-1.26x). On Zen 4 (AVX-512 at half
# rate), the same measurement, medians of 7, 2026-12-04 05:25 UTC: two threads vggish 1.36x, resnet8
# 1.10x, fcn-mini 1.07x, unet-mini 1.06x; one thread 1.41x, 1.11x, 1.07x, 1.03x. CONVNET_WINOGRAD=0
# switches it off.
WINOGRAD = os.environ.get("CONVNET_WINOGRAD", "1") != "0"
WINOGRAD_MIN_CHANNELS = 32
# Whether several images on one thread (a large batch's lanes) take it too. On a Zen 5 host
# (512-bit multiply-adds at full rate) image by image had been level with the direct kernel's
# 8 x 32 lanes tile on one thread (2026-12-03 morning: vggish 3.30-4.77 against 4.37-4.60 ms);
# with the products' tiles and packing since, batch 128 on two threads, the whole network,
# direct / Winograd alternated in one process, medians of 10 rounds, three processes
# (2026-12-05 11:50 UTC): vggish 1.29-1.32x, resnet8 1.05-1.07x, fcn-mini 1.03-1.04x,
# unet-mini 1.02-1.04x, inception-mini level. So every CPU takes it.
WINOGRAD_LANES = True
# Where the CPU has AVX-512 (at half rate, Zen 4; at full rate, Zen 5), one image takes
# Winograd only in layers of this many multiply-adds or more: below, its products save less
# than its transforms and passes cost. Two threads, one image, each network's plans with and
# without the floor in one process. Zen 4, medians of 12 alternations x 200 images
# (2026-12-04 15:05 UTC, the three calls a layer then), us, Winograd everywhere / the floor /
# direct everywhere: resnet8 165.3 / 153.5 / 155.7, 163.6 / 157.5 / 150.7 and 166.2 / 158.5 /
# 161.1 (its two 3x3 layers that fit, 2.4 M multiply-adds each, go direct), fcn-mini 241.0 /
# 241.1 / 241.8 (level), unet-mini 443.0 / 464.0 / 443.7 and 462.3 / 467.2 / 461.6, vggish
# (4.7-9.4 M, all kept: the first two are one plan, apart by the noise) 272.6 / 263.8 /
# 301.6. Zen 5, the bands of `_bind_winograd_one`, medians of rounds of 200 images grouped by
# the cross-core round trip (2026-12-05 07:45 UTC), near (0.05 us) / far (0.4): vggish 104.7
# / 105.0 / 125.3 and 147.4 / 146.4 / 144.7, resnet8 63.8 / 63.9 / 64.3 and 90.6 / 83.3 /
# 85.9, fcn-mini 103.0 / 102.0 / 103.5 and 139.0 / 130.9 / 136.7, unet-mini 205.0 / 206.2 /
# 208.8 and 291.2 / 276.0 / 277.0. AVX2 hosts were not measured: no floor there.
WINOGRAD_ONE_IMAGE_MIN_MACS = 4 << 20


def one_image_winograd_floor() -> int:
    """The multiply-adds (per image) below which one image's layer keeps the direct kernel:
    WINOGRAD_ONE_IMAGE_MIN_MACS on CPUs with AVX-512 (at half or full rate), else 0."""
    return WINOGRAD_ONE_IMAGE_MIN_MACS if kernels.wide_registers() else 0


class DepthwiseStep(Step):
    """A depthwise Conv2d (groups = in = out channels), batch norm and activation fused."""

    def __init__(self, plan: Plan, conv: Conv2d, source: int, out: int, bn=None,
                 activation=None):
        self.plan, self.conv, self.bn = plan, conv, bn
        self.inputs, self.outputs = [source], [out]
        self.activation = activation or (0, 0.0, 0.0)
        self.geometry = conv.geometry(plan.shapes[source][1:])
        self.out_hw = self.geometry.out_hw
        self.positions = 8
        self.macs = conv.macs(plan.shapes[source], plan.shapes[out])
        self.fingerprint = None

    needs_border = ConvStep.needs_border
    folded = ConvStep.folded
    _fingerprint = ConvStep._fingerprint

    def modules(self, n: int, threads: int) -> list[tuple]:
        return [("depthwise", numpy.float32, blocked.depthwise_tile(self.conv.kernel_size))]

    def prepare(self) -> None:
        fingerprint = self._fingerprint()
        if fingerprint == self.fingerprint:
            return
        weight, bias = self.folded()
        self.filters, self.bias = blocked.pack_depthwise(weight, bias, numpy.float32)
        self.fingerprint = fingerprint

    def bind(self, rt):
        conv, n = self.conv, rt.n
        x = rt.buffer(self.inputs[0])
        pad = self.geometry.padding
        bs, ks, rs, cs = x.strides()
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        out_flat, (obs, oks, ors, ocs), out_origin = rt.target(out_value)
        module = blocked.compiled("depthwise", numpy.float32,
                                  blocked.depthwise_tile(conv.kernel_size))
        cb = blocked.blocks(conv.out_channels)
        calls = []
        for b0, b1, i0, i1 in blocked.work_splits(n, self.out_hw[0] * self.out_hw[1],
                                                  rt.threads_for(self.macs * n * 4)):
            calls.append(blocked.geometry_vector(
                b0=b0, b1=b1, i0=i0, i1=i1, k0=0, k1=cb, x_batch=bs, x_block=ks, x_row=rs,
                x_col=cs, x_origin=x.origin() - pad.top * rs - pad.left * cs,
                stride_h=conv.stride[0], stride_w=conv.stride[1], out_batch=obs,
                out_block=oks, out_row=ors, out_col=ocs, out_origin=out_origin,
                out_w=self.out_hw[1], act=self.activation[0], kernel_h=conv.kernel_size[0],
                kernel_w=conv.kernel_size[1], dilation_h=conv.dilation[0],
                dilation_w=conv.dilation[1]))
        flat = x.data.reshape(-1)
        alpha, beta = numpy.float32(self.activation[1]), numpy.float32(self.activation[2])
        call = KernelCall(module.depthwise, calls,
                          lambda geometry: (flat, self.filters, self.bias, out_flat, geometry,
                                            alpha, beta), module.depthwise_task,
                          lambda: self.fingerprint)

        def post(values):
            values[out_value] = out
        return Bound(post, [call])


class TransposedConvStep(Step):
    """A ConvTranspose2d (one group), activation fused, as S_h x S_w convolutions on the
    direct-convolution kernel (`blocked.transposed_phases`): each phase a stride-1
    correlation of the blocked input with its taps, written S rows and S columns apart into
    the blocked output."""

    def __init__(self, plan: Plan, layer, source: int, out: int, activation=None):
        self.plan, self.layer = plan, layer
        self.inputs, self.outputs = [source], [out]
        self.activation = activation or (0, 0.0, 0.0)
        _, h, w = plan.shapes[source]
        self.out_hw = plan.shapes[out][1:]
        pad = layer.geometry((h, w)).padding
        self.phases = [blocked.transposed_phases(n, o, layer.kernel_size[a], layer.stride[a],
                                                 crop, layer.dilation[a])
                       for a, (n, o, crop) in enumerate(zip((h, w), self.out_hw,
                                                            (pad.top, pad.left), strict=True))]
        self.border = max(max(blocked.phase_border(phases, n))
                          for phases, n in zip(self.phases, (h, w), strict=True))
        self.tile = blocked.choose_tile(layer.out_channels, self.out_hw[0] * self.out_hw[1])
        self.macs = layer.macs(plan.shapes[source], plan.shapes[out])
        self.fingerprint = None

    def needs_border(self) -> int:
        return self.border

    def modules(self, n: int, threads: int) -> list[tuple]:
        return [("conv", numpy.float32, self.tile)]

    def prepare(self) -> None:
        layer = self.layer
        params = [layer.weight, layer.bias]
        fingerprint = _versions(params)
        if fingerprint == self.fingerprint:
            return
        weight = layer.weight.data.astype(numpy.float32)  # C, K, KH, KW
        self.filters = {(py, px): blocked.pack_filters(blocked.phase_filters(weight, rows, cols),
                                                       self.tile[1], blocked.LANES,
                                                       live_only=True)
                        for py, _, rows, _, _ in self.phases[0]
                        for px, _, cols, _, _ in self.phases[1]}
        bias = None if layer.bias is None else layer.bias.data.astype(numpy.float32)
        self.bias = blocked.pack_bias(bias, layer.out_channels, self.tile[1], numpy.float32)
        self.fingerprint = fingerprint

    def bind(self, rt):
        layer, n = self.layer, rt.n
        x = rt.buffer(self.inputs[0])
        bs, ks, rs, cs = x.strides()
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        out_flat, (obs, oks, ors, ocs), out_origin = rt.target(out_value)
        k = layer.out_channels
        sh, sw = layer.stride
        module = blocked.compiled("conv", numpy.float32, self.tile)
        tiles = len(self.bias) // (blocked.LANES * self.tile[1])
        threads = rt.threads_for(self.macs * n)
        offsets, calls = {}, []
        for py, rows_out, rows, first_y, step_y in self.phases[0]:
            for px, cols_out, cols, first_x, step_x in self.phases[1]:
                kernel = (len(rows), len(cols)) if rows and cols else (0, 0)
                offsets[py, px] = blocked.tap_offsets(layer.in_channels, kernel,
                                                      (step_y, step_x), (ks, rs, cs),
                                                      blocked.LANES, live_only=True)
                for b0, b1, i0, i1 in blocked.work_splits(n, rows_out * cols_out, threads):
                    calls.append(((py, px), blocked.geometry_vector(
                        b0=b0, b1=b1, i0=i0, i1=i1, k0=0, k1=tiles, x_batch=bs, x_row=rs,
                        x_col=cs, x_origin=x.origin() + first_y * rs + first_x * cs,
                        stride_h=1, stride_w=1, out_batch=obs, out_block=oks, out_lane=1,
                        out_row=sh * ors, out_col=sw * ocs,
                        out_origin=out_origin + py * ors + px * ocs, out_channels=k,
                        out_store=blocked.blocks(k) * blocked.LANES, out_w=cols_out,
                        act=self.activation[0])))
        flat = x.data.reshape(-1)
        alpha, beta = numpy.float32(self.activation[1]), numpy.float32(self.activation[2])
        call = KernelCall(module.conv, calls,
                          lambda c: (flat, self.filters[c[0]], self.bias, offsets[c[0]],
                                     out_flat, _EMPTY, c[1], alpha, beta),
                          module.conv_task, lambda: self.fingerprint)

        def post(values):
            values[out_value] = out
        return Bound(post, [call])


class PoolStep(Step):
    """MaxPool2d / AvgPool2d over a blocked input."""

    module_kinds = ("pool",)

    def __init__(self, plan: Plan, layer, source: int, out: int):
        self.plan, self.layer = plan, layer
        self.inputs, self.outputs = [source], [out]
        self.in_hw = plan.shapes[source][1:]
        self.geometry = layer.geometry(self.in_hw)

    def bind(self, rt):
        layer, n = self.layer, rt.n
        x = rt.buffer(self.inputs[0])
        pad = self.geometry.padding
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        bs, ks, rs, cs = x.strides()
        out_flat, (obs, oks, ors, ocs), out_origin = rt.target(out_value)
        cb = blocked.blocks(x.channels)
        module = blocked.compiled("pool")
        out_hw = self.geometry.out_hw
        work = n * cb * blocked.LANES * out_hw[0] * out_hw[1] * (
            layer.kernel_size[0] * layer.kernel_size[1])
        calls = []
        for b0, b1, k0, k1 in blocked.work_splits(n, cb, rt.threads_for(work)):
            calls.append(numpy.array([
                b0, b1, k0, k1, bs, ks, rs, cs, x.origin(), self.in_hw[0], self.in_hw[1], obs,
                oks, ors, ocs, out_origin, *out_hw, *layer.kernel_size,
                *layer.stride, pad.top, pad.left], dtype=numpy.int64))
        flat = x.data.reshape(-1)
        if isinstance(layer, AvgPool2d):
            include = bool(layer.count_include_pad)
            call = KernelCall(module.avg_pool, calls, lambda g: (flat, out_flat, g, include),
                              module.avg_pool_task)
        else:
            call = KernelCall(module.max_pool, calls, lambda g: (flat, out_flat, g),
                              module.max_pool_task)

        def post(values):
            values[out_value] = out
        return Bound(post, [call])


class ResizeStep(Step):
    """Resize / Upsample (nearest or linear) over a blocked input, into a blocked output: each
    output pixel reads two input rows and two columns with the weights of the layer's own
    interpolation plan (nearest: one of each, weight 1)."""

    module_kinds = ("pool",)

    def __init__(self, plan: Plan, layer, source: int, out: int):
        self.plan, self.layer = plan, layer
        self.inputs, self.outputs = [source], [out]
        _, h, w = plan.shapes[source]
        self.out_hw = plan.shapes[out][1:]
        rows, cols = layer._plans((h, w), numpy.float32)
        self.nearest = layer.mode == "nearest"
        self.rows, self.row_weights = rows.two_taps(numpy.float32)
        self.cols, self.col_weights = cols.two_taps(numpy.float32)

    def bind(self, rt):
        n = rt.n
        x = rt.buffer(self.inputs[0])
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        bs, ks, rs, _ = x.strides()
        out_flat, (obs, oks, ors, _), out_origin = rt.target(out_value)
        cb = blocked.blocks(x.channels)
        out_h, out_w = self.out_hw
        work = n * cb * blocked.LANES * out_h * out_w * (1 if self.nearest else 4)
        calls = [numpy.array([b0, b1, k0, k1, bs, ks, rs, x.origin(), x.shape[3], obs, oks, ors,
                              out_origin, out_h, out_w, int(self.nearest)], dtype=numpy.int64)
                 for b0, b1, k0, k1 in blocked.work_splits(n, cb, rt.threads_for(work))]
        module = blocked.compiled("pool")
        flat = x.data.reshape(-1)
        call = KernelCall(module.resize, calls,
                          lambda g: (flat, out_flat, self.rows, self.row_weights, self.cols,
                                     self.col_weights, g), module.resize_task)

        def post(values):
            values[out_value] = out
        return Bound(post, [call])


def _interpolates_by_two(layer, hw) -> bool:
    """Whether every output pixel of a Resize layer mixes at most two input pixels per axis
    (what ResizeStep's kernel reads; true of its nearest and linear plans)."""
    return all(plan.by_two for plan in layer._plans(hw, numpy.float32))


class RearrangeStep(Step):
    """PixelShuffle, PixelUnshuffle, DepthToSpace and SpaceToDepth on the blocked layout: each
    output lane copied from the input channel and pixel that the layer's own forward sends
    there (a table made by running it once on the channel numbers)."""

    module_kinds = ("merge",)

    def __init__(self, plan: Plan, layer, source: int, out: int):
        self.plan, self.layer = plan, layer
        self.inputs, self.outputs = [source], [out]
        c, r = plan.shapes[source][0], layer.block
        self.to_space = isinstance(layer, (PixelShuffle, DepthToSpace))
        # To space: channel numbers (1, C, 1, 1) -> (1, C/r^2, r, r), the input channel of each
        # output channel and phase; to depth: (c*r + u)*r + v as (1, C, r, r) -> (1, C*r^2, 1, 1).
        numbers = numpy.arange(c if self.to_space else c * r * r, dtype=numpy.float64)
        with no_grad():
            table = layer.forward(numbers.reshape(1, c, *((1, 1) if self.to_space else (r, r))))
        self.source = numpy.ascontiguousarray(table.reshape(-1), dtype=numpy.int64)

    def bind(self, rt):
        n = rt.n
        x = rt.buffer(self.inputs[0])
        bs, ks, rs, _ = x.strides()
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        out_flat, (obs, oks, ors, _), out_origin = rt.target(out_value)
        k, out_h, out_w = self.plan.shapes[out_value]
        calls = [numpy.array([b0, b1, k0, k1, k, self.layer.block, int(self.to_space), bs, ks,
                              rs, x.origin(), obs, oks, ors, out_origin, out_h, out_w],
                             dtype=numpy.int64)
                 for b0, b1, k0, k1 in blocked.work_splits(
                     n, blocked.blocks(k), rt.threads_for(n * k * out_h * out_w))]
        module = blocked.compiled("merge")
        flat = x.data.reshape(-1)
        call = KernelCall(module.rearrange, calls, lambda g: (flat, out_flat, self.source, g),
                          module.rearrange_task)

        def post(values):
            values[out_value] = out
        return Bound(post, [call])


class GlobalPoolStep(Step):
    """GlobalAvgPool2d: blocked input -> plain (N, C, 1, 1)."""

    module_kinds = ("pool",)

    def __init__(self, plan: Plan, source: int, out: int):
        self.plan = plan
        self.inputs, self.outputs = [source], [out]
        self.channels, self.h, self.w = plan.shapes[source]

    def bind(self, rt):
        n = rt.n
        x = rt.buffer(self.inputs[0])
        cb = blocked.blocks(self.channels)
        bs, ks, rs, cs = x.strides()
        module = blocked.compiled("pool")
        flat = x.data.reshape(-1)
        calls = [numpy.array([b0, b1, k0, k1, bs, ks, rs, cs, x.origin(), self.h, self.w],
                             dtype=numpy.int64)
                 for b0, b1, k0, k1 in blocked.work_splits(
                     n, cb, rt.threads_for(n * cb * blocked.LANES * self.h * self.w))]
        out_value = self.outputs[0]
        out = rt.kept((n, cb * blocked.LANES))
        call = KernelCall(module.global_avg_pool, calls, lambda g: (flat, out, g),
                          module.global_avg_pool_task)
        result = out[:, : self.channels].reshape(n, self.channels, 1, 1)
        rt.rows[out_value] = out  # a DenseStep reading this reads the rows as they lie

        def post(values):
            values[out_value] = result
        return Bound(post, [call])


class ActivationStep(Step):
    """An activation on a blocked tensor (its interior: f(0) need not be 0)."""

    def __init__(self, plan: Plan, layer, source: int, out: int):
        self.plan, self.layer = plan, layer
        self.inputs, self.outputs = [source], [out]

    def run(self, values, rt):
        x = values[self.inputs[0]]
        out = rt.buffer(self.outputs[0])
        out.interior[...] = self.layer.forward(x.interior)
        values[self.outputs[0]] = out


class AffineStep(Step):
    """A BatchNorm2d in eval mode on a blocked tensor: x * scale + shift per channel."""

    def __init__(self, plan: Plan, bn: BatchNorm2d, source: int, out: int):
        self.plan, self.bn = plan, bn
        self.inputs, self.outputs = [source], [out]

    def run(self, values, rt):
        bn = self.bn
        scale = 1.0 / numpy.sqrt(bn.running_var.astype(numpy.float64) + bn.eps)
        shift = -bn.running_mean * scale
        if bn.weight is not None:
            scale, shift = scale * bn.weight.data, shift * bn.weight.data + bn.bias.data
        lanes = blocked.blocks(bn.num_features) * blocked.LANES
        s = numpy.zeros(lanes, numpy.float32)
        t = numpy.zeros(lanes, numpy.float32)
        s[: bn.num_features], t[: bn.num_features] = scale, shift
        shape = (-1, 1, 1, blocked.LANES)
        x = values[self.inputs[0]]
        out = rt.buffer(self.outputs[0])
        numpy.multiply(x.interior, s.reshape(shape), out=out.interior)
        out.interior[...] += t.reshape(shape)
        values[self.outputs[0]] = out


class MergeStep(Step):
    """Add, Sub, Mul or Div of blocked tensors on the merge kernel (a plain (N, C, 1, 1) one,
    such as a squeeze-and-excitation gate, is put in lanes and broadcast; another plain one is
    blocked first)."""

    module_kinds = ("merge",)

    OPS = {Add: "add", Sub: "sub", Mul: "mul", Div: "div"}

    def __init__(self, plan: Plan, layer, sources: list[int], out: int):
        self.plan, self.layer = plan, layer
        self.inputs, self.outputs = sources, [out]
        self.op = next(blocked.MERGE_OPS[name] for kind, name in self.OPS.items()
                       if isinstance(layer, kind))

    def bind(self, rt):
        n, plan = rt.n, self.plan
        readers, operands = [], []  # how each input reaches the kernel; (flat, strides, origin)
        for source in self.inputs:
            channels, h, w = plan.shapes[source]
            if plan.blocked[source]:
                x = rt.buffer(source)
                operands.append((x.data.reshape(-1), x.strides(), x.origin()))
            elif (h, w) == (1, 1) and source in rt.gates:  # a DenseStep's padded rows
                lanes = rt.gates[source]
                operands.append((lanes.reshape(-1), (lanes.shape[1], blocked.LANES, 0, 0), 0))
            elif (h, w) == (1, 1):  # a gate: its channels put in lanes, zero past C
                lanes = numpy.zeros((n, blocked.blocks(channels) * blocked.LANES),
                                    numpy.float32)
                operands.append((lanes.reshape(-1), (lanes.shape[1], blocked.LANES, 0, 0), 0))

                def read(values, source=source, lanes=lanes, channels=channels):
                    lanes[:, :channels] = values[source].reshape(n, channels)
                readers.append(read)
            else:
                kept = blocked.empty_blocked(n, channels, (h, w), 0)
                operands.append((kept.data.reshape(-1), kept.strides(), kept.origin()))
                readers.append(lambda values, source=source, kept=kept: blocked.to_blocked(
                    values[source], 0, kept))
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        channels, h, w = plan.shapes[out_value]
        target = rt.target(out_value)
        module = blocked.compiled("merge")
        cb = blocked.blocks(channels)
        splits = blocked.work_splits(n, cb, rt.threads_for(n * cb * blocked.LANES * h * w))
        calls = []
        # Div leaves 0/0 in the lanes past C: the kernel zeroes them, as every reader expects.
        rest = channels % blocked.LANES
        zero_from = rest if rest and self.op == blocked.MERGE_OPS["div"] else blocked.LANES
        for first, second in [(operands[0], operands[1])] + [(target, more)
                                                              for more in operands[2:]]:
            chunks = [numpy.array([b0, b1, k0, k1, h, w, *first[1], first[2], *second[1],
                                   second[2], *target[1], target[2], cb - 1, zero_from],
                                  dtype=numpy.int64)
                      for b0, b1, k0, k1 in splits]
            calls.append(KernelCall(module.merge, chunks,
                                    lambda g, a=first[0], b=second[0]: (a, b, target[0], g,
                                                                        self.op),
                                    module.merge_task))

        def pre(values):
            for read in readers:
                read(values)

        def post(values):
            values[out_value] = out
        return Bound(post, calls, pre if readers else None)


class ConcatStep(Step):
    """Concat along channels of blocked tensors whose channel counts (all but the last) are
    multiples of 8: block ranges copied side by side."""

    module_kinds = ("merge",)

    def __init__(self, plan: Plan, sources: list[int], out: int):
        self.plan = plan
        self.inputs, self.outputs = sources, [out]

    def bind(self, rt):
        n, plan = rt.n, self.plan
        out_value = self.outputs[0]
        out = rt.buffer(out_value)
        target, to = out.data.reshape(-1), out.strides()
        module = blocked.compiled("merge")
        calls, at = [], 0
        for source in self.inputs:
            x = rt.buffer(source)
            channels, h, w = plan.shapes[source]
            count = blocked.blocks(channels)
            if source in plan.views:  # written in place by the step that made it
                at += count
                continue
            strides, origin = x.strides(), x.origin()
            chunks = [numpy.array([b0, b1, k0, k1, h, w, *strides, origin, *strides, origin,
                                   *to, out.origin() + at * to[1], -1, blocked.LANES],
                                  dtype=numpy.int64)
                      for b0, b1, k0, k1 in blocked.work_splits(
                          n, count, rt.threads_for(n * count * blocked.LANES * h * w))]
            flat = x.data.reshape(-1)
            calls.append(KernelCall(module.merge, chunks,
                                    lambda g, flat=flat: (flat, flat, target, g,
                                                          blocked.MERGE_OPS["copy"]),
                                    module.merge_task))
            at += count

        def post(values):
            values[out_value] = out
        return Bound(post, calls, bookkeeping=True)


class AliasStep(Step):
    """A layer that is the identity in eval mode (Dropout): its output is its input."""

    def __init__(self, source: int, out: int):
        self.inputs, self.outputs = [source], [out]

    def bind(self, rt):
        (source,), (out,) = self.inputs, self.outputs
        for known in (rt.rows, rt.gates):
            if source in known:
                known[out] = known[source]

        def alias(values):
            values[out] = values[source]
        return Bound(alias, bookkeeping=True)


class FlattenStep(Step):
    """Flatten: a blocked (N, C, H, W) copied out to (N, C*H*W), a plain one reshaped."""

    def __init__(self, plan: Plan, source: int, out: int):
        self.plan = plan
        self.inputs, self.outputs = [source], [out]

    def bind(self, rt):
        source, out_value = self.inputs[0], self.outputs[0]
        shape = (rt.n, *self.plan.shapes[source])
        flat_shape = (rt.n, -1)
        if not self.plan.blocked[source]:
            if source in rt.rows:  # (N, C, 1, 1) rows flattened are the same rows
                rt.rows[out_value] = rt.rows[source]

            def reshape(values):
                values[out_value] = values[source].reshape(flat_shape)
            return Bound(reshape, bookkeeping=True)
        out = rt.kept(shape)
        result = out.reshape(flat_shape)

        def go(values):
            blocked.from_blocked(values[source], out)
            values[out_value] = result
        return Bound(go)


class DenseStep(Step):
    """Linear on a plain (N, in) array, with a ReLU after it taken in: a matrix product into a
    kept buffer, the bias and the ReLU in place. After a Flatten of a blocked tensor it reads
    that tensor's interior as it lies, (N, C/8 * H * W * 8), with its weight's columns put in
    that order (zero for the lanes past C): the Flatten is taken in."""

    module_kinds = ("merge",)

    def __init__(self, plan: Plan, layer, source: int, out: int, activation=None,
                 flattened: bool = False):
        self.plan, self.layer = plan, layer
        self.activation = activation or (0, 0.0, 0.0)
        self.inputs, self.outputs = [source], [out]
        self.flattened = flattened

    def prepare(self) -> None:
        params = [self.layer.weight, self.layer.bias]
        fingerprint = _versions(params)
        if fingerprint == self.fingerprint:
            return
        weight = self.layer.weight.data  # (out, in), or a 1x1 Conv2d's (out, in, 1, 1)
        weight = weight.reshape(weight.shape[0], -1)
        if self.flattened:  # (out, C*H*W) in (c, h, w) order -> (out, C/8, H, W, 8)
            c, h, w = self.plan.shapes[self.inputs[0]]
            lanes = blocked.LANES
            full = numpy.zeros((weight.shape[0], blocked.blocks(c) * lanes, h, w),
                               weight.dtype)
            full[:, :c] = weight.reshape(-1, c, h, w)
            weight = full.reshape(-1, blocked.blocks(c), lanes, h, w).transpose(
                0, 1, 3, 4, 2).reshape(weight.shape[0], -1)
        self.weight_t = numpy.ascontiguousarray(weight.T, numpy.float32)  # (in, out)
        self.bias = None if self.layer.bias is None else self.layer.bias.data
        # the kernel's: a whole tile of columns past any output, zero (blocked.dense_source);
        # a layer of at most 16 outputs only its one tile (its weight is read from memory at
        # each piece of the batch, the layers between evicting it: vggish's Linear(2048, 10)
        # at 80 columns took 0.46-0.73 ms of a batch of 128, onnxruntime's Gemm 0.12)
        outs = weight.shape[0]
        width = (blocked.DENSE_IMAGE_TILE if outs <= blocked.DENSE_IMAGE_TILE
                 else blocked.blocks(outs) * blocked.LANES + blocked.DENSE_TILE)
        self.weight_kernel = numpy.zeros((weight.shape[1], width), numpy.float32)
        self.weight_kernel[:, :outs] = self.weight_t
        self.bias_kernel = numpy.zeros(width, numpy.float32)
        if self.bias is not None:
            self.bias_kernel[:outs] = self.bias
        self.fingerprint = fingerprint

    def bind(self, rt):
        source, out_value = self.inputs[0], self.outputs[0]
        n, (inputs, outs) = rt.n, self.weight_t.shape
        rows = self._rows(rt)
        if rows is not None and n * inputs * outs <= DENSE_KERNEL_MAX_MACS:
            return self._bind_kernel(rt, rows)
        out = rt.kept((n, outs))
        result = out.reshape((n, *self.plan.shapes[out_value]))
        if self.flattened:
            def read(values):
                return values[source].interior.reshape(n, -1)
        else:
            def read(values):
                return values[source].reshape(n, -1)
        code, alpha, beta = self.activation
        codes = blocked.ACTIVATIONS

        def go(values):
            numpy.matmul(read(values), self.weight_t, out=out)
            if self.bias is not None:
                numpy.add(out, self.bias, out=out)
            if code == codes["relu"]:
                numpy.maximum(out, 0, out=out)
            elif code == codes["clip"]:
                numpy.clip(out, alpha, beta, out=out)
            elif code == codes["hardsigmoid"]:
                numpy.multiply(out, alpha, out=out)
                numpy.add(out, beta, out=out)
                numpy.clip(out, 0, 1, out=out)
            elif code == codes["sigmoid"]:
                numpy.negative(out, out=out)
                numpy.exp(out, out=out)
                numpy.add(out, 1, out=out)
                numpy.reciprocal(out, out=out)
            values[out_value] = result
        return Bound(go)

    def _rows(self, rt):
        """The input as a flat array and its row stride, where the kernel can read it in place
        at bind time: a blocked tensor with no border (flattened), a global pooling's rows or
        another DenseStep's; else None."""
        source = self.inputs[0]
        if self.flattened:
            x = rt.buffer(source)
            return (x.data.reshape(-1), x.data[0].size) if x.border == 0 else None
        found = rt.rows.get(source)
        return None if found is None else (found.reshape(-1), found.shape[1])

    def _bind_kernel(self, rt, rows):
        """The product on the compiled kernel, into rows padded to whole blocks of 8 with
        zeros (so that a MergeStep can take them as a gate's lanes)."""
        out_value = self.outputs[0]
        n, (inputs, outs) = rt.n, self.weight_t.shape
        padded = blocked.blocks(outs) * blocked.LANES
        out = rt.kept((n, padded))
        out[:, outs:] = 0  # (the kernel writes the first outs columns at each call)
        rt.rows[out_value] = out
        rt.gates[out_value] = out
        result = out[:, :outs].reshape((n, *self.plan.shapes[out_value]))
        x, x_row = rows
        code, alpha, beta = self.activation
        threads = rt.threads_for(n * inputs * outs)
        if n >= threads:
            splits = [(part.start, part.stop, 0, outs) for part in thread_slices(n, threads)]
        elif outs <= blocked.DENSE_IMAGE_TILE:  # one tile (and all its weight has)
            splits = [(b, b + 1, 0, outs) for b in range(n)]
        else:  # one image: its outputs split, in whole blocks of 8
            per = blocked.blocks(-(-outs // threads)) * blocked.LANES
            splits = [(b, b + 1, o, min(o + per, outs)) for b in range(n)
                      for o in range(0, outs, per)]
        width = self.weight_kernel.shape[1]
        chunks = [numpy.array([n0, n1, o0, o1, inputs, width, x_row, padded, code],
                              dtype=numpy.int64) for n0, n1, o0, o1 in splits]
        module = blocked.compiled("merge")
        alpha, beta = numpy.float32(alpha), numpy.float32(beta)
        flat = out.reshape(-1)
        call = KernelCall(module.dense, chunks,
                          lambda g: (x, self.weight_kernel.reshape(-1), self.bias_kernel,
                                     flat, g, alpha, beta),
                          module.dense_task, lambda: self.fingerprint)

        def post(values):
            values[out_value] = result
        return Bound(post, [call])


# The most multiply-adds a DenseStep runs on the compiled kernel; larger products go to BLAS,
# which holds to one thread here (a Python step between the team's programs). With tiles of
# 8 images x 32 outputs the kernel was ahead of it up to the largest measured: one thread, a
# batch of 128 in one piece, 400 -> 120 0.22 -> 0.16 ms, 2048 -> 64 0.50 -> 0.34, 4096 -> 512
# 6.5 -> 5.5; two threads 0.47x BLAS's time on all three (lenet5 at batch 128 0.86 -> 0.74 ms).
DENSE_KERNEL_MAX_MACS = 1 << 28


# Activations a DenseStep applies in place.
_DENSE_ACTIVATIONS = {blocked.ACTIVATIONS[name] for name in ("relu", "clip", "hardsigmoid",
                                                             "sigmoid")}


class FallbackStep(Step):
    """Any other layer: its own NumPy forward on plain (N, C, H, W) arrays."""

    def __init__(self, layer: Layer, sources: list[int], outs: list[int]):
        self.layer = layer
        self.inputs, self.outputs = sources, outs

    def run(self, values, rt):
        arrays = [_plain(values[s]) for s in self.inputs]
        out = self.layer.forward(arrays if self.layer.multi_input else arrays[0])
        outs = out if self.layer.multi_output else (out,)
        for slot, array in zip(self.outputs, outs, strict=True):
            values[slot] = array


def _plain(value):
    return blocked.from_blocked(value) if isinstance(value, blocked.Blocked) else value


# -- the plan ----------------------------------------------------------------------------------
class Plan:
    """The steps of one model for one set of per-sample input shapes (see the module doc)."""

    def __init__(self, model: Layer, input_shapes: list[tuple]):
        self.model = model
        self.graph = graph = flatten(model)
        self.shapes: list = [None] * graph.values
        for value, shape in zip(graph.inputs, input_shapes, strict=True):
            self.shapes[value] = tuple(shape)
        for node in graph.nodes:
            given = [self.shapes[v] for v in node.inputs]
            out = node.layer.output_shape(given if node.layer.multi_input else given[0])
            outs = out if node.layer.multi_output else [out]
            for value, shape in zip(node.outputs, outs, strict=True):
                self.shapes[value] = tuple(shape)
        self.macs = sum(node.layer.macs(self.shapes[node.inputs[0]], self.shapes[node.outputs[0]])
                        for node in graph.nodes if not node.layer.multi_input
                        and len(self.shapes[node.inputs[0]]) == 3
                        and len(self.shapes[node.outputs[0]]) == 3)
        self.blocked = [False] * graph.values
        self.steps = self._build(graph)
        self.border = [0] * graph.values
        for step in self.steps:
            if (isinstance(step, (ConvStep, DepthwiseStep, TransposedConvStep))
                    and self.blocked[step.inputs[0]]):
                source = step.inputs[0]
                self.border[source] = max(self.border[source], step.needs_border())
        self.views = self._concat_views()
        for step in self.steps:  # a shortcut and the output written over it: one border
            if isinstance(step, ConvStep) and step.may_overwrite_residual():
                pair = (step.residual, step.outputs[0])
                if not any(value in self.views for value in pair):
                    border = max(self.border[value] for value in pair)
                    for value in pair:
                        self.border[value] = border
        self.useful = any(not isinstance(step, (FallbackStep, AliasStep)) for step in self.steps)
        # Images a thread runs at a time: a step's input and output of that many images fit in
        # PIECE_BYTES (measured on one thread, batch 128 in pieces of 8-128: bottleneck 10.8 ->
        # 8.5 ms at 16, mobilenet-mini 47.6 -> 39.6 at 8-16, inception-mini 11.1 -> 9.7 at 16-32,
        # convnetjs 18.2 -> 17.1; lenet5, whose activations fit anyway, 2.1 at 64-128).
        largest = max((blocked.blocks(shape[0]) * blocked.LANES * (shape[1] + 2 * border)
                       * (shape[2] + 2 * border) * 4
                       for shape, border in zip(self.shapes, self.border, strict=True)
                       if shape is not None and len(shape) == 3), default=1)
        self.piece = max(1, PIECE_BYTES // (2 * largest))
        self._offsets: dict = {}
        self.small_calls = 0  # calls on one image answered by the layers (too little work)
        self.generation = None
        self.switches = None
        self.compiled_ahead = False  # blocked.compile_ahead asked (at the first call)
        self.finite = None  # the kernels' finiteness check, once the plan has run (`answer`)
        self._lock = threading.Lock()
        self._runners: dict[tuple, list[Runner]] = {}  # (batch, threads) -> idle runners

    # -- building ------------------------------------------------------------------------------
    def _build(self, graph: Graph) -> list[Step]:
        readers: dict[int, list[Node]] = {}
        for node in graph.nodes:
            for value in node.inputs:
                readers.setdefault(value, []).append(node)
        outputs = set(graph.outputs)

        def sole_reader(value: int):
            """The node that alone reads `value` (and value is no model output), or None."""
            nodes = readers.get(value, [])
            return nodes[0] if len(nodes) == 1 and value not in outputs else None

        produced_before: set[int] = set(graph.inputs)
        fused: set[int] = set()  # nodes taken into a convolution
        steps: list[Step] = []
        for node in graph.nodes:
            if id(node) in fused:
                continue
            layer = node.layer
            source = node.inputs[0]
            if isinstance(layer, Conv2d) and self._conv_fits(layer, source):
                out, bn, activation, residual = node.outputs[0], None, None, None
                depthwise = layer.groups > 1 and layer.groups == layer.in_channels == (
                    layer.out_channels)
                nxt = sole_reader(out)
                if nxt is not None and type(nxt.layer) is BatchNorm2d:
                    bn, out = nxt.layer, nxt.outputs[0]
                    fused.add(id(nxt))
                    nxt = sole_reader(out)
                if nxt is not None and _activation(nxt.layer) is not None:
                    activation, out = _activation(nxt.layer), nxt.outputs[0]
                    fused.add(id(nxt))
                elif (nxt is not None and not depthwise and isinstance(nxt.layer, Add)
                      and len(nxt.inputs) == 2 and self._same_shape(nxt.inputs)):
                    other = nxt.inputs[1] if nxt.inputs[0] == out else nxt.inputs[0]
                    if other != out and other in produced_before:
                        residual, out = other, nxt.outputs[0]
                        fused.add(id(nxt))
                        after = sole_reader(out)
                        if after is not None and _activation(after.layer) is not None:
                            activation, out = _activation(after.layer), after.outputs[0]
                            fused.add(id(after))
                if depthwise:
                    if not self.blocked[source]:
                        steps.append(_ToBlocked(self, source))
                    steps.append(DepthwiseStep(self, layer, source, out, bn, activation))
                else:
                    pool = sole_reader(out)  # (taken in where ConvStep._pool_fits says)
                    step = ConvStep(self, layer, source, out, bn, activation, residual, pool)
                    steps.append(step)
                    if step.pool:
                        fused.add(id(pool))
                        out = step.outputs[0]
                self.blocked[out] = True
                produced_before.update([out, *node.outputs])
                continue
            if (type(layer) is ConvTranspose2d and layer.groups == 1
                    and layer.weight.data.dtype == numpy.float32
                    and len(self.shapes[source]) == 3):
                out, activation = node.outputs[0], None
                nxt = sole_reader(out)
                if nxt is not None and _activation(nxt.layer) is not None:
                    activation, out = _activation(nxt.layer), nxt.outputs[0]
                    fused.add(id(nxt))
                if not self.blocked[source]:
                    steps.append(_ToBlocked(self, source))
                steps.append(TransposedConvStep(self, layer, source, out, activation))
                self.blocked[out] = True
                produced_before.update([out, *node.outputs])
                continue
            if self._dense_fits(layer, source, node.outputs[0]):
                out = node.outputs[0]
                nxt = sole_reader(out)
                activation = None if nxt is None else _activation(nxt.layer)
                if activation is not None and activation[0] in _DENSE_ACTIVATIONS:
                    out = nxt.outputs[0]
                    fused.add(id(nxt))
                else:
                    activation = None
                flattened = (bool(steps) and isinstance(steps[-1], FlattenStep)
                             and steps[-1].outputs == [source] and sole_reader(source) is node
                             and self.blocked[steps[-1].inputs[0]])
                if flattened:
                    source = steps.pop().inputs[0]
                steps.append(DenseStep(self, layer, source, out, activation, flattened))
                produced_before.update([out, *node.outputs])
                continue
            step = self._step(node)
            steps.append(step)
            for value in step.outputs:
                self.blocked[value] = isinstance(step, (PoolStep, ResizeStep, RearrangeStep,
                                                        ActivationStep, AffineStep, MergeStep,
                                                        ConcatStep)) or (
                    isinstance(step, AliasStep) and self.blocked[step.inputs[0]])
            produced_before.update(node.outputs)
        return steps

    def _conv_fits(self, conv: Conv2d, source: int) -> bool:
        shape = self.shapes[source]
        if len(shape) != 3 or conv.weight.data.dtype != numpy.float32:
            return False
        out_h, out_w = conv.geometry(shape[1:]).out_hw
        if conv.groups == 1:
            # a 1x1 map (a squeeze-and-excitation gate) is a matrix product: NumPy's
            return out_h * out_w > 1 or self.blocked[source]
        if conv.groups == conv.in_channels == conv.out_channels:
            return True
        lanes = blocked.LANES
        return (self.blocked[source] and (conv.in_channels // conv.groups) % lanes == 0
                and (conv.out_channels // conv.groups) % lanes == 0)

    def _dense_fits(self, layer: Layer, source: int, out: int) -> bool:
        """A Linear on a flat input, or a 1x1 Conv2d (no padding, one group) between 1x1 maps
        (a squeeze-and-excitation gate): a matrix product."""
        shape = self.shapes[source]
        if type(layer) is Linear:
            return len(shape) == 1 and layer.weight.data.dtype == numpy.float32
        return (type(layer) is Conv2d and len(shape) == 3 and shape[1:] == (1, 1)
                and self.shapes[out][1:] == (1, 1) and layer.kernel_size == (1, 1)
                and layer.groups == 1 and layer.geometry((1, 1)).padding.is_zero
                and layer.weight.data.dtype == numpy.float32 and not self.blocked[source])

    def _same_shape(self, values) -> bool:
        return len({self.shapes[v] for v in values}) == 1

    def _step(self, node: Node) -> Step:
        layer = node.layer
        source = node.inputs[0]
        on_blocked = self.blocked[source]
        if type(layer) is Dropout:
            return AliasStep(source, node.outputs[0])
        if on_blocked and isinstance(layer, (MaxPool2d, AvgPool2d)):
            return PoolStep(self, layer, source, node.outputs[0])
        if type(layer) is Flatten and len(self.shapes[source]) == 3:
            return FlattenStep(self, source, node.outputs[0])
        if (on_blocked and isinstance(layer, Resize) and len(self.shapes[source]) == 3
                and _interpolates_by_two(layer, self.shapes[source][1:])):
            return ResizeStep(self, layer, source, node.outputs[0])
        if (on_blocked and type(layer) in (PixelShuffle, PixelUnshuffle, DepthToSpace,
                                           SpaceToDepth) and len(self.shapes[source]) == 3):
            return RearrangeStep(self, layer, source, node.outputs[0])
        if on_blocked and type(layer) is GlobalAvgPool2d:
            return GlobalPoolStep(self, source, node.outputs[0])
        if on_blocked and _activation(layer) is not None:
            return ActivationStep(self, layer, source, node.outputs[0])
        if on_blocked and type(layer) is BatchNorm2d:
            return AffineStep(self, layer, source, node.outputs[0])
        shapes = [self.shapes[v] for v in node.inputs]
        if (isinstance(layer, (Add, Sub, Mul, Div)) and any(self.blocked[v] for v in node.inputs)
                and all(len(s) == 3 for s in shapes)
                and len({s[0] for s in shapes}) == 1
                and all(s[1:] in (self.shapes[node.outputs[0]][1:], (1, 1)) for s in shapes)):
            return MergeStep(self, layer, node.inputs, node.outputs[0])
        if (type(layer) is Concat and all(self.blocked[v] for v in node.inputs)
                and all(len(s) == 3 for s in shapes)
                and layer._sample_axis(3) == 0
                and all(s[0] % blocked.LANES == 0 for s in shapes[:-1])):
            return ConcatStep(self, node.inputs, node.outputs[0])
        return FallbackStep(layer, node.inputs, node.outputs)

    def _concat_views(self) -> dict[int, tuple[int, int]]:
        """value -> (a Concat's output, block): inputs of a ConcatStep that their kernel writes
        straight into the Concat's buffer, from that block on, so that nothing is copied.
        Each must be a kernel step's output, read by the Concat alone, once, and no model
        output (as onnxruntime's planner does for Concat where the layout allows)."""
        writers = {step.outputs[0]: step for step in self.steps
                   if isinstance(step, (ConvStep, DepthwiseStep, TransposedConvStep, PoolStep,
                                        ResizeStep, RearrangeStep, MergeStep))}
        readers: dict[int, int] = {}
        for step in self.steps:
            for value in step.inputs:
                readers[value] = readers.get(value, 0) + 1
        outputs = set(self.graph.outputs)
        views = {}
        for step in self.steps:
            if not isinstance(step, ConcatStep):
                continue
            at = 0
            for value in step.inputs:
                if (value in writers and readers[value] == 1 and value not in outputs
                        and step.inputs.count(value) == 1):
                    views[value] = (step.outputs[0], at)
                at += blocked.blocks(self.shapes[value][0])
        return views

    # -- running -------------------------------------------------------------------------------
    def loaded(self) -> bool:
        return self.generation is not None

    def offsets(self, step, strides, channels: int):
        key = (id(step), strides)
        found = self._offsets.get(key)
        if found is None:
            lanes_in = blocked.LANES if step.blocked_input else 1
            found = blocked.tap_offsets(channels, step.conv.kernel_size, step.conv.dilation,
                                        strides, lanes_in, live_only=True)
            self._offsets[key] = found
        return found

    def run(self, arrays) -> list:
        """The outputs for `arrays`. A batch of more than `piece` images a thread runs in lanes
        (`_in_lanes`): each lane of about `piece` images through every step on one thread, so
        that a step's input and output stay in the cache for the step after it. A smaller
        batch runs whole, every step split between the team's threads by whole images
        (`convnet.core.team`: a handoff of a few microseconds, all the Python on the calling
        thread); one image is split by output positions."""
        n, threads = arrays[0].shape[0], num_threads()
        if not self.compiled_ahead:  # the kernels' modules, in the order the steps need them
            self.compiled_ahead = True
            runner = (self.piece, 1) if n > self.piece * threads else (n, threads)  # (lanes)
            blocked.compile_ahead([("merge", numpy.float32, None)] + [
                key for step in self.steps for key in step.modules(*runner)])
        if n > self.piece * threads:
            self._refresh()
            results = self._in_lanes(arrays, threads)
            if results is not None:
                return results
        return self._run_on(arrays, threads)

    def _in_lanes(self, arrays, threads: int):
        """The outputs for `arrays` in lanes: `threads` times as many as rounds of a piece per
        thread (or up to twice that, where it divides the batch), of sizes within one image of
        each other, each lane taken by the next free thread and run through every step on it
        (a runner of one thread), its outputs written into its rows of the whole batch's
        (made like the first lane's to finish); None when an output is not one row per image
        (then the caller runs the batch whole).

        No thread waits for another between steps: with the steps split instead (every step
        of a piece of the batch shared between the threads, each waiting for the other at the
        end of each), a core shared with another process held both threads at every step
        (mobilenet-mini beside a busy loop on the second core, two threads, batch 128, each
        build alone in a process: 22.4-24.2 ms against 10.9-12.4 in lanes; quiet, alternated
        processes, 7.50-12.53 against 7.53-8.14). The team hands out lanes as Python chunks;
        each thread's Python between the kernels (tens of us a lane) is small beside a lane's
        work at these batches. A helper's runner takes its buffers from the malloc arena
        training freed into: `backend.keep_freed_memory` keeps one for every thread."""
        n = arrays[0].shape[0]
        count = min(n, threads * -(-n // (self.piece * threads)))
        # Lanes of one size where up to twice as many divide the batch: a runner for each
        # thread instead of two (two threads, batch 128, alternated processes: resnet8 8
        # lanes of 16 against 6 of 21-22 6.74-6.99 ms against 7.34-7.44, unet-mini 32 of 4
        # against 20 of 6-7 23.4-23.9 against 25.8-27.5 and 231 MB at its peak against 296;
        # one thread level)
        count = next((more for more in range(count, 2 * count + 1, threads) if n % more == 0),
                     count)
        size, extra = divmod(n, count)
        starts = [lane * size + min(lane, extra) for lane in range(count + 1)]
        lanes = [slice(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]
        whole: list = [None]  # the batch's outputs, once a lane has shown their shapes
        fits = [True]
        made = threading.Lock()

        def run_lane(lane: slice) -> None:
            into = None if whole[0] is None else [out[lane] for out in whole[0]]
            with no_grad():  # (a helper thread's own mode: a fallback layer keeps no cache)
                outs = self._run_on([x[lane] for x in arrays], 1, into)
            if outs is None or any(len(out) != lane.stop - lane.start for out in outs):
                fits[0] = False
            elif into is None:
                with made:
                    if whole[0] is None:
                        whole[0] = [numpy.empty((n, *out.shape[1:]), out.dtype) for out in outs]
                for batch, out in zip(whole[0], outs, strict=True):
                    if batch.shape[1:] != out.shape[1:]:
                        fits[0] = False
                    else:
                        batch[lane] = out

        run_chunks(run_lane, lanes)
        return whole[0] if fits[0] else None

    def release(self) -> bool:
        """Drop the runners and their buffers (the model is training); made again when next
        run. Whether there were any."""
        with self._lock:
            held = bool(self._runners)
            self._runners.clear()
        return held

    def _refresh(self) -> None:
        """Repack what changed since the last call (under the lock)."""
        if self.generation == generation():  # nothing did (looked at again under the lock)
            return
        with self._lock:
            if self.generation != generation():
                if self.switches != switches():  # a train()/eval() switch: repack everything
                    for step in self.steps:
                        step.fingerprint = None
                    self.switches = switches()
                for step in self.steps:
                    step.prepare()
                self.generation = generation()
                self.finite = blocked.compiled("merge").finite

    def _run_on(self, arrays, threads: int, into=None) -> list | None:
        self._refresh()
        with self._lock:
            key = (arrays[0].shape[0], threads)
            idle = self._runners.get(key)
            rt = idle.pop() if idle else None
        if rt is None:
            rt = Runner(self, *key)
        try:
            return rt.run(arrays, into)
        finally:
            with self._lock:
                self._runners.setdefault(key, []).append(rt)
                if next(reversed(self._runners)) != key:
                    self._runners[key] = self._runners.pop(key)  # the most recent last
                while len(self._runners) > KEPT_RUNNERS:
                    self._runners.pop(next(iter(self._runners)))


# The runners (buffers for one batch size) a plan keeps: a model is mostly run at one or two
# batch sizes (full batches and the last, or batch 1).
KEPT_RUNNERS = 5  # a batch's lanes (one size or two), the last batch's, and one image
# Bytes of a step's input and output that a piece of the batch keeps within (the cache).
PIECE_BYTES = 4 << 20


class Runner:
    """A plan bound to one batch size: every blocked tensor has a buffer, reused by tensors
    whose lifetimes do not overlap (same shape only: the zero borders stay zero, since kernels
    write interiors only), and every step is a function with its geometry worked out. One
    runner serves one call at a time (the plan hands a second concurrent call another)."""

    def __init__(self, plan: Plan, n: int, threads: int):
        self.plan, self.n, self.threads = plan, n, threads
        self._kept: list = []
        self._kept_ids: set = set()  # (a view of a kept buffer has it as its base)
        self.buffers = self._assign_buffers()
        outputs = set(plan.graph.outputs)
        last: dict[int, int] = {}
        for index, step in enumerate(plan.steps):
            for value in step.inputs:
                last[value] = index
        # plain values the compiled kernels can read where they lie, set as steps bind:
        self.rows: dict[int, numpy.ndarray] = {}  # (N, width) rows: the value's C first
        self.gates: dict[int, numpy.ndarray] = {}  # (N, blocks * 8) rows, zero past C
        self.calls = []  # (segment or bound step, values to drop after it)
        self.bounds = []  # every step's Bound (bench.plan_profile times them one by one)
        run: list[Bound] = []
        drops: list[int] = []

        def close():
            if run:
                self.calls.append((Segment(plan, run[:], threads > 1), tuple(drops)))
                run.clear()
                drops.clear()
        for index, step in enumerate(plan.steps):
            bound = step.bind(self)
            self.bounds.append(bound)
            gone = [v for v in step.inputs if last[v] == index and v not in outputs
                    and v not in step.outputs]
            if bound.joins:
                if bound.pre is not None:
                    close()
                run.append(bound)
                drops.extend(gone)
            else:
                close()
                self.calls.append((bound, tuple(gone)))
        close()
        # outputs that may share a kept plain buffer: those of the steps writing one, and of
        # the layers' own forwards (a view of their input, say)
        shared = {v for step in plan.steps if not isinstance(step, _BLOCKED_WRITERS)
                  for v in step.outputs}
        self.outputs = [(v, plan.blocked[v], v in shared) for v in plan.graph.outputs]
        self.unblocks = {v: self._unblock(v) for v in plan.graph.outputs if plan.blocked[v]}
        # The direct path: where every call is a segment whose only Python before its kernels
        # points them at the plan's inputs, a call after the first runs just the kernels and
        # copies the outputs out (their arrays, recorded at the first call, are this runner's)
        inputs = plan.graph.inputs
        self._reads: list | None = None
        if all(isinstance(go, Segment) and (go.pre is None or go.reads is not None
                                            and all(v in inputs for v, _ in go.reads))
               for go, _ in self.calls):
            self._reads = [(inputs.index(v), holder) for go, _ in self.calls
                           for v, holder in go.reads or ()]
        self._segments = [go for go, _ in self.calls]
        self._direct: list | None = None  # per output: (shape, unblock) or a plain array
        # whether a call runs shared with the team or on the calling thread alone, where
        # some of its work would be handed to a helper (see convnet.core.thread_choice)
        self.shares = threads > 1 and any(not isinstance(go, Segment) or go.shared
                                          for go, _ in self.calls)

    def _assign_buffers(self) -> dict[int, blocked.Blocked]:
        plan = self.plan
        steps = plan.steps
        group: dict[int, int] = {}  # value -> the value whose buffer it shares (an alias)
        for step in steps:
            if isinstance(step, AliasStep) and plan.blocked[step.inputs[0]]:
                group[step.outputs[0]] = group.get(step.inputs[0], step.inputs[0])
        end: dict[int, int] = {}  # buffer owner -> the last step reading any of its values
        for index, step in enumerate(steps):
            for value in step.inputs:
                owner = group.get(value, value)
                end[owner] = index
        for value in plan.graph.outputs:
            end[group.get(value, value)] = len(steps)
        free: dict[tuple, list] = {}
        buffers: dict[int, blocked.Blocked] = {}
        releases: dict[int, list[int]] = {}
        def allocate(value: int, index: int) -> None:
            channels, h, w = plan.shapes[value]
            key = (channels, h, w, plan.border[value])
            pool = free.get(key)
            buffers[value] = pool.pop() if pool else blocked.empty_blocked(
                self.n, channels, (h, w), plan.border[value])
            releases.setdefault(end.get(value, index), []).append(value)

        def overwrite(step, index: int) -> bool:
            """A convolution's output written over its shortcut's buffer, where nothing reads
            the shortcut after it (its buffer is released at this step) and it is not the
            convolution's input (one thread, batch 128, whole plans: resnet8 34.1 against
            36.5 ms; onnxruntime sums into its shortcut too). The fused Add made the shapes
            one; the plan made the borders one unless a Concat's view is involved."""
            value, shortcut = step.outputs[0], step.residual
            owner = group.get(shortcut, shortcut)
            source = step.inputs[0]
            if (not step.may_overwrite_residual() or value in buffers
                    or owner not in releases.get(index, [])
                    or value in plan.views or owner in plan.views
                    or group.get(source, source) == owner
                    or plan.border[value] != plan.border[owner]):
                return False
            buffers[value] = buffers[owner]
            releases[index].remove(owner)
            releases.setdefault(end.get(value, index), []).append(value)
            return True

        for index, step in enumerate(steps):
            if isinstance(step, ConvStep) and overwrite(step, index):
                pass
            elif not isinstance(step, (AliasStep, FallbackStep, GlobalPoolStep, FlattenStep,
                                       DenseStep)):
                for value in step.outputs:
                    if not plan.blocked[value] or value in buffers:
                        continue
                    if value in plan.views:  # a window of its Concat's buffer, made now
                        whole, at = plan.views[value]
                        if whole not in buffers:
                            allocate(whole, index)
                        base = buffers[whole]
                        count = blocked.blocks(plan.shapes[value][0])
                        buffers[value] = blocked.Blocked(base.data[:, at : at + count],
                                                         plan.shapes[value][0], base.border)
                        continue
                    allocate(value, index)
            for value in step.outputs:
                owner = group.get(value)
                if owner is not None:
                    buffers[value] = buffers[owner]
            for value in releases.pop(index, []):
                channels, h, w = plan.shapes[value]
                free.setdefault((channels, h, w, plan.border[value]), []).append(buffers[value])
        return buffers

    def buffer(self, value: int) -> blocked.Blocked:
        return self.buffers[value]

    def target(self, value: int):
        """(flat array, (batch, block, row, column) strides, origin) where a kernel writes
        `value`: its buffer, or the window of a Concat's buffer it is written into."""
        if value in self.plan.views:
            whole, at = self.plan.views[value]
            base = self.buffers[whole]
            strides = base.strides()
            return base.data.reshape(-1), strides, base.origin() + at * strides[1]
        out = self.buffers[value]
        return out.data.reshape(-1), out.strides(), out.origin()

    def kept(self, shape) -> numpy.ndarray:
        """A plain float32 buffer of this runner's (outputs that share it are copied out)."""
        array = numpy.empty(shape, numpy.float32)
        self._kept.append(array)
        self._kept_ids.add(id(array))
        return array

    def threads_for(self, work: int) -> int:
        """Threads for a step of `work` multiply-adds (or reads): one when handing part of it
        to another thread costs more than it saves."""
        return self.threads if work >= SPLIT_MIN_WORK else 1

    def _unblock(self, value: int):
        """(KernelCall, its destination holder): the blocked output `value` into a plain
        (N, C, H, W) array, split by images over the team (the destination set per call)."""
        x = self.buffers[value]
        bs, ks, rs, _ = x.strides()
        n, c, h, w = x.shape
        cb = blocked.blocks(c)
        chunks = [numpy.array([b0, b1, k0, k1, c, h, w, bs, ks, rs, x.origin()], numpy.int64)
                  for b0, b1, k0, k1 in blocked.work_splits(
                      n, cb, self.threads_for(n * c * h * w))]
        module = blocked.compiled("merge")
        flat = x.data.reshape(-1)
        into = [None]
        call = KernelCall(module.unblock, chunks, lambda g: (into[0], flat, g),
                          module.unblock_task, fresh=into)
        return call, into

    def run(self, arrays, into=None) -> list | None:
        """The outputs for `arrays`: new arrays, or written into `into` (arrays shaped as the
        outputs, a piece of a batch's) and returned; None when an output has another shape
        than its place in `into`. Shared with the team or on the calling thread alone, as
        `choice` finds faster (the same bits either way)."""
        if self.shares:
            return run_chosen(self.__dict__, "choice", self._run, arrays, into)
        return self._run(arrays, into)

    def _run(self, arrays, into=None) -> list | None:
        if into is None and self._direct is not None:
            for x in arrays:
                if not x.flags.c_contiguous:
                    break
            else:
                return self._run_direct(arrays)
        plan = self.plan
        values: list = [None] * plan.graph.values
        for value, array in zip(plan.graph.inputs, arrays, strict=True):
            values[value] = array
        for go, drops in self.calls:
            go(values)
            for value in drops:
                values[value] = None
        if into is None and self._reads is not None and self._direct is None:
            self._record(values, arrays)
        results = []
        for index, (value, is_blocked, shared) in enumerate(self.outputs):
            out = values[value]
            target = None if into is None else into[index]
            if is_blocked:
                if target is None:
                    target = numpy.empty(out.shape, numpy.float32)
                elif target.shape != out.shape or target.dtype != numpy.float32:
                    return None
                out = self._unblock_into(self.unblocks[value], target)
            elif target is not None:
                if target.shape != out.shape:
                    return None
                target[...] = out
                out = target
            elif shared and (id(out.base) in self._kept_ids or any(
                    numpy.may_share_memory(out, kept) for kept in self._kept)):
                out = out.copy()
            results.append(out)
        return results

    @staticmethod
    def _unblock_into(unblock, target: numpy.ndarray) -> numpy.ndarray:
        """`target` (C-contiguous: a batch's rows) filled by an output's unblocking call."""
        call, destination = unblock
        destination[0] = target.reshape(-1)
        call()
        return target

    def _record(self, values, arrays) -> None:
        """Keep what the direct path returns: each output's shape and unblocking call where
        it is blocked, else its array, where that lies in a buffer of this runner's (not in
        an input's memory: the output of a Flatten of the input is a view of it)."""
        direct = []
        for value, is_blocked, _ in self.outputs:
            out = values[value]
            if is_blocked:
                direct.append((out.shape, self.unblocks[value]))
            elif (isinstance(out, numpy.ndarray)
                  and any(numpy.may_share_memory(out, kept) for kept in self._kept)
                  and not any(numpy.may_share_memory(out, x) for x in arrays)):
                direct.append(out)
            else:
                return
        self._direct = direct

    def _run_direct(self, arrays) -> list:
        """`run` without the steps' Python: the kernels pointed at `arrays` (C-contiguous),
        the outputs unblocked into new arrays or copied out of this runner's."""
        for index, holder in self._reads:
            holder[0] = arrays[index].reshape(-1)
        for segment in self._segments:
            segment.run_kernels()
        results = []
        for out in self._direct:
            if type(out) is tuple:
                shape, unblock = out
                results.append(self._unblock_into(unblock, numpy.empty(shape, numpy.float32)))
            else:
                results.append(out.copy())
        return results


# Steps whose outputs are blocked buffers (converted to new arrays when they are outputs).
_BLOCKED_WRITERS = (ConvStep, DepthwiseStep, TransposedConvStep, PoolStep, ResizeStep,
                    RearrangeStep, ActivationStep, AffineStep, MergeStep, ConcatStep)

# A step with less work than this (multiply-adds) runs on one thread. A run of steps goes to the
# team (convnet.core.team) as one program, each step's chunks taken as soon as the step before is
# done. Measured at batch 1, two threads, median of 21 interleaved rounds (12:55 UTC, load 1.3):
# thresholds of 0 to 30 thousand were best or within the noise of the best on the eight bench
# networks, 100 thousand 0-20% slower on the smaller ones, 300 thousand 5-35% (and never
# splitting: vggish 0.63 ms against 0.34-0.35, resnet8 0.28 against 0.16-0.17).
SPLIT_MIN_WORK = 20_000


class _ToBlocked(Step):
    """A plain tensor blocked for a kernel that reads only blocked ones (depthwise)."""

    def __init__(self, plan: Plan, value: int):
        self.plan = plan
        self.inputs, self.outputs = [value], [value]
        plan.blocked[value] = True

    def run(self, values, rt):
        value = self.inputs[0]
        values[value] = blocked.to_blocked(values[value], self.plan.border[value],
                                           rt.buffer(value))
