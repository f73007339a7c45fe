"""Backprop you can check: every layer's analytic gradients against centred differences.

    report = cn.gradcheck(model, x, y)     # x (N, C, H, W), y (N,) class labels
    print(report)                          # a table of relative errors with a verdict
    report.ok                              # True when no gradient is wrong

As CS231n's gradient check does, in float64 on a copy of the model (the model itself is left
as it is), with two views:

- each layer alone, on the input that really reaches it in the model (plus a little noise, so
  that no value sits on a ReLU kink or in a max-pool tie), for L = sum(layer(x) * g) with a
  fixed random g: dL/d(its input) and dL/d(each of its parameters);
- the whole model through the loss (cross-entropy on the first output's scores with labels y,
  or sum(output * g) without them): dL/dx and dL/d(every parameter).

The numeric gradient of a coordinate is (L(w + eps) - L(w - eps)) / (2 eps); up to `coords`
coordinates of each array are checked, half of them where backward gives a non-zero gradient
and the rest anywhere. The relative error of an array is
||analytic - numeric|| / (||analytic|| + ||numeric||) over those coordinates: about 1e-9 when
backward is right, near 1 when it is wrong. Dropout masks are kept fixed (the generator is
reset before each forward); batch norm uses the batch's statistics, as in training.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy

from convnet.core import rng
from convnet.nn.graph import Model, first_output, first_output_gradient
from convnet.nn.layer import Layer, no_grad
from convnet.nn.losses import CrossEntropyLoss

EPS = 1e-6  # centred differences in float64: truncation ~ EPS**2, round-off ~ 1e-16 / EPS
NOISE = 1e-3  # relative size of the noise added to a layer's input in the per-layer check
# CS231n's reading of relative errors: below 1e-7 you should be happy; above 1e-2 the gradient
# is probably wrong; in between a kink (ReLU, max pool) may have been crossed.
OK_BELOW = 1e-6
WRONG_FROM = 1e-2
# A generous bound on the relative round-off of a float64 loss (some 500 machine epsilons):
# gradients whose norm is below ROUNDOFF * |L| / eps are zero as far as centred differences
# can tell (a conv bias followed by batch norm, say), and are reported as "ok (zero)".
ROUNDOFF = 1e-13


@dataclass
class GradRow:
    """One array's check: which gradient, how many coordinates, how far apart."""

    layer: str  # the layer's name, or "model" for the whole-model check
    type: str  # the layer's class, or the loss of the whole-model check
    array: str  # "input", "input 1", "weight", "conv1.bias", ...
    shape: tuple
    coords: int  # coordinates compared
    rel_error: float
    max_abs_error: float
    verdict: str  # "ok", "ok (zero)", "doubtful" or "WRONG"


@dataclass
class GradCheck:
    """The rows of a gradient check (`str()` gives the table, `to_dict()` the numbers)."""

    layers: list[GradRow] = field(default_factory=list)  # each layer alone
    model: list[GradRow] = field(default_factory=list)  # the whole model through the loss
    samples: int = 0
    eps: float = EPS
    coords: int = 0
    loss: str = ""

    @property
    def rows(self) -> list[GradRow]:
        return self.layers + self.model

    @property
    def ok(self) -> bool:
        """No gradient is wrong (doubtful ones, near a kink, still count as right)."""
        return all(row.verdict != "WRONG" for row in self.rows)

    @property
    def worst(self) -> float:
        """The largest relative error of the gradients that are not zero: a zero gradient's
        relative error compares two round-off residues (4.6e-4 for a conv bias before batch
        norm, measured) and says nothing about the backward."""
        return max((row.rel_error for row in self.rows if row.verdict != "ok (zero)"),
                   default=0.0)

    @property
    def verdict(self) -> str:
        wrong = [row for row in self.rows if row.verdict == "WRONG"]
        doubtful = [row for row in self.rows if row.verdict == "doubtful"]
        if wrong:
            names = ", ".join(f"{row.layer} {row.array}" for row in wrong[:6])
            return (f"WRONG: {len(wrong)} of {len(self.rows)} gradients disagree with centred "
                    f"differences ({names}{', ...' if len(wrong) > 6 else ''}); that "
                    f"backward is not the derivative of its forward")
        zero = sum(row.verdict == "ok (zero)" for row in self.rows)
        text = (f"all {len(self.rows)} gradients match centred differences (largest relative "
                f"error {self.worst:.1e}"
                + (f"; {zero} zero as far as differences can tell, as a bias before batch "
                   f"norm is)" if zero else ")"))
        if doubtful:
            text += (f"; {len(doubtful)} only to within {WRONG_FROM:g}, as when a perturbation "
                     f"crosses a ReLU kink or a max-pool tie: run again with another seed")
        return text

    def to_dict(self) -> dict:
        return {"samples": self.samples, "eps": self.eps, "coords": self.coords,
                "loss": self.loss, "ok": self.ok, "verdict": self.verdict,
                "largest_rel_error": self.worst,
                "layers": [asdict(row) for row in self.layers],
                "model": [asdict(row) for row in self.model]}

    def __str__(self) -> str:
        header = ("layer", "type", "gradient", "shape", "checked", "rel. error", "verdict")

        def cells(row):
            return (row.layer, row.type, row.array, "x".join(map(str, row.shape)),
                    str(row.coords), f"{row.rel_error:.1e}", row.verdict)

        body = [cells(row) for row in self.rows]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

        def fmt(line):
            return "  ".join(cell.rjust(widths[i]) if i in (4, 5) else cell.ljust(widths[i])
                             for i, cell in enumerate(line)).rstrip()

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [f"Gradient check: backward vs centred differences in float64 (eps "
                 f"{self.eps:g}),",
                 f"{self.samples} sample(s), up to {self.coords} coordinates per array; "
                 "relative error ||a - n|| / (||a|| + ||n||)",
                 f"of analytic a and numeric n: ok below {OK_BELOW:g}, WRONG from "
                 f"{WRONG_FROM:g}, ok (zero) when both are round-off",
                 rule, fmt(header), rule]
        if self.layers:
            lines.append("each layer alone on its real input, L = sum(layer(x) * g):")
            lines += [fmt(cells(row)) for row in self.layers]
        if self.model:
            lines.append(f"the whole model through the loss ({self.loss}):")
            lines += [fmt(cells(row)) for row in self.model]
        lines += [rule, f"verdict: {self.verdict}"]
        return "\n".join(lines)


