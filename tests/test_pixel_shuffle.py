"""PixelShuffle, PixelUnshuffle, DepthToSpace, SpaceToDepth: PyTorch and onnx.reference
parity, the index-by-index oracle, inverse pairs, gradients and shape errors.

The layers only move values, so every comparison is exact (assert_array_equal). 80 draws of
each PyTorch pair and 40 of each ONNX operator.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own alias
from engine_checks import check_gradients, leaf
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import reference

torch.set_num_threads(1)
seeds = st.integers(0, 2**32 - 1)


@st.composite
def block_configs(draw):
    r = draw(st.integers(1, 4))
    return r, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 4)),
               draw(st.integers(1, 4)))


@settings(max_examples=80, deadline=None)
@given(config=block_configs(), seed=seeds)
def test_pixel_shuffle_and_unshuffle_match_torch(config, seed):
    r, (n, c, h, w) = config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c * r * r, h, w)).astype(np.float32)
    shuffle = cn.PixelShuffle(r)
    out = shuffle.forward(x)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = shuffle.backward(dy)
    tx = leaf(x)
    ty = F.pixel_shuffle(tx, r)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(out, ty.detach().numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())

    unshuffle = cn.PixelUnshuffle(r)
    back = unshuffle.forward(out)
    np.testing.assert_array_equal(back, F.pixel_unshuffle(ty.detach(), r).numpy())
    np.testing.assert_array_equal(back, x)  # the inverse
    np.testing.assert_array_equal(unshuffle.backward(x), out)


def _onnx(op, x, **attributes):
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node(op, ["x"], ["y"], **attributes)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x.shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)])
    return ReferenceEvaluator(helper.make_model(graph)).run(None, {"x": x})[0]


@settings(max_examples=40, deadline=None)
@given(config=block_configs(), seed=seeds, mode=st.sampled_from(["DCR", "CRD"]))
def test_depth_to_space_matches_onnx_and_the_oracle(config, seed, mode):
    r, (n, c, h, w) = config
    x = np.random.default_rng(seed).standard_normal((n, c * r * r, h, w)).astype(np.float32)
    out = cn.DepthToSpace(r, mode).forward(x)
    np.testing.assert_array_equal(out, _onnx("DepthToSpace", x, blocksize=r, mode=mode))
    np.testing.assert_array_equal(out, reference.depth_to_space(x, r, mode))
    if mode == "CRD":
        np.testing.assert_array_equal(out, cn.PixelShuffle(r).forward(x))


@settings(max_examples=40, deadline=None)
@given(config=block_configs(), seed=seeds)
def test_space_to_depth_matches_onnx_and_undoes_dcr(config, seed):
    r, (n, c, h, w) = config
    x = np.random.default_rng(seed).standard_normal((n, c, h * r, w * r)).astype(np.float32)
    out = cn.SpaceToDepth(r).forward(x)
    np.testing.assert_array_equal(out, _onnx("SpaceToDepth", x, blocksize=r))
    np.testing.assert_array_equal(out, reference.space_to_depth(x, r, "DCR"))
    np.testing.assert_array_equal(cn.DepthToSpace(r).forward(out), x)
    np.testing.assert_array_equal(cn.PixelUnshuffle(r).forward(x),
                                  reference.space_to_depth(x, r, "CRD"))


@pytest.mark.parametrize("layer, shape", [
    (lambda: cn.PixelShuffle(2), (2, 8, 3, 2)), (lambda: cn.PixelUnshuffle(2), (2, 2, 4, 6)),
    (lambda: cn.DepthToSpace(2), (1, 12, 2, 3)), (lambda: cn.SpaceToDepth(3), (1, 2, 3, 6))],
    ids=["shuffle", "unshuffle", "d2s", "s2d"])
def test_gradients_match_centred_differences(layer, shape, rng):
    check_gradients(layer(), rng.standard_normal(shape), rng)


def test_worked_example_of_the_two_orders():
    x = np.arange(8, dtype=np.float32).reshape(1, 8, 1, 1)  # channels 0..7, r = 2, C' = 2
    # CRD: output channel c takes input channels 4c .. 4c + 3 as its 2x2 block
    np.testing.assert_array_equal(cn.DepthToSpace(2, "CRD").forward(x)[0],
                                  [[[0, 1], [2, 3]], [[4, 5], [6, 7]]])
    # DCR: block position (i, j) takes input channels (2i + j) * 2 + c
    np.testing.assert_array_equal(cn.DepthToSpace(2, "DCR").forward(x)[0],
                                  [[[0, 2], [4, 6]], [[1, 3], [5, 7]]])


def test_shapes_names_receptive_fields_and_reprs():
    assert cn.PixelShuffle(3).output_shape((18, 4, 5)) == (2, 12, 15)
    assert cn.PixelUnshuffle(2).output_shape((3, 4, 6)) == (12, 2, 3)
    assert cn.DepthToSpace(2).output_shape((8, 1, 1)) == (2, 2, 2)
    assert cn.SpaceToDepth(2).output_shape((1, 4, 4)) == (4, 2, 2)
    model = cn.Sequential(cn.SpaceToDepth(2), cn.PixelShuffle(2), input_shape=(3, 8, 8))
    assert [layer.name for layer in model] == ["s2d1", "shuffle1"]
    field = model.receptive_field(cn.ReceptiveField(), (3, 8, 8))
    assert field.size == (2, 2) and field.jump == (2, 2)  # the 2x2 block, as a window
    assert repr(cn.DepthToSpace(2, "CRD")) == "DepthToSpace(blocksize=2, mode='CRD')"
    assert repr(cn.PixelShuffle(2)) == "PixelShuffle(upscale_factor=2)"


def test_errors_say_what_fits():
    with pytest.raises(cn.ShapeError, match=r"shuffle \(PixelShuffle\): 12 channels do not "
                                            r"split into blocks of 3x3 = 9; the input needs a "
                                            r"multiple of 9 channels, such as 9 or 18"):
        cn.PixelShuffle(3).output_shape((12, 4, 4))
    with pytest.raises(cn.ShapeError, match=r"input 7x8 does not tile into 2x2 blocks \(height "
                                            r"7 is not a multiple of 2\); crop to 6x8 or pad "
                                            r"to 8x8"):
        cn.SpaceToDepth(2).forward(np.zeros((1, 1, 7, 8), np.float32))
    with pytest.raises(ValueError, match="mode must be 'DCR' or 'CRD'"):
        cn.DepthToSpace(2, "RCD")
    with pytest.raises(ValueError, match="upscale_factor must be an int >= 1"):
        cn.PixelShuffle(0)
