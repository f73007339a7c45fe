"""The error function without SciPy: erf and erfc of an array, to about one unit in the last
place of float64.

NumPy has no erf, and `numpy.vectorize(math.erf)` costs about 100 ns an element. This is the
algorithm of Sun's fdlibm `s_erf.c` (the one C libraries and Java's StrictMath use), written
once for whole arrays: on each of four ranges of |x| a rational approximation whose
coefficients are fdlibm's, checked against `math.erf` on a dense grid in tests/test_special.py.
Work is in float64 whatever the input dtype; the result is cast back.
"""

from __future__ import annotations

import numpy

from convnet.core.backend import array_module

# |x| < 0.84375: erf(x) = x + x * P(x^2) / Q(x^2).
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02,
       5.08130628187576562776e-03, 1.32494738004321644526e-04, -3.96022827877536812320e-06)
# 0.84375 <= |x| < 1.25: erf(|x|) = erx + P(s) / Q(s), s = |x| - 1.
_ERX = 8.45062911510467529297e-01
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01,
       7.18286544141962662868e-02, 1.26171219808761642112e-01, 1.36370839120290507362e-02,
       1.19844998467991074170e-02)
# 1.25 <= |x| < 1/0.35: erfc(|x|) = exp(-x^2 - 0.5625 + R(s) / S(s)) / |x|, s = 1 / x^2.
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
# 1/0.35 <= |x| < 28: the same form with other coefficients; beyond 28 erfc underflows.
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)


def _poly(coefficients, t):
    """c0 + c1 t + c2 t^2 + ... by Horner's rule."""
    out = numpy.full_like(t, coefficients[-1])
    for c in coefficients[-2::-1]:
        out *= t
        out += c
    return out


def _erfc_tail(a):
    """erfc(a) for a >= 1.25 (float64). exp(-a^2) is taken as exp(-z^2) exp((z - a)(z + a))
    with z = a rounded to 32 bits of mantissa, so that z^2 is exact and a^2's rounding error
    (up to 28^2 ulp) does not reach the result."""
    s = 1.0 / (a * a)
    near = a < 1 / 0.35
    ratio = numpy.where(near, _poly(_RA, s) / _poly(_SA, s), _poly(_RB, s) / _poly(_SB, s))
    z = (a.view(numpy.uint64) & numpy.uint64(0xFFFFFFFF00000000)).view(numpy.float64)
    with numpy.errstate(under="ignore"):
        return numpy.exp(-z * z - 0.5625) * numpy.exp((z - a) * (z + a) + ratio) / a


def _evaluate(x, complement: bool):
    """erf(x), or erfc(x) when `complement`, of a flat float64 array; each range of |x| is
    gathered, computed in the form accurate there, and put back once."""
    a = numpy.abs(x)
    out = numpy.empty_like(x)
    small = numpy.flatnonzero(a < 0.84375)  # most values of a unit-scale input
    t = x[small]
    y = _poly(_PP, t * t) / _poly(_QQ, t * t)  # erf(t) = t + t y
    if complement:  # from 1/4 on as 1/2 - (t y + (t - 1/2)), which rounds once less
        out[small] = numpy.where(t < 0.25, 1.0 - (t + t * y), 0.5 - (t * y + (t - 0.5)))
    else:
        out[small] = t + t * y
    middle = numpy.flatnonzero((a >= 0.84375) & (a < 1.25))
    t = x[middle]
    ratio = _poly(_PA, a[middle] - 1.0) / _poly(_QA, a[middle] - 1.0)  # erf(|t|) = erx + ratio
    if complement:
        out[middle] = numpy.where(t > 0, (1.0 - _ERX) - ratio, 1.0 + (_ERX + ratio))
    else:
        out[middle] = numpy.copysign(_ERX + ratio, t)
    tail = numpy.flatnonzero(a >= 1.25)  # also inf; nan is in no range
    t = x[tail]
    with numpy.errstate(invalid="ignore"):  # inf: exp(-inf) * exp(nan) / inf, replaced below
        tiny = _erfc_tail(numpy.minimum(a[tail], 28.0))  # erfc(|x|), 0 from 27.3 on
    tiny[a[tail] >= 28] = 0.0
    if complement:
        out[tail] = numpy.where(t > 0, tiny, 2.0 - tiny)
    else:
        out[tail] = numpy.copysign(1.0 - tiny, t)
    out[numpy.isnan(x)] = numpy.nan
    return out


def _apply(x, complement: bool):
    xp = array_module(x)
    x = xp.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else numpy.float64
    x64 = numpy.asarray(x, dtype=numpy.float64)
    return _evaluate(x64.ravel(), complement).reshape(x64.shape).astype(dtype, copy=False)


def erf(x):
    """The error function (2/sqrt(pi)) * integral_0^x exp(-t^2) dt, elementwise, in x's dtype
    (float64 for integers)."""
    return _apply(x, complement=False)


def erfc(x):
    """1 - erf(x), elementwise, accurate also where it is tiny (large positive x)."""
    return _apply(x, complement=True)
