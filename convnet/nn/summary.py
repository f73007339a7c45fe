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


@dataclass
class Summary:
    input_shape: Shape
    rows: list[LayerRow] = field(default_factory=list)
    dtype: str = "float32"  # of the parameters, and so of the activations

    @property
    def bytes_per_value(self) -> int:
        return numpy.dtype(self.dtype).itemsize

    @property
    def output_shape(self) -> Shape:
        return self.rows[-1].output_shape if self.rows else self.input_shape

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
    for child in children:  # nested: each sees this layer's input
        child_rows, _, _ = walk(child, input_shape, rf, depth + 1, bytes_per_value)
        inner.extend(child_rows)
    new_rf = layer.receptive_field(rf, input_shape) if len(input_shape) == 3 else rf
    own = sum(p.size for p in layer.own_parameters().values())
    row = LayerRow(
        name=layer.name,
        type=type(layer).__name__,
        description=layer.summary_description(),
        depth=depth,
        input_shape=tuple(input_shape),
        output_shape=tuple(output_shape),
        params=own,
        formula=layer.param_formula(input_shape) if own else "",
        receptive_field=tuple(new_rf.size),
        jump=tuple(new_rf.jump),
        macs=layer.macs(input_shape, output_shape),
        activation_bytes=math.prod(output_shape) * bytes_per_value,
        dropped=tuple(layer.dropped_pixels(input_shape)) if len(input_shape) == 3 else (0, 0),
        window=_window_info(layer, input_shape),
    )
    return [row, *inner], output_shape, new_rf


def summarize(model: Layer, input_shape: Shape) -> Summary:
    """Activations are counted in the parameters' dtype (float32 for a model without any)."""
    dtype = next((numpy.dtype(p.data.dtype).name for p in model.parameters()), "float32")
    rows, _, _ = walk(model, tuple(input_shape), ReceptiveField(), 0, numpy.dtype(dtype).itemsize)
    return Summary(tuple(input_shape), rows, dtype)


def _shape(shape: Shape) -> str:
    return str(tuple(shape))


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def format_table(summary: Summary) -> str:
    header = ("Layer (type)", "Output shape", "Param # (formula)", "Receptive field",
              "Mult-adds", "Activations")
    body = []
    for row in summary.rows:
        name = "  " * row.depth + f"{row.name} ({row.type})"
        rf = f"{row.receptive_field[0]}x{row.receptive_field[1]}"
        rf += f" jump {row.jump[0]}" if row.jump[0] == row.jump[1] else f" jump {row.jump}"
        params = row.formula or f"{row.params:,}"
        if row.dropped != (0, 0):
            params += f"  [drops {row.dropped[0]} row(s), {row.dropped[1]} col(s)]"
        body.append((name, _shape(row.output_shape), params, rf, f"{row.macs:,}",
                     human_bytes(row.activation_bytes)))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def fmt(line):
        return "  ".join(cell.ljust(widths[i]) if i < 4 else cell.rjust(widths[i])
                         for i, cell in enumerate(line)).rstrip()

    lines = [f"Input shape: {_shape(summary.input_shape)}  (C, H, W per sample)", rule,
             fmt(header), rule, *(fmt(line) for line in body), rule,
             f"Total params: {summary.total_params:,} "
             f"({human_bytes(summary.total_params * summary.bytes_per_value)} as "
             f"{summary.dtype})",
             f"Mult-adds per sample: {summary.total_macs:,}",
             f"Activation memory per sample (forward): "
             f"{human_bytes(summary.activation_bytes)}",
             f"Output shape: {_shape(summary.output_shape)}"]
    return "\n".join(lines)
