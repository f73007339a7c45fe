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
