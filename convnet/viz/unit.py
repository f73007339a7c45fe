"""Inside one output unit: the multiply-adds that make one number of an activation map.

    stages = stage_graph(model); outputs = stage_outputs(model, x)
    view = unit_view(stages, outputs, "conv2", channel=3, row=4, col=5)

For a convolution: the unit's window on each depth slice of the zero-padded input (the
numbers), the filter's weights for that slice, their element-wise products, the sum per
slice, + bias = the pre-activation, and what the next layer (a ReLU) makes of it. For pooling:
the window's values and which one won (max) or their mean. For a fully connected unit: the
inputs that contribute most (weight x value). For a concatenation: which branch a channel came
from. For elementwise layers and merges: the values that meet.

Every number is read from the engine's own arrays (the layer's input and weights as the forward
pass used them); the products and sums are recomputed here in float64 to show how the engine's
output comes about, and the engine's output is returned beside them (`engine_value`), so any
difference is visible (float32 rounding, about 1e-6 of the value).
"""

from __future__ import annotations

import numpy as np

from convnet.nn.activations import LeakyReLU, LogSoftmax, PReLU, ReLU, Sigmoid, Softmax, Tanh
from convnet.nn.batchnorm import BatchNorm2d
from convnet.nn.conv import Conv2d
from convnet.nn.conv_transpose import ConvTranspose2d
from convnet.nn.layer import no_grad
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.merge import Add, Concat, Div, Mul, Sub
from convnet.nn.padding import Pad
from convnet.nn.pixel_shuffle import DepthToSpace, PixelShuffle, PixelUnshuffle, SpaceToDepth
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convnet.nn.resize import Resize

MAX_SLICES = 16  # depth slices of a convolution shown one by one; the rest are summed
TOP_INPUTS = 12  # contributions listed for a fully connected unit


class UnitError(ValueError):
    """A unit that does not exist (outside the map, no such channel); the message says why."""


def _value(array: np.ndarray, index) -> float:
    return float(array[index])


def _grid(values) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(values, dtype=np.float64)]


def _check_unit(shape, channel: int, row: int, col: int, layer: str) -> None:
    if len(shape) == 3:
        c, h, w = shape
        if not 0 <= channel < c:
            raise UnitError(f"{layer} has {c} maps (0 to {c - 1}), received map {channel}")
        if not (0 <= row < h and 0 <= col < w):
            raise UnitError(f"unit ({row}, {col}) is outside {layer}'s {h}x{w} maps")
    elif len(shape) == 1:
        if not 0 <= channel < shape[0]:
            raise UnitError(f"{layer} has {shape[0]} units (0 to {shape[0] - 1}), received "
                            f"{channel}")
    else:
        raise UnitError(f"{layer} outputs shape {tuple(shape)}; units of 3-D maps or vectors "
                        f"only")


def _index(shape, channel: int, row: int, col: int) -> tuple:
    return (0, channel, row, col) if len(shape) == 3 else (0, channel)


def _window_taps(origin: int, kernel: int, dilation: int) -> list[int]:
    return [origin + t * dilation for t in range(kernel)]


def unit_view(stages, outputs: dict, name: str, channel: int, row: int = 0,
              col: int = 0) -> dict:
    """The inside of unit (channel, row, col) of stage `name` (see the module doc). `stages`
    from probe.stage_graph, `outputs` from probe.stage_outputs for one image."""
    by_name = {stage.name: stage for stage in stages}
    if name not in by_name:
        raise KeyError(f"no stage {name!r}; stages: {', '.join(by_name)}")
    stage = by_name[name]
    out = outputs[name]
    shape = tuple(out.shape[1:])
    _check_unit(shape, channel, row, col, name)
    index = _index(shape, channel, row, col)
    inputs = [outputs[source] for source in stage.inputs]
    layer = stage.layer
    view = {"layer": name, "type": type(layer).__name__, "channel": int(channel),
            "row": int(row), "col": int(col), "output_shape": list(shape),
            "inputs": list(stage.inputs), "input_shapes": [list(x.shape[1:]) for x in inputs],
            "engine_value": _value(out, index), "next": _next(stages, by_name, stage, outputs,
                                                              shape, channel, row, col)}
    explain = _EXPLAINERS.get(type(layer))
    if explain is None:
        for kind, function in _EXPLAINERS.items():
            if isinstance(layer, kind):
                explain = function
                break
    if explain is None and _is_activation(layer):
        explain = _elementwise
    if explain is None:
        view.update(kind="other", text=f"{type(layer).__name__}: no inside view; its output "
                    f"here is {view['engine_value']:.4g}")
        return view
    view.update(explain(layer, inputs, out, channel, row, col, stages=stages,
                        by_name=by_name, stage=stage, outputs=outputs))
    return view


