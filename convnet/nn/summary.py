"""The model summary as data and as a Keras-like table.

Every number comes from the layers themselves: output shapes from `output_shape` (the one
arithmetic in `convnet.core.arithmetic`), counts from the registered parameter arrays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy

from convnet.core.arithmetic import ReceptiveField
from convnet.nn.layer import Layer, Shape
from convnet.nn.symbolic import field_through


@dataclass
class LayerRow:
    name: str
    type: str
    description: str
    depth: int
    input_shape: Shape
    output_shape: Shape
    params: int
    formula: str
    receptive_field: tuple[int, int]
    jump: tuple[int, int]
    macs: int
    activation_bytes: int  # per sample, this layer's output
    dropped: tuple[int, int] = (0, 0)  # border rows/cols never covered (strict=False)
    window: dict | None = None  # kernel/stride/padding/dilation for conv and pool
    connected_to: list[str] = field(default_factory=list)  # graph models: the tensors read
    shared_with: str = ""  # a layer called again: its weights are those of this row's layer
    extra_outputs: list = field(default_factory=list)  # shapes of a split's other outputs
    # A convolution's parameters beside a locally connected and a fully connected layer giving
    # the same output volume (Layer.weight_sharing); None for other layers.
    sharing: dict | None = None


@dataclass
class Summary:
    input_shape: Shape
    rows: list[LayerRow] = field(default_factory=list)
    dtype: str = "float32"  # of the parameters, and so of the activations
    # Graph models: every input and output by name and shape (a chain has one of each).
    inputs: list[tuple[str, Shape]] = field(default_factory=list)
    outputs: list[tuple[str, Shape]] = field(default_factory=list)

    @property
    def bytes_per_value(self) -> int:
        return numpy.dtype(self.dtype).itemsize

    @property
    def output_shape(self) -> Shape:
        if self.outputs:
            return self.outputs[0][1]
        return self.rows[-1].output_shape if self.rows else self.input_shape

    @property
    def receptive_field(self) -> tuple[int, int]:
        """The largest receptive field of any unit, through every path."""
        fields = [row.receptive_field for row in self.rows if row.depth == 0] or [(1, 1)]
        return max(fields, key=lambda size: size[0] * size[1])

    @property
    def total_params(self) -> int:
        return sum(row.params for row in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.rows)

    @property
    def activation_bytes(self) -> int:
        return sum(row.activation_bytes for row in self.rows)

    def to_dict(self) -> dict:
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "activation_bytes_per_sample": self.activation_bytes,
            "param_bytes": self.total_params * self.bytes_per_value,
            "dtype": self.dtype,
            "receptive_field": list(self.receptive_field),
            "inputs": [{"name": name, "shape": list(shape)} for name, shape in self.inputs],
            "outputs": [{"name": name, "shape": list(shape)} for name, shape in self.outputs],
            "layers": [asdict(row) for row in self.rows],
        }

    def __str__(self) -> str:
        return format_table(self)


def _window_info(layer: Layer, input_shape: Shape) -> dict | None:
    if not hasattr(layer, "geometry"):
        return None
    geometry = layer.geometry(input_shape[1:])
    pad = geometry.padding
    return {
        "input_hw": list(input_shape[1:]),
        "kernel": list(layer.kernel_size),
        "stride": list(layer.stride),
        "dilation": list(getattr(layer, "dilation", (1, 1))),
        "padding": [pad.top, pad.bottom, pad.left, pad.right],
        "output_hw": list(geometry.out_hw),
        "dropped": list(geometry.dropped),
    }


def walk(layer: Layer, input_shape: Shape, rf: ReceptiveField, depth: int,
         bytes_per_value: int = 4):
    """Rows for `layer` (containers expanded), its output shape and the receptive field after it."""
    mode, children = layer.summary_children()
    if mode == "chain":
        rows: list[LayerRow] = []
        shape = input_shape
        for child in children:
            child_rows, shape, rf = walk(child, shape, rf, depth, bytes_per_value)
            rows.extend(child_rows)
        return rows, shape, rf
    output_shape = layer.output_shape(input_shape)
    inner: list[LayerRow] = []
    if mode == "graph":
        inner, _, new_rf = _graph_rows(layer, input_shape, rf, depth + 1, bytes_per_value)
    else:
        for child in children:  # nested: each sees this layer's input
            child_rows, _, _ = walk(child, input_shape, rf, depth + 1, bytes_per_value)
            inner.extend(child_rows)
        new_rf = layer.receptive_field(rf, input_shape) if len(input_shape) == 3 else rf
    row = _row(layer, input_shape, output_shape, new_rf, depth, bytes_per_value)
    return [row, *inner], output_shape, new_rf


def _row(layer: Layer, input_shape, output_shape, rf: ReceptiveField, depth: int,
         bytes_per_value: int, **extra) -> LayerRow:
    """One layer's row; input_shape is a list of shapes for a merge, output_shape for a split."""
    outputs = list(output_shape) if layer.multi_output else [output_shape]
    own = sum(p.size for p in layer.own_parameters().values())
    spatial = not layer.multi_input and len(input_shape) == 3
    return LayerRow(
        name=layer.name,
        type=type(layer).__name__,
        description=layer.summary_description(),
        depth=depth,
        input_shape=tuple(input_shape) if not layer.multi_input else tuple(map(tuple,
                                                                               input_shape)),
        output_shape=tuple(outputs[0]),
        params=own,
        formula=layer.param_formula(input_shape) if own else "",
        receptive_field=tuple(rf.size),
        jump=tuple(rf.jump),
        macs=layer.macs(input_shape, output_shape),
        activation_bytes=sum(math.prod(shape) for shape in outputs) * bytes_per_value,
        dropped=tuple(layer.dropped_pixels(input_shape)) if spatial else (0, 0),
        window=_window_info(layer, input_shape) if spatial else None,
        sharing=(layer.weight_sharing(input_shape, outputs[0])
                 if spatial and len(outputs[0]) == 3 and not layer.multi_output else None),
        extra_outputs=[tuple(shape) for shape in outputs[1:]],
        **extra,
    )


