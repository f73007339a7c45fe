"""Cross-entropy and multiclass SVM losses: values worked by hand, stability for huge scores,
and backward against centred differences."""

import math

import numpy as np
import pytest
from engine_checks import assert_gradient_matches

import convnet as cn


def _check_loss_gradient(loss_fn, scores, labels, rng):
    loss_fn.forward(scores, labels)
    dscores = loss_fn.backward()
    assert dscores.shape == scores.shape and dscores.dtype == scores.dtype
    assert_gradient_matches(dscores, lambda: loss_fn.forward(scores, labels), scores, rng,
                            type(loss_fn).__name__)


def test_cross_entropy_gradient_matches_centred_differences(rng):
    scores = 3 * rng.standard_normal((6, 5))
    _check_loss_gradient(cn.CrossEntropyLoss(), scores, rng.integers(0, 5, 6), rng)


def test_svm_gradient_matches_centred_differences(rng):
    # Scores on a grid of step 0.1 shifted by 0.05: every margin s_j - s_y + 1 is at least
    # 0.05 away from the hinge, far beyond the finite-difference step.
    scores = np.round(rng.uniform(-2, 2, (6, 5)), 1) + 0.05
    labels = rng.integers(0, 5, 6)
    margins = scores - scores[np.arange(6), labels][:, None] + 1
    assert np.abs(margins).min() > 0.01
    _check_loss_gradient(cn.SVMLoss(), scores, labels, rng)


def test_cross_entropy_of_equal_scores_is_log_of_the_number_of_classes():
    loss = cn.CrossEntropyLoss().forward(np.zeros((4, 10), np.float32), np.arange(4))
    assert loss == pytest.approx(math.log(10), rel=1e-6)


def test_cross_entropy_worked_example():
    scores = np.array([[3.2, 5.1, -1.7]], np.float32)
    expected = -math.log(math.exp(3.2) / (math.exp(3.2) + math.exp(5.1) + math.exp(-1.7)))
    assert cn.CrossEntropyLoss().forward(scores, [0]) == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_is_stable_for_huge_scores():
    scores = np.array([[1e4, 0.0, -1e4]], np.float32)
    loss_fn = cn.CrossEntropyLoss()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert loss_fn.forward(scores, [0]) == pytest.approx(0.0, abs=1e-6)
        assert loss_fn.forward(scores, [2]) == pytest.approx(2e4, rel=1e-6)
        grad = loss_fn.backward()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[1.0, 0.0, -1.0]], atol=1e-6)


def test_cross_entropy_gradient_is_softmax_minus_one_hot_over_n():
    scores = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    loss_fn = cn.CrossEntropyLoss()
    loss_fn.forward(scores, [2, 0])
    e = np.exp([1.0, 2.0, 3.0])
    expected = np.array([e / e.sum(), [1 / 3] * 3]) - np.array([[0, 0, 1], [1, 0, 0]])
    np.testing.assert_allclose(loss_fn.backward(), expected / 2, rtol=1e-6, atol=1e-7)


def test_svm_worked_example_from_the_course():
    # CS231n's three images and three classes (cat, car, frog): losses 2.9, 0 and 12.9.
    scores = np.array([[3.2, 1.3, 2.2], [5.1, 4.9, 2.5], [-1.7, 2.0, -3.1]], np.float32).T
    loss = cn.SVMLoss().forward(scores, np.array([0, 1, 2]))
    assert loss == pytest.approx((2.9 + 0.0 + 12.9) / 3, rel=1e-5)


def test_svm_gradient_counts_violated_margins():
    scores = np.array([[3.2, 5.1, -1.7]], np.float32)  # label 0: class 1 violates, class 2 not
    loss_fn = cn.SVMLoss()
    loss_fn.forward(scores, [0])
    np.testing.assert_array_equal(loss_fn.backward(), [[-1.0, 1.0, 0.0]])


def test_svm_alias():
    assert cn.MultiClassHingeLoss is cn.SVMLoss


@pytest.mark.parametrize("loss_fn", [cn.CrossEntropyLoss(), cn.SVMLoss()])
def test_backward_before_forward_raises(loss_fn):
    with pytest.raises(RuntimeError, match="call forward before backward"):
        type(loss_fn)().backward()


@pytest.mark.parametrize("loss_fn", [cn.CrossEntropyLoss(), cn.SVMLoss(margin=2.0)])
def test_labels_as_a_list_and_as_an_array_agree(loss_fn, rng):
    scores = rng.standard_normal((3, 4)).astype(np.float32)
    assert loss_fn.forward(scores, [1, 3, 0]) == loss_fn.forward(scores, np.array([1, 3, 0]))


# -- CrossEntropyLoss: dense prediction, class weights, ignore_index, reductions -----------------
# PyTorch parity: 150 draws (shapes (N, K) to (N, K, d1, d2), weights or none, random ignore
# masks, the three reductions), float32 both sides at engine_checks.assert_close.

import torch  # noqa: E402 - the PyTorch half of this file
import torch.nn.functional as F  # noqa: E402, N812 - PyTorch's own alias
from engine_checks import assert_close, leaf  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

