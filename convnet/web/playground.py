"""The lecture's arithmetic as a playground: one axis of N pixels, a filter of F taps with
dilation D, stride S and zero padding P. Every size and every message comes from
`convnet.core.arithmetic` (the engine's own rules, refusals and suggested fixes); this module
only lists where each window lands, so the page can draw it sliding.
"""

from __future__ import annotations

from convnet.core import arithmetic
from convnet.core.arithmetic import effective_size, window_fit
from convnet.core.errors import ShapeError

LIMIT = 64  # the largest N, F, S, P, D the page may ask for (a grid to draw, not a model)


class PlaygroundError(ValueError):
    """A request outside what the playground draws; the message says the limits."""


def _check(name: str, value: int, low: int) -> int:
    if not low <= value <= LIMIT:
        raise PlaygroundError(f"{name} must be between {low} and {LIMIT}, received {value}")
    return value


def window_play(n: int, f: int, s: int = 1, p: int = 0, d: int = 1) -> dict:
    """Output size and window positions of a convolution or pooling window along one axis;
    for a configuration that does not fit, the engine's explanation and fixes, and what
    flooring (strict=False, PyTorch) would give instead."""
    for name, value, low in (("N", n, 1), ("F", f, 1), ("S", s, 1), ("P", p, 0), ("D", d, 1)):
        _check(name, value, low)
    extent = effective_size(f, d)
    result = {"transposed": False, "n": n, "f": f, "s": s, "p": p, "d": d,
              "f_effective": extent, "padded": n + 2 * p,
              "lecture": "(N - F + 2P)/S + 1" + ("  with F = D*(F - 1) + 1" if d > 1 else ""),
              "taps": [t * d for t in range(f)]}
    try:
        fit = window_fit(n, f, s, (p, p), d, layer="conv", axis="width")
        result.update(fits=True, error=None)
    except ShapeError as error:
        result.update(fits=False, error=str(error))
        try:
            fit = window_fit(n, f, s, (p, p), d, strict=False, layer="conv", axis="width")
        except ShapeError:
            result.update(output=None, starts=[], dropped=None, formula=None)
            return result
    exact = (n - extent + 2 * p) / s + 1
    formula = f"({n} - {extent} + 2*{p})/{s} + 1 = "
    formula += f"{fit.output}" if not fit.dropped else f"{exact:.2f}, floored to {fit.output}"
    result.update(output=fit.output, dropped=fit.dropped, formula=formula,
                  starts=[o * s for o in range(fit.output)],
                  dilation_text=(f"dilation {d}: taps {d} pixels apart, a {f}-tap filter spans "
                                 f"{d}*({f} - 1) + 1 = {extent} pixels" if d > 1 else None))
    return result


def transposed_play(n: int, f: int, s: int = 1, p: int = 0, d: int = 1,
                    output_padding: int = 0) -> dict:
    """Output size of a transposed convolution along one axis, and which outputs each input
    unit scatters its filter to (o = i*S - P + k*D)."""
    for name, value, low in (("N", n, 1), ("F", f, 1), ("S", s, 1), ("P", p, 0), ("D", d, 1),
                             ("output padding", output_padding, 0)):
        _check(name, value, low)
    fit = getattr(arithmetic, "transposed_fit", None)
    if fit is None:
        raise PlaygroundError("transposed convolution is not in this build of the engine's "
                              "arithmetic (it comes with ConvTranspose2d)")
    result = {"transposed": True, "n": n, "f": f, "s": s, "p": p, "d": d,
              "output_padding": output_padding, "f_effective": effective_size(f, d),
              "lecture": "(N - 1)*S - 2P + D*(F - 1) + output_padding + 1",
              "taps": [t * d for t in range(f)]}
    try:
        arithmetic.check_output_padding((output_padding, output_padding), (s, s), (d, d),
                                        "deconv")
        out = fit(n, f, s, p, d, output_padding, layer="deconv", axis="width")
    except ShapeError as error:
        result.update(fits=False, error=str(error), output=None, scatter=[], formula=None)
        return result
    formula = arithmetic.transposed_formula(n, f, s, p, d, output_padding) + f" = {out}"
    scatter = [[i * s - p + k * d for k in range(f)] for i in range(n)]
    result.update(fits=True, error=None, output=out, formula=formula,
                  scatter=[[o if 0 <= o < out else None for o in row] for row in scatter])
    return result