def _next(stages, by_name, stage, outputs, shape, channel, row, col) -> dict | None:
    """What the one layer reading this output makes of the unit (a ReLU after a conv)."""
    if len(stage.readers) != 1:
        return None
    reader = by_name[stage.readers[0]]
    if not _is_activation(reader.layer):
        return {"layer": reader.name, "type": type(reader.layer).__name__, "value": None}
    value = _value(outputs[reader.name], _index(shape, channel, row, col))
    return {"layer": reader.name, "type": type(reader.layer).__name__, "value": value}


# -- convolution -----------------------------------------------------------------------------
def _conv(layer: Conv2d, inputs, out, channel, row, col, **_) -> dict:
    x = np.asarray(inputs[0][0], dtype=np.float64)  # C, H, W
    geometry = layer.geometry(x.shape[1:])
    pad = geometry.padding
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    per_group = layer.in_channels // layer.groups
    group = channel // (layer.out_channels // layer.groups)
    rows = _window_taps(row * sh, kh, dh)  # padded coordinates
    cols = _window_taps(col * sw, kw, dw)
    height, width = x.shape[1:]
    inside_r = [0 <= r - pad.top < height for r in rows]
    inside_c = [0 <= c - pad.left < width for c in cols]
    weight = np.asarray(layer.weight.data[channel], dtype=np.float64)  # C/g, KH, KW
    slices, sums = [], []
    for j in range(per_group):
        source = group * per_group + j
        patch = np.zeros((kh, kw))
        for u, r in enumerate(rows):
            for v, c in enumerate(cols):
                if inside_r[u] and inside_c[v]:
                    patch[u, v] = x[source, r - pad.top, c - pad.left]
        products = patch * weight[j]
        sums.append(float(products.sum()))
        if j < MAX_SLICES:
            slices.append({"channel": int(source), "patch": _grid(patch),
                           "weights": _grid(weight[j]), "products": _grid(products),
                           "sum": sums[-1]})
    bias = float(layer.bias.data[channel]) if layer.bias is not None else 0.0
    shown = slices

    def span(key):
        values = np.array([cell for s in shown for line in s[key] for cell in line])
        return [float(values.min()), float(values.max())] if values.size else [0.0, 0.0]

    return {
        "kind": "conv", "kernel": [kh, kw], "stride": [sh, sw], "dilation": [dh, dw],
        "groups": layer.groups, "filter": int(channel),
        "padding": [pad.top, pad.bottom, pad.left, pad.right],
        "input_hw": [int(height), int(width)],
        "padded_hw": [int(height + pad.top + pad.bottom), int(width + pad.left + pad.right)],
        "window": {"rows": rows, "cols": cols, "inside_rows": inside_r,
                   "inside_cols": inside_c},
        "slices": slices, "slices_total": per_group, "slices_shown": len(slices),
        "rest_sum": float(sum(sums[MAX_SLICES:])), "sum": float(sum(sums)),
        "bias": bias, "has_bias": layer.bias is not None,
        "pre_activation": float(sum(sums)) + bias,
        "ranges": {"patch": span("patch"), "weights": span("weights"),
                   "products": span("products")},
        "planes": [int(s["channel"]) for s in slices],
    }