def verdict_for(rel_error: float, zero: bool = False) -> str:
    if not math.isfinite(rel_error) or rel_error >= WRONG_FROM:
        return "WRONG"
    if zero:
        return "ok (zero)"
    return "ok" if rel_error < OK_BELOW else "doubtful"


def relative_error(analytic, numeric, floor: float = 0.0) -> float:
    """||a - n|| / (||a|| + ||n||), the denominator at least `floor`."""
    analytic = numpy.asarray(analytic, dtype=numpy.float64).ravel()
    numeric = numpy.asarray(numeric, dtype=numpy.float64).ravel()
    scale = max(numpy.linalg.norm(analytic) + numpy.linalg.norm(numeric), floor)
    if scale == 0:
        return 0.0
    return float(numpy.linalg.norm(analytic - numeric) / scale)


def roundoff_floor(loss_value: float, count: int, eps: float) -> float:
    """The norm below which a centred difference of `count` coordinates cannot tell a
    gradient from zero: about ROUNDOFF * |L| / eps per coordinate."""
    return math.sqrt(count) * ROUNDOFF * max(1.0, abs(loss_value)) / eps


def _coordinates(analytic, count: int, generator) -> list[tuple]:
    """Up to `count` coordinates: half where backward says the gradient is not zero (a max
    pool routes it to one input in four), the rest anywhere."""
    shape = analytic.shape
    size = math.prod(shape)
    if size <= count:
        flat = numpy.arange(size)
    else:
        nonzero = numpy.flatnonzero(analytic)
        half = min(count // 2, nonzero.size)
        chosen = set(generator.choice(nonzero, half, replace=False).tolist()) if half else set()
        while len(chosen) < count:
            chosen.add(int(generator.integers(size)))
        flat = numpy.array(sorted(chosen))
    return [numpy.unravel_index(int(i), shape) for i in flat]


def _compare(loss, array, analytic, count, generator, eps, where) -> GradRow:
    """The row of analytic vs numeric dL/darray (`where`: layer, type, array label);
    `array` is perturbed in place and restored."""
    picked = _coordinates(numpy.asarray(analytic), count, generator)
    centre = loss()
    numeric = []
    for index in picked:
        old = array[index]
        array[index] = old + eps
        plus = loss()
        array[index] = old - eps
        minus = loss()
        array[index] = old
        numeric.append((plus - minus) / (2 * eps))
    chosen = numpy.array([analytic[index] for index in picked], dtype=numpy.float64)
    numeric = numpy.array(numeric, dtype=numpy.float64)
    worst = float(numpy.abs(chosen - numeric).max(initial=0.0))
    floor = roundoff_floor(centre, len(picked), eps)
    rel = relative_error(chosen, numeric, floor)
    zero = (numpy.linalg.norm(chosen) + numpy.linalg.norm(numeric)) < floor
    return GradRow(*where, tuple(array.shape), len(picked), rel, worst, verdict_for(rel, zero))


def _parameters(layer: Layer) -> list[tuple[str, object]]:
    """(name, Parameter) of a layer and its sub-layers, named by the owning layer."""
    found, seen = [], set()
    for module in layer.modules():
        for name, param in module.own_parameters().items():
            if id(param) not in seen:
                seen.add(id(param))
                label = name if module is layer else f"{module.name}.{name}"
                found.append((label, param))
    return found


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _stage_inputs(model: Layer, inputs: list) -> list[tuple[str, Layer, list]]:
    """(name, layer, [input arrays]) of each stage for these model inputs, no caches kept."""
    with no_grad():
        if isinstance(model, Model):
            model.forward(*inputs, keep=set(range(model.slots)))
            kept = dict(model.kept)
            for slot, array in zip(model.input_slots, inputs, strict=True):
                kept[slot] = array
            model.kept = {}
            return [(model.slot_names[step.outputs[0]], step.layer,
                     [kept[s] for s in step.inputs]) for step in model.steps]
        layers = list(getattr(model, "layers", None) or [model])
        stages, x = [], inputs[0]
        for layer in layers:
            stages.append((layer.name, layer, [x]))
            x = layer.forward(x)
        return stages


def _check_layer(name, layer, xs, generator, coords, eps, fixed_state) -> list[GradRow]:
    """L = sum(layer(xs) * g): its input and parameter gradients against centred differences."""
    xs = [x + NOISE * (float(numpy.std(x)) or 1.0) * generator.standard_normal(x.shape)
          for x in xs]
    given = xs if layer.multi_input else xs[0]

    def run():
        rng.set_state(fixed_state)
        return _as_list(layer.forward(given))

    outs = run()
    gs = [generator.standard_normal(out.shape) for out in outs]

    def loss() -> float:
        with no_grad():
            return float(sum((out * g).sum() for out, g in zip(run(), gs, strict=True)))

    layer.zero_grad()
    grads = layer.backward([g.copy() for g in gs] if layer.multi_output else gs[0].copy())
    grads = _as_list(grads)
    rows = []
    kind = type(layer).__name__
    for position, (x, dx) in enumerate(zip(xs, grads, strict=True)):
        label = "input" if len(xs) == 1 else f"input {position}"
        rows.append(_compare(loss, x, dx, coords, generator, eps, (name, kind, label)))
    for label, param in _parameters(layer):
        rows.append(_compare(loss, param.data, param.grad.copy(), coords, generator, eps,
                             (name, kind, label)))
    return rows


def gradcheck(model: Layer, x, y=None, *, coords: int = 8, eps: float = EPS, seed: int = 0,
              layers: bool = True, whole: bool = True) -> GradCheck:
    """Check `model`'s backward against centred differences (see the module doc).

    x: the input batch (a list of arrays for a graph model with several inputs); a few samples
    are enough. y: integer class labels for the cross-entropy loss on the first output's
    scores (N, K); None checks L = sum(output * g) instead. coords: coordinates per array.
    layers / whole: run the per-layer check / the whole-model check.
    """
    if coords < 1:
        raise ValueError(f"gradcheck: coords must be >= 1, received {coords}")
    generator = numpy.random.default_rng(seed)
    checked = copy.deepcopy(model).astype(numpy.float64).train()
    inputs = [numpy.array(array, dtype=numpy.float64) for array in _as_list(x)]
    samples = int(inputs[0].shape[0]) if inputs[0].ndim else 1
    saved_state = rng.get_state()
    fixed_state = copy.deepcopy(saved_state)
    report = GradCheck(samples=samples, eps=eps, coords=coords)
    try:
        if layers:
            rng.set_state(fixed_state)
            for name, layer, xs in _stage_inputs(checked, inputs):
                report.layers += _check_layer(name, layer, xs, generator, coords, eps,
                                              fixed_state)
        if whole:
            report.model = _check_model(checked, inputs, y, generator, coords, eps,
                                        fixed_state, report)
    finally:
        rng.set_state(saved_state)
    return report


def _check_model(model, inputs, y, generator, coords, eps, fixed_state,
                 report) -> list[GradRow]:
    def run():
        rng.set_state(fixed_state)
        return model.forward(*inputs) if isinstance(model, Model) else model.forward(inputs[0])

    outputs = _as_list(run())
    scores = outputs[0]
    use_labels = y is not None and scores.ndim == 2
    if use_labels:
        labels = numpy.asarray(y)
        report.loss = "cross-entropy on the scores"
        loss_fn = CrossEntropyLoss()
        loss_fn.forward(scores, labels)
        top = loss_fn.backward()
        grads = first_output_gradient(model, top)

        def loss() -> float:
            with no_grad():
                return float(CrossEntropyLoss().forward(first_output(run()), labels))
    else:
        report.loss = "sum(output * g)"
        gs = [generator.standard_normal(out.shape) for out in outputs]
        grads = gs if len(gs) > 1 else gs[0]

        def loss() -> float:
            with no_grad():
                return float(sum((out * g).sum()
                                 for out, g in zip(_as_list(run()), gs, strict=True)))

    model.zero_grad()
    dxs = _as_list(model.backward(grads))
    rows = []
    for position, (x, dx) in enumerate(zip(inputs, dxs, strict=True)):
        label = "input" if len(inputs) == 1 else f"input {position}"
        rows.append(_compare(loss, x, dx, coords, generator, eps, ("model", "loss", label)))
    for module in model.modules():
        for pname, param in module.own_parameters().items():
            rows.append(_compare(loss, param.data, param.grad.copy(), coords, generator, eps,
                                 ("model", "loss", f"{module.name}.{pname}")))
    return rows