torch.set_num_threads(1)


@st.composite
def cross_entropy_cases(draw):
    classes = draw(st.integers(1, 6))
    trailing = draw(st.sampled_from([(), (3,), (2, 4), (1, 5)]))
    shape = (draw(st.integers(1, 4)), classes, *trailing)
    return {"shape": shape, "weighted": draw(st.booleans()),
            "ignore_index": draw(st.sampled_from([-100, 0, classes - 1, 255])),
            "ignore_fraction": draw(st.sampled_from([0.0, 0.3, 1.0])),
            "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
            "scale": draw(st.sampled_from([1.0, 10.0]))}


def _draw_inputs(case, rng, dtype):
    shape = case["shape"]
    scores = (case["scale"] * rng.standard_normal(shape)).astype(dtype)
    labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    labels[rng.random(labels.shape) < case["ignore_fraction"]] = case["ignore_index"]
    weight = rng.uniform(0.2, 2.0, shape[1]).astype(dtype) if case["weighted"] else None
    return scores, labels, weight


@settings(max_examples=150, deadline=None)
@given(case=cross_entropy_cases(), seed=st.integers(0, 2**32 - 1))
def test_cross_entropy_matches_torch(case, seed):
    rng = np.random.default_rng(seed)
    scores, labels, weight = _draw_inputs(case, rng, np.float32)
    loss_fn = cn.CrossEntropyLoss(weight, case["ignore_index"], case["reduction"])
    value = loss_fn.forward(scores, labels)
    ts = leaf(scores)
    tw = None if weight is None else torch.from_numpy(weight)
    theirs = F.cross_entropy(ts, torch.from_numpy(labels), tw,
                             ignore_index=case["ignore_index"], reduction=case["reduction"])
    if case["reduction"] == "none":
        upstream = rng.standard_normal(labels.shape).astype(np.float32)
        dscores = loss_fn.backward(upstream)
        theirs.backward(torch.from_numpy(upstream))
        assert_close(value, theirs, "per-target losses")
    else:
        dscores = loss_fn.backward()
        theirs.backward()
        if np.isnan(theirs.item()):  # every target ignored
            assert np.isnan(value) and loss_fn.total_weight == 0
        else:
            assert_close(np.float32(value), theirs, "loss")
    assert dscores.dtype == np.float32
    assert_close(dscores, ts.grad, "score gradient")


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_in_chunks_over_two_threads_matches_torch(reduction, monkeypatch, rng):
    """A batch split into chunks of a few images over the worker threads (a class for each
    pixel: the loss's arrays are the size of the scores): the same loss and gradient as
    PyTorch, and as in one piece."""
    from convnet.core import backend

    scores, labels, weight = _draw_inputs({"shape": (9, 5, 6, 7), "scale": 3.0,
                                           "ignore_fraction": 0.2, "ignore_index": 1,
                                           "weighted": True}, rng, np.float32)
    upstream = rng.standard_normal(labels.shape).astype(np.float32)

    def run():
        loss_fn = cn.CrossEntropyLoss(weight, 1, reduction)
        value = loss_fn.forward(scores, labels)
        return value, loss_fn.backward(upstream if reduction == "none" else None)

    whole = run()
    previous = backend.num_threads()
    monkeypatch.setattr(backend, "ELEMENTWISE_CHUNK_BYTES", scores[0].nbytes * 2)
    monkeypatch.setattr(backend, "MIN_CHUNK_BYTES", 1)
    backend.set_num_threads(2)
    try:
        assert len(backend.sample_chunks(scores)) > 2
        value, dscores = run()
    finally:
        backend.set_num_threads(previous)
    np.testing.assert_array_equal(dscores, whole[1])
    np.testing.assert_array_equal(value, whole[0])
    ts = leaf(scores)
    theirs = F.cross_entropy(ts, torch.from_numpy(labels), torch.from_numpy(weight),
                             ignore_index=1, reduction=reduction)
    theirs.backward(torch.from_numpy(upstream) if reduction == "none" else None)
    assert_close(np.asarray(value, np.float32), theirs, "loss")
    assert_close(dscores, ts.grad, "score gradient")


@settings(max_examples=60, deadline=None)
@given(case=cross_entropy_cases(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_dense_cross_entropy_on_the_compiled_passes_is_the_numpy_paths(case, dtype, seed):
    """Dense predictions on `convnet.core.loss_kernels` (whatever their size here): the loss
    and the gradient bit for bit the NumPy path's (the kernels off), weights, ignored targets
    and every reduction; and PyTorch's."""
    from convnet.core import kernels, loss_kernels

    assume(len(case["shape"]) > 2)
    rng = np.random.default_rng(seed)
    scores, labels, weight = _draw_inputs(case, rng, dtype)
    upstream = rng.standard_normal(labels.shape).astype(dtype)

    def run(compiled: bool):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loss_kernels, "MIN_VALUES", 0)
            patch.setattr(kernels, "_enabled", compiled and kernels.available())
            assert loss_kernels.usable(scores) == (compiled and kernels.available())
            loss_fn = cn.CrossEntropyLoss(weight, case["ignore_index"], case["reduction"])
            value = loss_fn.forward(scores, labels)
            return value, loss_fn.backward(upstream if case["reduction"] == "none" else None)

    (value, dscores), (expected, expected_d) = run(True), run(False)
    np.testing.assert_array_equal(value, expected)
    np.testing.assert_array_equal(dscores, expected_d)
    if dtype == np.float32:
        ts = leaf(scores)
        tw = None if weight is None else torch.from_numpy(weight)
        theirs = F.cross_entropy(ts, torch.from_numpy(labels), tw,
                                 ignore_index=case["ignore_index"], reduction=case["reduction"])
        theirs.backward(torch.from_numpy(upstream) if case["reduction"] == "none" else None)
        if not np.isnan(theirs.detach().numpy()).all():
            assert_close(np.asarray(value, np.float32), theirs, "loss")
        assert_close(dscores, ts.grad, "score gradient")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4, 3), (3, 4, 5)])