def _graph_rows(model: Layer, input_shapes, rf: ReceptiveField, depth: int,
                bytes_per_value: int):
    """Rows of a graph model's calls in topological order, each with the tensors it reads;
    the receptive field through every path (a merge keeps the widest)."""
    shapes = model.plan(input_shapes if model.multi_input else [input_shapes])
    fields: list = [None] * model.slots
    for slot in model.input_slots:
        fields[slot] = rf
    rows: list[LayerRow] = []
    first_call: dict[int, str] = {}
    for step in model.steps:
        layer = step.layer
        given = [shapes[s] for s in step.inputs]
        in_shape = given if layer.multi_input else given[0]
        outs = [shapes[s] for s in step.outputs]
        out_shape = outs if layer.multi_output else outs[0]
        after = field_through(layer, [fields[s] for s in step.inputs], given)
        for slot in step.outputs:
            fields[slot] = after
        connected = [model.slot_names[s] for s in step.inputs]
        shared = first_call.get(id(layer), "")
        first_call.setdefault(id(layer), layer.name)
        mode, children = layer.summary_children()
        if mode == "leaf":
            row = _row(layer, in_shape, out_shape, after, depth, bytes_per_value,
                       connected_to=connected, shared_with=shared)
            rows.append(row)
        else:  # a container called in the graph: its row, then its own rows indented
            nested, _, _ = walk(layer, in_shape, fields[step.inputs[0]], depth,
                                bytes_per_value)
            if mode == "chain":
                nested = [_row(layer, in_shape, out_shape, after, depth, bytes_per_value),
                          *[_deeper(r) for r in nested]]
            nested[0].connected_to = connected
            nested[0].shared_with = shared
            rows.extend(nested)
        if shared:
            for row in rows[-1:]:
                row.params, row.formula = 0, f"shared with {shared}"
    out_field = fields[model.output_slots[0]]
    return rows, shapes[model.output_slots[0]], out_field


def _deeper(row: LayerRow) -> LayerRow:
    row.depth += 1
    return row


