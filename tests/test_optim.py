"""Optimizers against torch.optim over several steps with hypothesis-drawn hyperparameters,
gradient-norm clipping against torch.nn.utils, and state that resumes exactly."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn

RTOL = 1e-5
ATOL = 1e-6
STEPS = 6

torch.set_num_threads(1)

shapes = st.lists(st.tuples(st.integers(1, 5), st.integers(1, 4)), min_size=1, max_size=3)


def _twins(rng, shape_list):
    """Our parameters and PyTorch leaf tensors holding the same values."""
    ours = [cn.Parameter(rng.standard_normal(shape).astype(np.float32)) for shape in shape_list]
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    return ours, theirs


def _run(opt, topt, ours, theirs, rng):
    for step in range(STEPS):
        for p, t in zip(ours, theirs, strict=True):
            grad = rng.standard_normal(p.shape).astype(np.float32)
            p.grad[...] = grad
            t.grad = torch.from_numpy(grad.copy())
        opt.step()
        topt.step()
        for index, (p, t) in enumerate(zip(ours, theirs, strict=True)):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=RTOL, atol=ATOL,
                                       err_msg=f"parameter {index} after step {step + 1}")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape_list=shapes,
       lr=st.sampled_from([0.1, 0.01, 0.5]), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       nesterov=st.booleans(), weight_decay=st.sampled_from([0.0, 1e-2, 0.3]))
def test_sgd_matches_torch(seed, shape_list, lr, momentum, nesterov, weight_decay):
    nesterov = nesterov and momentum > 0
    rng = np.random.default_rng(seed)
    ours, theirs = _twins(rng, shape_list)
    opt = cn.SGD(ours, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    topt = torch.optim.SGD(theirs, lr=lr, momentum=momentum, nesterov=nesterov,
                           weight_decay=weight_decay)
    _run(opt, topt, ours, theirs, rng)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape_list=shapes, decoupled=st.booleans(),
       lr=st.sampled_from([1e-3, 1e-2, 0.1]),
       betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]),
       eps=st.sampled_from([1e-8, 1e-6]), weight_decay=st.sampled_from([0.0, 1e-2, 0.1]))
def test_adam_and_adamw_match_torch(seed, shape_list, decoupled, lr, betas, eps, weight_decay):
    rng = np.random.default_rng(seed)
    ours, theirs = _twins(rng, shape_list)
    ours_type, torch_type = (cn.AdamW, torch.optim.AdamW) if decoupled else (
        cn.Adam, torch.optim.Adam)
    opt = ours_type(ours, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    topt = torch_type(theirs, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    _run(opt, topt, ours, theirs, rng)


def test_adamw_default_weight_decay_is_pytorchs():
    params = [cn.Parameter(np.zeros(2, np.float32))]
    assert cn.AdamW(params).weight_decay == torch.optim.AdamW(
        [torch.zeros(2, requires_grad=True)]).defaults["weight_decay"]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape_list=shapes,
       max_norm=st.sampled_from([0.1, 1.0, 5.0, 100.0]))
def test_clip_grad_norm_matches_torch(seed, shape_list, max_norm):
    rng = np.random.default_rng(seed)
    ours, theirs = _twins(rng, shape_list)
    for p, t in zip(ours, theirs, strict=True):
        p.grad[...] = 3 * rng.standard_normal(p.shape)
        t.grad = torch.from_numpy(p.grad.copy())
    norm = cn.clip_grad_norm_(ours, max_norm)
    tnorm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert norm == pytest.approx(float(tnorm), rel=1e-6)
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_clip_grad_norm_scales_to_the_limit():
    params = [cn.Parameter(np.zeros(2, np.float32)), cn.Parameter(np.zeros(1, np.float32))]
    params[0].grad[...] = [3.0, 0.0]
    params[1].grad[...] = [4.0]
    assert cn.clip_grad_norm_(params, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(params[0].grad, [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(params[1].grad, [0.8], rtol=1e-5)
    assert cn.clip_grad_norm_(params, 10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(params[1].grad, [0.8], rtol=1e-5)  # under the limit: unchanged


@pytest.mark.parametrize("make", [
    lambda ps: cn.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: cn.Adam(ps, lr=0.01),
    lambda ps: cn.AdamW(ps, lr=0.01, weight_decay=0.1),
], ids=["sgd", "adam", "adamw"])
def test_state_dict_resumes_exactly(make, rng):
    def fresh():
        return [cn.Parameter(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))]

    grads = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(6)]
    straight = fresh()
    opt = make(straight)
    for grad in grads:
        straight[0].grad[...] = grad
        opt.step()
    first_half = fresh()
    opt = make(first_half)
    for grad in grads[:3]:
        first_half[0].grad[...] = grad
        opt.step()
    saved = opt.state_dict()
    resumed = [cn.Parameter(first_half[0].data.copy())]
    opt = make(resumed)
    opt.load_state_dict(saved)
    for grad in grads[3:]:
        resumed[0].grad[...] = grad
        opt.step()
    np.testing.assert_array_equal(resumed[0].data, straight[0].data)


def test_loading_another_optimizers_state_is_refused():
    params = [cn.Parameter(np.zeros(2, np.float32))]
    with pytest.raises(ValueError, match="Adam: cannot load the state of a SGD optimizer"):
        cn.Adam(params).load_state_dict(cn.SGD(params, lr=0.1).state_dict())


def test_optimizers_take_named_parameters_and_zero_grad():
    model = cn.Sequential(cn.Linear(3, 2))
    opt = cn.SGD(model.named_parameters(), lr=0.1)
    assert len(opt.params) == 2
    model[0].weight.grad[...] = 1.0
    opt.zero_grad()
    assert not model[0].weight.grad.any()


def test_plain_sgd_step_is_w_minus_lr_g():
    p = cn.Parameter(np.array([1.0, -2.0], np.float32))
    p.grad[...] = [0.5, 0.25]
    cn.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, -2.025], rtol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda ps: cn.SGD(ps, lr=-1), "SGD: lr must be a number >= 0, received -1"),
    (lambda ps: cn.SGD(ps, lr=0.1, momentum=1.0),
     "SGD: momentum must be a number >= 0 and < 1.0, received 1.0"),
    (lambda ps: cn.SGD(ps, lr=0.1, nesterov=True), "SGD: nesterov=True needs momentum > 0"),
    (lambda ps: cn.Adam(ps, betas=(0.9, 1.0)),
     "Adam: betas[1] must be a number >= 0 and < 1.0, received 1.0"),
    (lambda ps: cn.AdamW(ps, weight_decay=-0.1),
     "AdamW: weight_decay must be a number >= 0, received -0.1"),
    (lambda ps: cn.SGD([], lr=0.1), "SGD: received no parameters to optimize"),
    (lambda ps: cn.clip_grad_norm_(ps, -1.0),
     "clip_grad_norm_: max_norm must be a number >= 0, received -1.0"),
])
def test_bad_hyperparameters(call, message):
    params = [cn.Parameter(np.zeros(2, np.float32))]
    with pytest.raises(ValueError) as info:
        call(params)
    assert str(info.value) == message


def test_arrays_instead_of_parameters_are_refused():
    with pytest.raises(TypeError, match="SGD: expected model.parameters\\(\\), received a "
                                        "ndarray among them"):
        cn.SGD([np.zeros(2)], lr=0.1)