def test_dense_weighted_ignoring_gradients_match_centred_differences(shape, reduction, rng):
    case = {"shape": shape, "weighted": True, "ignore_index": 1, "ignore_fraction": 0.2,
            "reduction": reduction, "scale": 3.0}
    scores, labels, weight = _draw_inputs(case, rng, np.float64)
    loss_fn = cn.CrossEntropyLoss(weight, ignore_index=1, reduction=reduction)
    upstream = rng.standard_normal(labels.shape)

    def loss():
        value = loss_fn.forward(scores, labels)
        return float((value * upstream).sum()) if reduction == "none" else value

    loss()
    dscores = loss_fn.backward(upstream if reduction == "none" else None)
    assert_gradient_matches(dscores, loss, scores, rng, f"CrossEntropyLoss {reduction}")


def test_weighted_mean_divides_by_the_weights_of_the_counted_targets():
    scores = np.zeros((3, 2), np.float32)  # every loss is log 2
    loss_fn = cn.CrossEntropyLoss(weight=[1.0, 3.0], ignore_index=-1)
    value = loss_fn.forward(scores, [0, 1, -1])
    assert value == pytest.approx(math.log(2), rel=1e-6)  # (1 + 3) log 2 / (1 + 3)
    assert loss_fn.total_weight == 4.0
    summed = cn.CrossEntropyLoss(weight=[1.0, 3.0], ignore_index=-1, reduction="sum")
    assert summed.forward(scores, [0, 1, -1]) == pytest.approx(4 * math.log(2), rel=1e-6)


def test_every_target_ignored_gives_nan_without_warnings_and_a_zero_gradient():
    loss_fn = cn.CrossEntropyLoss()
    with np.errstate(all="raise"):
        value = loss_fn.forward(np.ones((2, 3, 2, 2), np.float32), np.full((2, 2, 2), -100))
        grad = loss_fn.backward()
    assert math.isnan(value) and not math.isfinite(value) and loss_fn.total_weight == 0
    np.testing.assert_array_equal(grad, 0)


def test_dense_prediction_is_the_mean_over_every_position(rng):
    scores = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 3, 5))
    flat = scores.transpose(0, 2, 3, 1).reshape(-1, 4)  # one row per position
    assert cn.CrossEntropyLoss().forward(scores, labels) == pytest.approx(
        cn.CrossEntropyLoss().forward(flat, labels.reshape(-1)), rel=1e-6)


def test_cross_entropy_backward_is_once_per_forward_and_none_needs_the_upstream():
    loss_fn = cn.CrossEntropyLoss(reduction="none")
    losses = loss_fn.forward(np.zeros((2, 3), np.float32), [0, 2])
    assert losses.shape == (2,) and losses.dtype == np.float32
    with pytest.raises(ValueError, match=r"backward needs the gradient of the per-target "
                                         r"losses, backward\(dlosses\) with dlosses of shape "
                                         r"\(2,\)"):
        loss_fn.backward()
    loss_fn.forward(np.zeros((2, 3), np.float32), [0, 2])
    with pytest.raises(ValueError, match=r"expected dlosses of shape \(2,\)"):
        loss_fn.backward(np.ones(3))
    mean = cn.CrossEntropyLoss()
    mean.forward(np.zeros((2, 3), np.float32), [0, 2])
    mean.backward()
    with pytest.raises(RuntimeError, match="call forward before backward"):
        mean.backward()


def test_cross_entropy_refuses_bad_arguments():
    with pytest.raises(ValueError, match="reduction must be one of"):
        cn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="weight has 2 entries but the scores have 3 classes"):
        cn.CrossEntropyLoss(weight=[1.0, 2.0]).forward(np.zeros((1, 3), np.float32), [0])
    with pytest.raises(ValueError, match=r"expected labels of shape \(2, 4\) to match scores "
                                         r"\(2, 3, 4\), received \(2,\)"):
        cn.CrossEntropyLoss().forward(np.zeros((2, 3, 4), np.float32), [0, 1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\], received values "
                                         r"from 0 to 5"):  # the ignored -100 not counted
        cn.CrossEntropyLoss().forward(np.zeros((3, 3), np.float32), [0, -100, 5])
