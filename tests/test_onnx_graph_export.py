"""Graph models of the tensor-op, resizing, padding and activation layers: exported to ONNX
(checked with full_check) and run by onnxruntime, imported back, and rebuilt from their spec,
all with the same outputs."""

import numpy as np
import pytest
from exchange_helpers import assert_close, ort_session

import convnet as cn
from convnet.io import spec

pytest.importorskip("onnxruntime")


def _graphs():
    """(id, builder) where builder(rng) gives (model, input shape)."""
    def reshape_permute(rng):
        x = cn.Input((6, 4, 5))
        y = cn.Reshape((2, 3), start_dim=1, end_dim=1)(x)
        y = cn.Permute([0, 2, 1, 3, 4])(y)
        y = cn.Reshape((-1,), start_dim=1, end_dim=2)(y)
        return cn.Model(x, cn.Reshape((6, 20))(y)), (6, 4, 5)

    def split_slice(rng):
        x = cn.Input((5, 6, 6))
        a, b = cn.Split([2, 3])(x)
        c = cn.Slice([2, 3], [1, 0], [2**62, 5], [2, 1])(b)
        return cn.Model(x, [a, c]), (5, 6, 6)

    def reductions(rng):
        x = cn.Input((3, 4, 5))
        outs = [cn.ReduceMean((2, 3), keepdim=True)(x), cn.ReduceMax(1)(x),
                cn.ReduceSum((-1,))(x)]
        return cn.Model(x, outs), (3, 4, 5)

    def matmul_constant(rng):
        x = cn.Input((3, 4, 5))
        w = cn.Constant(rng.normal(size=(3, 5, 2)), trainable=True)(x)
        y = cn.MatMul()([x, w])
        shift = cn.Constant(rng.normal(size=(1, 1, 2)))(y)
        return cn.Model(x, [cn.Add()([y, shift]), cn.Concat(axis=2)([y, w])]), (3, 4, 5)

    def norms(rng):
        x = cn.Input((6, 4, 5))
        ln = cn.LayerNorm(5, eps=1e-3)
        ln.weight.data[...] = rng.normal(size=5)
        ln.bias.data[...] = rng.normal(size=5)
        y = ln(cn.LocalResponseNorm(5, alpha=0.2, beta=0.75, k=2.0)(x))
        return cn.Model(x, cn.LayerNorm((4, 5), elementwise_affine=False)(y)), (6, 4, 5)

    def pointwise(rng):
        x = cn.Input((2, 3, 3))
        y = cn.Erf()(x)
        z = cn.Sqrt()(cn.Add()([cn.Abs()(x), cn.Exp()(cn.Neg()(x))]))
        w = cn.Log()(cn.Reciprocal()(cn.Pow(2.0)(z)))
        return cn.Model(x, [y, w, cn.Pow(1.5)(z)]), (2, 3, 3)

    def upsampling(rng):
        x = cn.Input((4, 5, 6))
        up = cn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
        a = up(x)
        b = cn.Upsample(scale_factor=2, mode="bilinear")(x)
        c = cn.Resize(size=(7, 9), mode="nearest", coordinate_transformation_mode="half_pixel",
                      nearest_mode="round_prefer_ceil")(x)
        d = cn.Resize(scales=(1.5, 2.0), mode="linear",
                      coordinate_transformation_mode="align_corners")(x)
        e = cn.Upsample(scale_factor=2)(x)
        return cn.Model(x, [a, b, c, d, e]), (4, 5, 6)

    def pixels_and_padding(rng):
        x = cn.Input((8, 4, 6))
        outs = [cn.PixelShuffle(2)(x), cn.DepthToSpace(2)(x),
                cn.DepthToSpace(2, mode="CRD")(x), cn.SpaceToDepth(2)(x),
                cn.PixelUnshuffle(2)(x), cn.ZeroPad2d((1, 0, 2, 1))(x),
                cn.Pad((1, 2, 0, 1), mode="reflect")(x), cn.Pad(1, mode="replicate")(x),
                cn.Pad((-1, 1, 1, -1), value=0.5)(x)]
        return cn.Model(x, outs), (8, 4, 6)

    def activations(rng):
        x = cn.Input((3, 4, 4))
        prelu = cn.PReLU(3)
        prelu.weight.data[...] = rng.uniform(0.1, 0.5, 3)
        outs = [cn.ReLU6()(x), cn.Hardtanh(-0.5, 2.0)(x), cn.Hardsigmoid()(x),
                cn.Hardsigmoid(alpha=0.2, beta=0.5)(x), cn.Hardswish()(x), cn.SiLU()(x),
                cn.ELU(0.7)(x), cn.GELU()(x), cn.GELU("tanh")(x), prelu(x), cn.PReLU()(x),
                cn.LogSoftmax(dim=2)(x), cn.Softmax(dim=-1)(x)]
        return cn.Model(x, outs), (3, 4, 4)

    return {"upsampling": upsampling, "pixels-and-padding": pixels_and_padding,
            "activations": activations, "reshape-permute": reshape_permute,
            "split-slice": split_slice,
            "reductions": reductions, "matmul-constant": matmul_constant, "norms": norms,
            "pointwise": pointwise}


@pytest.mark.parametrize("name", list(_graphs()))
def test_graph_exports_match_onnxruntime_and_rebuild_from_spec(name, rng):
    model, shape = _graphs()[name](rng)
    model.eval()
    x = rng.normal(size=(3, *shape)).astype(np.float32)
    ours = model.forward(x)
    ours = list(ours) if isinstance(ours, tuple) else [ours]
    session = ort_session(cn.onnx.to_onnx(model, shape))
    theirs = session.run(None, {session.get_inputs()[0].name: x})
    assert len(theirs) == len(ours)
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a, b)
    imported = cn.onnx.from_onnx(cn.onnx.to_onnx(model, shape))
    again = imported.forward(x)
    for a, b in zip(ours, list(again) if isinstance(again, tuple) else [again], strict=True):
        assert_close(a, b)  # import -> export -> import keeps the outputs
    rebuilt = spec.build(spec.to_spec(model))
    rebuilt.load_state_dict(model.state_dict())
    again = rebuilt.forward(x)
    for a, b in zip(ours, list(again) if isinstance(again, tuple) else [again], strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_even_local_response_norm_is_refused_at_export():
    model = cn.Sequential(cn.LocalResponseNorm(4))
    with pytest.raises(ValueError, match="size 4 is even"):
        cn.onnx.to_onnx(model, (6, 3, 3))
