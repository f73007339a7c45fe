"""Model: any directed acyclic graph of layers, built with symbolic tensors (Keras' functional
API) and run in topological order (the order the calls were written in).

    x = cn.Input((3, 32, 32))
    a = cn.Conv2d(3, 16, 1)(x)
    b = cn.Conv2d(3, 16, 3, padding=1)(x)
    y = cn.ReLU()(cn.Concat(axis=1)([a, b]))
    head = cn.Linear(32, 10)(cn.Flatten()(cn.GlobalAvgPool2d()(y)))
    model = cn.Model(inputs=x, outputs=[head, y])
    scores, maps = model.forward(images)       # a tuple for several outputs, an array for one
    dx = model.backward([d_scores, None])      # one gradient per output (None: zero)

Each layer keeps its own forward and backward; the graph only orders the calls, hands each
tensor to the layers that read it, and in backward adds up the gradients of a tensor read by
several layers before passing them on (as Chainer's `Variable.backward` does). A layer called
twice (a siamese branch) shares its weights: its gradients add up, and the graph keeps each
call's cache apart. Arrays are freed as soon as the last layer reading them has run.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

from convnet.core.backend import array_module
from convnet.core.errors import ShapeError
from convnet.core.thread_choice import run_chosen
from convnet.nn import batchnorm, inference
from convnet.nn.layer import Layer, Shape, check_finite_input, grad_enabled
from convnet.nn.summary import summarize
from convnet.nn.symbolic import Node, SymbolicTensor, field_through


@dataclass(frozen=True)
class Step:
    """One layer call of the graph: the slots (tensor numbers) it reads and writes."""

    layer: Layer
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    shared: bool  # the layer is called more than once: its caches are kept per call


def _tensors(value, what: str) -> list[SymbolicTensor]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"Model: {what} must name at least one tensor")
    for index, item in enumerate(items):
        if not isinstance(item, SymbolicTensor):
            raise TypeError(f"Model: {what}[{index}] is {type(item).__name__}, not a tensor from "
                            f"cn.Input(...) or a layer called on one")
    return items


def _name_layers(nodes: list[Node]) -> None:
    """Final display names, unique in the model, in the order of the calls (conv1, conv2...):
    branches built from separate inputs were numbered apart while being written. Names the
    user gave are kept, and so are those of layers another model has already named."""
    counts: Counter = Counter()
    taken = {m.name for node in nodes for m in node.layer.modules()
             if m.user_named or getattr(m, "named_by_model", False)}
    seen: set[int] = set()
    for node in nodes:
        for module in node.layer.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            if module.user_named or getattr(module, "named_by_model", False):
                continue
            while True:
                counts[module.kind] += 1
                name = f"{module.kind}{counts[module.kind]}"
                if name not in taken:
                    break
            module.name = name
            module.named_by_model = True
            taken.add(name)
            if hasattr(module, "_geometry_cache"):
                del module._geometry_cache  # messages carry the name: recompute with it


class Model(Layer):
    """A graph of layers from `inputs` (cn.Input tensors) to `outputs`. See the module doc."""

    kind = "model"

    def __init__(self, inputs, outputs, *, strict: bool = True):
        super().__init__()
        self.input_tensors = _tensors(inputs, "inputs")
        self.output_tensors = _tensors(outputs, "outputs")
        self.strict = bool(strict)  # what the spec says; each window layer carries its own
        for index, tensor in enumerate(self.input_tensors):
            if tensor.node.layer is not None:
                raise ValueError(f"Model: inputs[{index}] ({tensor.name}) is computed by a "
                                 f"layer; inputs must be tensors made by cn.Input(...)")
        nodes = self._reachable_nodes()
        self._name_inputs()
        _name_layers(nodes)
        slot_of: dict[int, int] = {}
        for tensor in self.input_tensors:
            slot_of.setdefault(id(tensor), len(slot_of))
        for node in nodes:
            for tensor in node.outputs:
                slot_of[id(tensor)] = len(slot_of)
        uses: dict[int, int] = {}
        for node in nodes:
            uses[id(node.layer)] = uses.get(id(node.layer), 0) + 1
        self.steps = [Step(node.layer, tuple(slot_of[id(t)] for t in node.inputs),
                           tuple(slot_of[id(t)] for t in node.outputs),
                           uses[id(node.layer)] > 1) for node in nodes]
        self.nodes = nodes
        self.slots = len(slot_of)
        self.input_slots = tuple(slot_of[id(t)] for t in self.input_tensors)
        self.output_slots = tuple(slot_of[id(t)] for t in self.output_tensors)
        self.slot_names = [""] * self.slots
        for tensor in self.input_tensors:
            self.slot_names[slot_of[id(tensor)]] = tensor.name
        for node in nodes:
            for tensor in node.outputs:
                self.slot_names[slot_of[id(tensor)]] = tensor.name
        self.layers = list({id(node.layer): node.layer for node in nodes}.values())
        names = [layer.name for layer in self.layers]
        doubles = sorted({name for name in names if names.count(name) > 1})
        if doubles:
            raise ValueError(f"Model: layer names must be unique, {', '.join(doubles)} is used "
                             f"by more than one layer; rename one with .named('...')")
        self.input_shapes = [tuple(t.shape) for t in self.input_tensors]
        self.multi_input = len(self.input_tensors) > 1
        self.multi_output = len(self.output_tensors) > 1
        self._plans: dict[tuple, list] = {
            tuple(self.input_shapes): self._declared_shapes(slot_of)}
        self._readers = [0] * self.slots
        for step in self.steps:
            for slot in step.inputs:
                self._readers[slot] += 1
        self._takes_next = self._batchnorm_activation_pairs()
        self._backward_pairs = {index + 1: slot for index, slot in self._pairs().items()}
        self._node_caches: dict[int, list] = {}
        self._output_meta: dict[int, list] = {}
        self.kept: dict[int, object] = {}
        self.watched = None

    # -- construction ----------------------------------------------------------------------
    def _pairs(self) -> dict[int, int]:
        """{step: the slot between it and the next step} where the step's one output is read
        only by the next, neither called twice: the pairs a layer may run with the next
        (`_batchnorm_activation_pairs`, `Layer.takes_backward_of`)."""
        pairs = {}
        outputs = set(self.output_slots)
        for index, (step, following) in enumerate(itertools.pairwise(self.steps)):
            if (len(step.outputs) == 1 and following.inputs == step.outputs
                    and self._readers[step.outputs[0]] == 1 and step.outputs[0] not in outputs
                    and not step.shared and not following.shared):
                pairs[index] = step.outputs[0]
        return pairs

    def _batchnorm_activation_pairs(self) -> dict[int, int]:
        """The pairs (`_pairs`) of a batch norm and an activation it can take in
        (`batchnorm.takes_in`): forward runs the two as one (`BatchNorm2d.forward_activated`)."""
        return {index: slot for index, slot in self._pairs().items()
                if batchnorm.takes_in(self.steps[index].layer, self.steps[index + 1].layer)}

    def _reachable_nodes(self) -> list[Node]:
        given = {id(t) for t in self.input_tensors}
        seen: dict[int, Node] = {}
        stack = list(self.output_tensors)
        while stack:
            tensor = stack.pop()
            node = tensor.node
            if node.layer is None:
                if id(tensor) not in given:
                    raise ValueError(
                        f"Model: the outputs depend on the input '{tensor.name}' {tensor.shape}, "
                        f"which is not among inputs=; pass it in inputs=[...]")
                continue
            if id(node) not in seen:
                seen[id(node)] = node
                stack.extend(node.inputs)
        return sorted(seen.values(), key=lambda node: node.serial)

    def _name_inputs(self) -> None:
        taken: set[str] = set()
        for tensor in self.input_tensors:
            base, name, index = tensor.input_name, tensor.input_name, 1
            while name in taken:
                index += 1
                name = f"{base}_{index}"
            tensor.input_name = name
            taken.add(name)

    def _declared_shapes(self, slot_of) -> list:
        shapes = [None] * self.slots
        for tensor in self.input_tensors:
            shapes[slot_of[id(tensor)]] = tuple(tensor.shape)
        for node in self.nodes:
            for tensor in node.outputs:
                shapes[slot_of[id(tensor)]] = tuple(tensor.shape)
        return shapes

    # -- shapes ------------------------------------------------------------------------------
    @property
    def input_shape(self) -> Shape:
        """The first input's per-sample shape (C, H, W)."""
        return self.input_shapes[0]

    def children(self):
        return [(layer.name, layer) for layer in self.layers]

    def plan(self, input_shapes) -> list:
        """Every tensor's per-sample shape for these input shapes, checked layer by layer (a
        fully convolutional model takes any size its arithmetic fits)."""
        key = tuple(tuple(int(v) for v in shape) for shape in input_shapes)
        if key in self._plans:
            return self._plans[key]
        if len(key) != len(self.input_slots):
            raise ValueError(f"Model: has {len(self.input_slots)} input(s), received "
                             f"{len(key)} shape(s)")
        shapes = [None] * self.slots
        for slot, shape, declared in zip(self.input_slots, key, self.input_shapes, strict=True):
            if len(shape) != len(declared):
                raise ShapeError(f"Model: input '{self.slot_names[slot]}' is declared as "
                                 f"{declared}, received a per-sample shape {shape}")
            shapes[slot] = shape
        for step in self.steps:
            given = [shapes[s] for s in step.inputs]
            out = step.layer.output_shape(given if step.layer.multi_input else given[0])
            outs = out if step.layer.multi_output else [out]
            for slot, shape in zip(step.outputs, outs, strict=True):
                shapes[slot] = tuple(shape)
        if len(self._plans) > 16:
            self._plans.pop(next(iter(list(self._plans)[1:])))  # keep the declared one
        self._plans[key] = shapes
        return shapes

    def output_shape(self, input_shape):
        shapes = self.plan(input_shape if self.multi_input else [input_shape])
        outs = [shapes[slot] for slot in self.output_slots]
        return outs if self.multi_output else outs[0]

    def output_shapes(self, input_shapes=None) -> list[Shape]:
        """The per-sample shape of every output, for the declared or the given input shapes."""
        shapes = self.plan(input_shapes or self.input_shapes)
        return [shapes[slot] for slot in self.output_slots]

    def receptive_field(self, field, input_shape):
        """The field after the model's first output: through every path, the widest."""
        shapes = self.plan(input_shape if self.multi_input else [input_shape])
        fields = [None] * self.slots
        for slot in self.input_slots:
            fields[slot] = field
        for step in self.steps:
            after = field_through(step.layer, [fields[s] for s in step.inputs],
                                  [shapes[s] for s in step.inputs])
            for slot in step.outputs:
                fields[slot] = after
        return fields[self.output_slots[0]]

    # -- computation -------------------------------------------------------------------------
    def _arrays(self, inputs) -> list:
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.input_slots):
            names = ", ".join(self.slot_names[s] for s in self.input_slots)
            raise TypeError(f"Model: expected {len(self.input_slots)} input array(s) ({names}), "
                            f"received {len(inputs)}")
        for slot, x in zip(self.input_slots, inputs, strict=True):
            check_finite_input(x, f"Model input '{self.slot_names[slot]}'")
            if x.ndim < 1:
                raise ValueError(f"Model: input '{self.slot_names[slot]}' must have a batch axis, "
                                 f"received shape {tuple(x.shape)}")
        self.plan([tuple(x.shape[1:]) for x in inputs])  # the arithmetic, checked for this size
        return list(inputs)

    def forward(self, *inputs, keep=()):
        """Arrays in the order of `inputs=` (or one list); an array back for one output, a
        tuple for several. `keep`: slots whose arrays stay in `self.kept` (for pictures of the
        inside: activation maps, Grad-CAM)."""
        if not keep:
            results = inference.answer(self, inputs)  # (a plan run before: checks passed)
            if results is not None:
                self.kept = {}
                return tuple(results) if self.multi_output else results[0]
        arrays = self._arrays(inputs)
        self.kept = {}
        if not keep and inference.applies(self, arrays):
            results = inference.run(self, arrays)
            if results is not None:
                return tuple(results) if self.multi_output else results[0]
        return run_chosen(self.__dict__, "_forward_choice", self._forward_steps, arrays, keep)

    def _forward_steps(self, arrays: list, keep):
        values: list = [None] * self.slots
        for slot, array in zip(self.input_slots, arrays, strict=True):
            values[slot] = array
        readers = list(self._readers)
        grad_enabled_now = grad_enabled()
        outputs = set(self.output_slots)
        self._node_caches.clear()
        self._output_meta.clear()
        carried = None  # the output of an activation its batch norm took in, for its step
        for index, step in enumerate(self.steps):
            given = [values[s] for s in step.inputs]
            if carried is not None:
                out, carried = carried, None
            elif index in self._takes_next and self._takes_next[index] not in keep:
                # the slot between them holds the activation's output until the next step
                # frees it (nobody else reads it); backward's bookkeeping asks only its shape
                # and dtype, the same as the normalised values' would be
                carried = step.layer.forward_activated(given[0], self.steps[index + 1].layer)
                out = carried
            else:
                out = step.layer.forward(given if step.layer.multi_input else given[0])
            outs = out if step.layer.multi_output else (out,)
            for slot, array in zip(step.outputs, outs, strict=True):
                values[slot] = array
                if slot in keep:
                    self.kept[slot] = array
            if grad_enabled_now:
                self._output_meta[index] = [(a.shape, a.dtype) for a in outs]
                if step.shared:
                    modules = list(step.layer.modules())
                    self._node_caches[index] = [m.cache for m in modules]
                    for module in modules:
                        module.cache = None
            for slot in step.inputs:
                readers[slot] -= 1
                if readers[slot] == 0 and slot not in outputs:
                    values[slot] = None  # nobody reads it again: free it now
        results = [values[slot] for slot in self.output_slots]
        return tuple(results) if self.multi_output else results[0]

    def backward(self, grads, input_grad: bool = True, watch: int | None = None):
        """One gradient per output (None: zero), in the order of `outputs=`; returns the
        gradient of each input (a tuple for several), or None with input_grad=False.
        `watch`: a slot whose gradient is left in `self.watched` (Grad-CAM reads it)."""
        grads = self._gradients(grads)
        self.watched = None
        if not self._output_meta:
            raise RuntimeError("Model: backward called without a forward that kept its caches "
                               "(run forward outside no_grad(), once per backward)")
        return run_chosen(self.__dict__, "_backward_choice", self._backward_steps, grads,
                          input_grad, watch)

    def _backward_steps(self, grads: list, input_grad: bool, watch: int | None):
        pending: dict[int, object] = {}
        for slot, grad in zip(self.output_slots, grads, strict=True):
            if grad is not None:
                pending[slot] = grad if slot not in pending else pending[slot] + grad
        inputs = set(self.input_slots)
        below = None  # a step whose backward ran with the one after it
        for index in reversed(range(len(self.steps))):
            if index == below:
                continue
            step = self.steps[index]
            dys = [pending.pop(slot, None) for slot in step.outputs]
            if watch in step.outputs:
                self.watched = dys[step.outputs.index(watch)]
            modules = list(step.layer.modules()) if step.shared else None
            if step.shared:
                for module, cache in zip(modules, self._node_caches.pop(index),
                                         strict=True):
                    module.cache = cache
            if all(dy is None for dy in dys):
                for module in step.layer.modules():  # no gradient reaches it: drop its caches
                    module.cache = None
                continue
            if step.layer.multi_output:
                meta = self._output_meta[index]
                dy = [d if d is not None else _zeros_like_meta(d, m, dys)
                      for d, m in zip(dys, meta, strict=True)]
            else:
                dy = dys[0]
            between = self._backward_pairs.get(index)  # the slot from the step before
            if (between is not None and between != watch
                    and self.steps[index - 1].layer.takes_backward_of(step.layer, dy)):
                # the two backwards in one (a ReLU's mask taken into a conv's copy of dy)
                below, step = index - 1, self.steps[index - 1]
                needs_dx = input_grad or any(slot not in inputs for slot in step.inputs)
                dx = step.layer.backward_activated(dy, self.steps[index].layer, needs_dx)
                if not needs_dx:
                    continue
            else:
                needs_dx = input_grad or any(slot not in inputs for slot in step.inputs)
                if not needs_dx and not step.layer.multi_input:
                    step.layer.backward_parameters(dy)
                    continue
                dx = step.layer.backward(dy)
            dxs = dx if step.layer.multi_input else [dx]
            for slot, grad in zip(step.inputs, dxs, strict=True):
                # a new array, never in place: a layer may hand the same array to two inputs
                pending[slot] = grad if slot not in pending else pending[slot] + grad
        self._output_meta.clear()
        if not input_grad:
            return None
        result = [pending.get(slot) for slot in self.input_slots]
        return tuple(result) if self.multi_input else result[0]

    def backward_parameters(self, dy) -> None:
        self.backward(dy, input_grad=False)

    def _gradients(self, grads) -> list:
        count = len(self.output_slots)
        if not isinstance(grads, (list, tuple)):
            if count != 1:
                raise TypeError(f"Model: has {count} outputs; pass a list of {count} gradients "
                                f"(None for an output that gets none)")
            grads = [grads]
        grads = list(grads)
        if len(grads) != count:
            raise ValueError(f"Model: expected {count} gradient(s), one per output, received "
                             f"{len(grads)}")
        return grads

    # -- description -------------------------------------------------------------------------
    def summary_children(self):
        return ("graph", self.steps)

    def summary(self, input_shape=None) -> None:
        """Print the Keras-like table with a 'Connected to' column."""
        print(self.describe(input_shape))

    def describe(self, input_shape=None):
        """The summary as data (`Summary`, with `.rows` and `.to_dict()`)."""
        shapes = self.input_shapes if input_shape is None else (
            input_shape if self.multi_input else [input_shape])
        return summarize(self, [tuple(s) for s in shapes] if self.multi_input
                         else tuple(shapes[0]))

    def __repr__(self) -> str:
        lines = []
        for step in self.steps:
            sources = ", ".join(self.slot_names[s] for s in step.inputs)
            lines.append(f"  {step.layer.name}: {step.layer!r} <- {sources}")
        outs = ", ".join(self.slot_names[s] for s in self.output_slots)
        return "Model(\n" + "\n".join(lines) + f"\n  outputs: {outs}\n)"


def _zeros_like_meta(_, meta, dys):
    """Zeros for an output of a multi-output layer that no gradient reached."""
    shape, dtype = meta
    reference = next(d for d in dys if d is not None)
    return array_module(reference).zeros(shape, dtype=dtype)


# -- models whose first output is what a classifier or segmenter scores ---------------------
def first_output(outputs):
    """The first output of a model's forward (a graph with several gives a tuple)."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def first_output_shape(model: Layer, input_shape) -> Shape:
    """The per-sample shape of a model's first output."""
    shapes = model.output_shape(input_shape)
    return tuple(shapes[0] if model.multi_output else shapes)


def first_output_gradient(model: Layer, grad):
    """Backward's argument for a gradient on the first output only (the others get none)."""
    if not model.multi_output:
        return grad
    return [grad] + [None] * (len(model.output_slots) - 1)