def summarize(model: Layer, input_shape) -> Summary:
    """Activations are counted in the parameters' dtype (float32 for a model without any).
    A graph model with several inputs takes a list of shapes."""
    dtype = next((numpy.dtype(p.data.dtype).name for p in model.parameters()), "float32")
    size = numpy.dtype(dtype).itemsize
    if model.summary_children()[0] == "graph":
        shapes = list(map(tuple, input_shape)) if model.multi_input else [tuple(input_shape)]
        rows, _, _ = _graph_rows(model, shapes if model.multi_input else shapes[0],
                                 ReceptiveField(), 0, size)
        plan = model.plan(shapes)
        inputs = [(model.slot_names[s], plan[s]) for s in model.input_slots]
        outputs = [(model.slot_names[s], plan[s]) for s in model.output_slots]
        return Summary(shapes[0], rows, dtype, inputs, outputs)
    rows, _, _ = walk(model, tuple(input_shape), ReceptiveField(), 0, size)
    return Summary(tuple(input_shape), rows, dtype)


def _shape(shape: Shape) -> str:
    return str(tuple(shape))


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def _number(value) -> str:
    """3 for 3.0, 0.5 for 0.5: jumps are fractional after upsampling."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def format_table(summary: Summary) -> str:
    graph = any(row.connected_to for row in summary.rows)
    header = ("Layer (type)", "Output shape", "Param # (formula)", "Receptive field",
              "Mult-adds", "Activations") + (("Connected to",) if graph else ())
    body = []
    for row in summary.rows:
        name = "  " * row.depth + f"{row.name} ({row.type})"
        rf = f"{row.receptive_field[0]}x{row.receptive_field[1]}"
        jump = [_number(j) for j in row.jump]
        rf += f" jump {jump[0]}" if jump[0] == jump[1] else f" jump ({jump[0]}, {jump[1]})"
        if len(row.output_shape) != 3:
            rf = "whole image"  # each value of a vector depends on every input pixel
        params = row.formula or f"{row.params:,}"
        if row.dropped != (0, 0):
            params += f"  [drops {row.dropped[0]} row(s), {row.dropped[1]} col(s)]"
        shape = _shape(row.output_shape) + "".join(f" {_shape(s)}" for s in row.extra_outputs)
        line = (name, shape, params, rf, f"{row.macs:,}", human_bytes(row.activation_bytes))
        body.append(line + ((", ".join(row.connected_to),) if graph else ()))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def fmt(line):
        return "  ".join(cell.rjust(widths[i]) if i in (4, 5) else cell.ljust(widths[i])
                         for i, cell in enumerate(line)).rstrip()

    if len(summary.inputs) > 1:
        opening = "Inputs: " + ", ".join(f"{name} {_shape(shape)}"
                                         for name, shape in summary.inputs)
    else:
        opening = f"Input shape: {_shape(summary.input_shape)}"
    opening += "  (C, H, W per sample)" if len(summary.input_shape) == 3 else "  (per sample)"
    if len(summary.outputs) > 1:
        closing = "Outputs: " + ", ".join(f"{name} {_shape(shape)}"
                                          for name, shape in summary.outputs)
    else:
        closing = f"Output shape: {_shape(summary.output_shape)}"
    size = summary.receptive_field
    lines = [opening, rule, fmt(header), rule, *(fmt(line) for line in body), rule,
             f"Total params: {summary.total_params:,} "
             f"({human_bytes(summary.total_params * summary.bytes_per_value)} as "
             f"{summary.dtype})",
             f"Mult-adds per sample: {summary.total_macs:,}",
             f"Activation memory per sample (forward): "
             f"{human_bytes(summary.activation_bytes)}",
             f"Largest receptive field: {size[0]}x{size[1]} (through every path)"
             if graph else None,
             closing,
             "Receptive field: the input window a unit sees; jump: the step between "
             "neighbouring units' windows"]
    return "\n".join(line for line in lines + sharing_lines(summary) if line is not None)


def sharing_lines(summary: Summary) -> list[str]:
    """The weight-sharing table under the summary: each convolution's parameters beside a
    locally connected and a fully connected layer producing the same output volume."""
    rows = [row for row in summary.rows if row.sharing]
    if not rows:
        return []
    header = ("Layer", "Conv (shared)", "Locally connected (no sharing)",
              "Fully connected")
    body = [(row.name, row.sharing["conv"]["text"], row.sharing["locally_connected"]["text"],
             row.sharing["fully_connected"]["text"]) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return ["", "Weight sharing: each conv layer's parameters beside layers giving its output "
            "volume without sharing",
            *("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
              for line in [header, *body])]