def _is_activation(layer) -> bool:
    """A pointwise nonlinearity: ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, Hardswish, PReLU..."""
    return (type(layer).__module__ == "convnet.nn.activations"
            and not isinstance(layer, (Softmax, LogSoftmax))) or isinstance(layer, PReLU)


# -- transposed convolution ----------------------------------------------------------------
def _deconv(layer: ConvTranspose2d, inputs, out, channel, row, col, **_) -> dict:
    """Output unit (channel, row, col) gathers input unit (i, j) through tap (u, v) when
    row = i*S - P + u*D (and likewise for columns); and each input unit scatters its stamp
    to the outputs i*S - P + u*D."""
    x = np.asarray(inputs[0][0], dtype=np.float64)  # C, H, W
    geometry = layer.geometry(x.shape[1:])
    pads = (geometry.padding.top, geometry.padding.left)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    height, width = x.shape[1:]
    out_h, out_w = geometry.out_hw
    per_group_out = layer.out_channels // layer.groups
    per_group_in = layer.in_channels // layer.groups
    group, local = divmod(channel, per_group_out)

    def sources(o, kernel, stride, dilation, pad, size):
        found = []
        for tap in range(kernel):
            full = o + pad - tap * dilation
            if full % stride == 0 and 0 <= full // stride < size:
                found.append((tap, full // stride))
        return found

    contributors = []
    for u, i in sources(row, kh, sh, dh, pads[0], height):
        for v, j in sources(col, kw, sw, dw, pads[1], width):
            channels = range(group * per_group_in, (group + 1) * per_group_in)
            products = [x[c, i, j] * float(layer.weight.data[c, local, u, v]) for c in channels]
            contributors.append({"row": i, "col": j, "tap": [u, v],
                                 "sum": float(sum(products)),
                                 "values": [float(x[c, i, j]) for c in channels][:MAX_SLICES],
                                 "weights": [float(layer.weight.data[c, local, u, v])
                                             for c in channels][:MAX_SLICES]})
    total = float(sum(item["sum"] for item in contributors))
    bias = float(layer.bias.data[channel]) if layer.bias is not None else 0.0
    first = contributors[0] if contributors else {"row": 0, "col": 0}
    i0, j0 = first["row"], first["col"]
    scatter_rows = [i0 * sh - pads[0] + u * dh for u in range(kh)]
    scatter_cols = [j0 * sw - pads[1] + v * dw for v in range(kw)]
    return {
        "kind": "deconv", "kernel": [kh, kw], "stride": [sh, sw], "dilation": [dh, dw],
        "padding": list(pads), "output_padding": list(geometry.output_padding),
        "input_hw": [int(height), int(width)], "output_hw": [int(out_h), int(out_w)],
        "channels": per_group_in, "contributors": contributors, "sum": total, "bias": bias,
        "has_bias": layer.bias is not None, "pre_activation": total + bias,
        "scatter": {"input": [i0, j0],
                    "rows": [r for r in scatter_rows if 0 <= r < out_h],
                    "cols": [c for c in scatter_cols if 0 <= c < out_w]},
        "text": f"{len(contributors)} input unit(s) reach output ({row}, {col}); input "
                f"({i0}, {j0}) scatters its {kh}x{kw} stamp to output rows "
                f"{[r for r in scatter_rows if 0 <= r < out_h]}, columns "
                f"{[c for c in scatter_cols if 0 <= c < out_w]}",
    }


# -- pooling -----------------------------------------------------------------------------------
def _pool(layer, inputs, out, channel, row, col, **_) -> dict:
    plane = np.asarray(inputs[0][0, channel], dtype=np.float64)  # H, W
    geometry = layer.geometry(plane.shape)
    pad = geometry.padding
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    rows = _window_taps(row * sh, kh, 1)
    cols = _window_taps(col * sw, kw, 1)
    height, width = plane.shape
    values, inside = [], []
    for r in rows:
        line, flags = [], []
        for c in cols:
            real = 0 <= r - pad.top < height and 0 <= c - pad.left < width
            flags.append(real)
            line.append(float(plane[r - pad.top, c - pad.left]) if real else None)
        values.append(line)
        inside.append(flags)
    result = {"kind": "maxpool" if isinstance(layer, MaxPool2d) else "avgpool",
              "kernel": [kh, kw], "stride": [sh, sw], "dilation": [1, 1],
              "padding": [pad.top, pad.bottom, pad.left, pad.right],
              "input_hw": [int(height), int(width)],
              "padded_hw": [int(height + pad.top + pad.bottom),
                            int(width + pad.left + pad.right)],
              "window": {"rows": rows, "cols": cols,
                         "inside_rows": [0 <= r - pad.top < height for r in rows],
                         "inside_cols": [0 <= c - pad.left < width for c in cols]},
              "values": values, "inside": inside, "planes": [int(channel)]}
    real = [(u, v, values[u][v]) for u in range(kh) for v in range(kw) if inside[u][v]]
    if isinstance(layer, MaxPool2d):
        best = max(value for _, _, value in real)
        winner = next((u, v) for u, v, value in real if value == best)  # the first, as forward
        result.update(winner=list(winner), result=best,
                      text=f"max of the {len(real)} values in the window"
                           + (" (padding never wins)" if len(real) < kh * kw else ""))
    else:
        total = sum(value for _, _, value in real)
        divisor = kh * kw if layer.count_include_pad or geometry.padding.is_zero else len(real)
        result.update(result=total / divisor, total=total, divisor=divisor,
                      text=f"sum {total:.4g} / {divisor} = mean")
    return result


def _global_pool(layer, inputs, out, channel, row, col, **_) -> dict:
    plane = np.asarray(inputs[0][0, channel], dtype=np.float64)
    return {"kind": "gap", "count": int(plane.size), "total": float(plane.sum()),
            "result": float(plane.mean()), "input_hw": list(plane.shape),
            "text": f"the mean of all {plane.size} values of map {channel}: "
                    f"{plane.sum():.4g} / {plane.size}"}


# -- fully connected -----------------------------------------------------------------------------
def _linear(layer: Linear, inputs, out, channel, row, col, *, stage, by_name, outputs,
            **_) -> dict:
    x = np.asarray(inputs[0][0], dtype=np.float64)  # F
    weight = np.asarray(layer.weight.data[channel], dtype=np.float64)
    contributions = x * weight
    order = np.argsort(-np.abs(contributions), kind="stable")[:TOP_INPUTS]
    producer = by_name.get(stage.inputs[0])
    source_shape = None
    if producer is not None and isinstance(producer.layer, Flatten):
        source = outputs.get(producer.inputs[0])
        if source is not None and source.ndim == 4:
            source_shape = tuple(source.shape[1:])  # which map and pixel each input is
    top = []
    for j in order:
        item = {"index": int(j), "value": float(x[j]), "weight": float(weight[j]),
                "product": float(contributions[j])}
        if source_shape is not None:
            item["from"] = [int(v) for v in np.unravel_index(int(j), source_shape)]
        top.append(item)
    bias = float(layer.bias.data[channel]) if layer.bias is not None else 0.0
    shown = float(contributions[order].sum())
    total = float(contributions.sum())
    return {"kind": "fc", "in_features": int(x.size), "top": top, "shown_sum": shown,
            "rest_sum": total - shown, "rest_count": int(x.size - len(order)),
            "sum": total, "bias": bias, "has_bias": layer.bias is not None,
            "pre_activation": total + bias,
            "source_shape": list(source_shape) if source_shape else None,
            "source": producer.inputs[0] if source_shape else stage.inputs[0]}


# -- merges and elementwise layers ---------------------------------------------------------
def _concat(layer: Concat, inputs, out, channel, row, col, *, stage, **_) -> dict:
    axis = layer._sample_axis(out.ndim - 1)
    position = (channel, row, col)[axis] if out.ndim == 4 else channel
    start = 0
    for branch, (name, x) in enumerate(zip(stage.inputs, inputs, strict=True)):
        size = x.shape[axis + 1]
        if position < start + size:
            local = list((channel, row, col)[:out.ndim - 1])
            local[axis] = position - start
            value = _value(x, (0, *local))
            return {"kind": "concat", "branch": branch, "source": name,
                    "source_channel": int(position - start), "offset": int(start),
                    "sizes": [int(x.shape[axis + 1]) for x in inputs], "value": value,
                    "text": f"channel {position} of {stage.name} is channel {position - start} "
                            f"of {name} (branch {branch + 1} of {len(inputs)}, channels "
                            f"{start}-{start + size - 1})"}
        start += size
    raise UnitError(f"channel {position} is outside {stage.name}")


def _broadcast_value(x: np.ndarray, shape_index: tuple) -> float:
    """The value of x at an output index after NumPy broadcasting (size-1 axes read at 0)."""
    per_sample = x.shape[1:]
    local = shape_index[len(shape_index) - len(per_sample):]
    local = tuple(0 if size == 1 else i for i, size in zip(local, per_sample, strict=True))
    return float(x[(0, *local)])


def _merge(layer, inputs, out, channel, row, col, *, stage, **_) -> dict:
    where = (channel, row, col) if out.ndim == 4 else (channel,)
    values = [_broadcast_value(x, where) for x in inputs]
    symbol = {Add: "+", Sub: "-", Mul: "*", Div: "/"}.get(type(layer), "?")
    return {"kind": "merge", "symbol": symbol, "values": values, "sources": list(stage.inputs),
            "text": f" {symbol} ".join(f"{v:.4g}" for v in values)}


def _elementwise(layer, inputs, out, channel, row, col, **_) -> dict:
    where = (0, channel, row, col) if out.ndim == 4 else (0, channel)
    before = _value(inputs[0], where) if inputs[0].shape == out.shape else None
    after = _value(out, where)
    rule = {ReLU: "max(0, x)", LeakyReLU: f"x if x > 0 else {getattr(layer, 'negative_slope', '')}"
            " * x", Sigmoid: "1 / (1 + exp(-x))", Tanh: "tanh(x)", Dropout: "x (off when "
            "evaluating)", Softmax: "exp(x) / sum(exp)"}.get(type(layer), repr(layer))
    result = {"kind": "elementwise", "rule": rule, "input_value": before, "result": after}
    if isinstance(layer, BatchNorm2d) and out.ndim == 4:
        mean = float(layer.running_mean[channel])
        var = float(layer.running_var[channel])
        gamma = float(layer.weight.data[channel]) if layer.weight is not None else 1.0
        beta = float(layer.bias.data[channel]) if layer.bias is not None else 0.0
        result.update(rule="(x - mean) / sqrt(var + eps) * gamma + beta", mean=mean, var=var,
                      eps=float(layer.eps), gamma=gamma, beta=beta)
    return result


def _flatten(layer, inputs, out, channel, row, col, **_) -> dict:
    source = inputs[0].shape[1:]
    where = [int(v) for v in np.unravel_index(channel, source)] if len(source) > 1 else \
        [channel]
    return {"kind": "flatten", "from": where, "source_shape": list(source),
            "result": _value(out, (0, channel)),
            "text": f"value {channel} is {'x'.join(map(str, source))}'s value at "
                    f"{tuple(where)} (channel, row, column order)"}


# -- resizing ----------------------------------------------------------------------------------
def _resize(layer: Resize, inputs, out, channel, row, col, **_) -> dict:
    """The input pixels an output pixel reads and their weights: one with weight 1 (nearest),
    two rows x two columns (bilinear; the weight of row r times that of column c)."""
    plane = np.asarray(inputs[0][0, channel], dtype=np.float64)  # H, W
    rows_plan, cols_plan = layer._plans(plane.shape, np.float64)

    def taps(plan, o):
        if plan.index is not None:
            return [(int(plan.index[o]), 1.0)]
        line = plan.matrix[o]
        return [(int(i), float(line[i])) for i in np.flatnonzero(line)]

    row_taps, col_taps = taps(rows_plan, row), taps(cols_plan, col)
    reads = [{"row": r, "col": c, "value": float(plane[r, c]), "weight": wr * wc,
              "product": float(plane[r, c]) * wr * wc}
             for r, wr in row_taps for c, wc in col_taps]
    total = sum(item["product"] for item in reads)
    mode = "nearest" if layer.mode == "nearest" else "bilinear"
    return {"kind": "resize", "mode": mode,
            "rule": layer.coordinate_transformation_mode, "input_hw": list(plane.shape),
            "row_taps": [[r, w] for r, w in row_taps], "col_taps": [[c, w] for c, w in col_taps],
            "reads": reads, "result": total, "planes": [int(channel)],
            "padding": [0, 0, 0, 0], "padded_hw": list(plane.shape),
            "window": {"rows": [r for r, _ in row_taps], "cols": [c for c, _ in col_taps],
                       "inside_rows": [True] * len(row_taps),
                       "inside_cols": [True] * len(col_taps)},
            "text": (f"{mode} ({layer.coordinate_transformation_mode}): output ({row}, {col}) of "
                     f"map {channel} reads {len(reads)} input pixel(s) of the same map, "
                     f"weights summing to {sum(item['weight'] for item in reads):.4g}")}


# -- moving values -----------------------------------------------------------------------------
def _moved(layer, inputs, out, channel, row, col, **_) -> dict:
    """Where a layer that only moves values (padding, pixel shuffle) took this output from:
    the layer itself runs on inputs numbered 1, 2, 3, ... (twice, numbered from two starts),
    so an output that copies an input holds its number and one that holds a constant (zero
    padding) is the same both times."""
    source = np.asarray(inputs[0][0], dtype=np.float64)  # C, H, W
    size = source.size
    numbered = np.arange(1, size + 1, dtype=np.float64).reshape(1, *source.shape)
    with no_grad():
        first = layer.forward(numbered)[0, channel, row, col]
        second = layer.forward(numbered + size)[0, channel, row, col]
    result = {"kind": "moved", "result": None, "input_shape": list(source.shape)}
    if second - first == size and 1 <= first <= size and first == round(first):
        c, i, j = (int(v) for v in np.unravel_index(int(first) - 1, source.shape))
        value = float(source[c, i, j])
        result.update(source=[c, i, j], result=value,
                      text=f"a copy of input map {c} at ({i}, {j}), nothing computed")
    else:
        result.update(source=None, result=float(first),
                      text=f"padding: the constant {float(first):g}, no input pixel")
    return result


_EXPLAINERS = {
    Conv2d: _conv, MaxPool2d: _pool, AvgPool2d: _pool, GlobalAvgPool2d: _global_pool,
    ConvTranspose2d: _deconv, Linear: _linear, Concat: _concat, Add: _merge, Sub: _merge,
    Mul: _merge, Div: _merge,
    Flatten: _flatten, ReLU: _elementwise, LeakyReLU: _elementwise, Sigmoid: _elementwise,
    Tanh: _elementwise, Dropout: _elementwise, BatchNorm2d: _elementwise, Resize: _resize,
    Pad: _moved, PixelShuffle: _moved, PixelUnshuffle: _moved, DepthToSpace: _moved,
    SpaceToDepth: _moved,
}


def view_kind(layer) -> str:
    """Which inside view the units of `layer` have: conv, deconv, maxpool, avgpool, gap, fc,
    concat, merge, flatten, elementwise, resize, moved, or other (value only)."""
    kinds = {Conv2d: "conv", ConvTranspose2d: "deconv", MaxPool2d: "maxpool",
             AvgPool2d: "avgpool",
             GlobalAvgPool2d: "gap", Linear: "fc", Concat: "concat", Flatten: "flatten",
             Resize: "resize", Pad: "moved", PixelShuffle: "moved", PixelUnshuffle: "moved",
             DepthToSpace: "moved", SpaceToDepth: "moved"}
    for kind, name in kinds.items():
        if isinstance(layer, kind):
            return name
    if isinstance(layer, (Add, Sub, Mul, Div)):
        return "merge"
    if _is_activation(layer) or isinstance(layer, (Dropout, BatchNorm2d)):
        return "elementwise"
    return "other"
