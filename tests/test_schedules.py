"""Learning-rate schedules against torch.optim.lr_scheduler where the two are equivalent."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn


def _pair(lr):
    ours = cn.SGD([cn.Parameter(np.zeros(1, np.float32))], lr=lr)
    theirs = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    return ours, theirs


def _compare(ours, theirs, opt, topt, steps):
    rates = [opt.lr]
    expected = [topt.param_groups[0]["lr"]]
    for _ in range(steps):
        ours.step()
        topt.step()  # PyTorch wants optimizer.step() before scheduler.step()
        theirs.step()
        rates.append(opt.lr)
        expected.append(topt.param_groups[0]["lr"])
    np.testing.assert_allclose(rates, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(lr=st.sampled_from([0.1, 0.05, 1.0]), step_size=st.integers(1, 7),
       gamma=st.sampled_from([0.1, 0.5, 0.9]), steps=st.integers(1, 30))
def test_step_lr_matches_torch(lr, step_size, gamma, steps):
    opt, topt = _pair(lr)
    _compare(cn.StepLR(opt, step_size, gamma),
             torch.optim.lr_scheduler.StepLR(topt, step_size, gamma), opt, topt, steps)


@settings(max_examples=15, deadline=None)
@given(lr=st.sampled_from([0.1, 0.05, 1.0]), t_max=st.integers(1, 25),
       eta_min=st.sampled_from([0.0, 1e-4, 0.01]))
def test_cosine_matches_torch_up_to_t_max(lr, t_max, eta_min):
    opt, topt = _pair(lr)
    _compare(cn.CosineAnnealingLR(opt, t_max, eta_min),
             torch.optim.lr_scheduler.CosineAnnealingLR(topt, t_max, eta_min), opt, topt, t_max)


@settings(max_examples=10, deadline=None)
@given(lr=st.sampled_from([0.1, 1.0]), warmup=st.integers(1, 10),
       start_factor=st.sampled_from([0.1, 0.01, 0.5]), steps=st.integers(1, 20))
def test_linear_warmup_matches_torch_linear_lr(lr, warmup, start_factor, steps):
    opt, topt = _pair(lr)
    ours = cn.LinearWarmup(opt, warmup, start_factor=start_factor)
    theirs = torch.optim.lr_scheduler.LinearLR(topt, start_factor=start_factor, end_factor=1.0,
                                               total_iters=warmup)
    _compare(ours, theirs, opt, topt, steps)


def test_cosine_stays_at_eta_min_after_t_max():
    opt, _ = _pair(0.1)
    schedule = cn.CosineAnnealingLR(opt, 4, eta_min=0.001)
    rates = [schedule.step() for _ in range(7)]
    assert rates[3:] == [pytest.approx(0.001)] * 4
    assert rates[1] == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi / 2)) / 2)


def test_warmup_then_cosine():
    opt, _ = _pair(1.0)
    after = cn.CosineAnnealingLR(opt, 10)
    schedule = cn.LinearWarmup(opt, 4, after=after, start_factor=0.2)
    assert opt.lr == pytest.approx(0.2)
    rates = [schedule.step() for _ in range(14)]
    np.testing.assert_allclose(rates[:3], [0.4, 0.6, 0.8])
    assert rates[3] == pytest.approx(1.0)  # warm-up done: the cosine starts at its top
    assert rates[8] == pytest.approx((1 + math.cos(math.pi * 5 / 10)) / 2)
    assert rates[13] == pytest.approx(0.0, abs=1e-12)


def test_constant_lr_keeps_the_base_rate():
    opt, _ = _pair(0.3)
    schedule = cn.ConstantLR(opt)
    assert [schedule.step() for _ in range(3)] == [0.3, 0.3, 0.3]


def test_schedule_state_resumes_exactly():
    opt, _ = _pair(0.1)
    schedule = cn.StepLR(opt, 3, 0.5)
    for _ in range(4):
        schedule.step()
    saved = schedule.state_dict()
    other, _ = _pair(0.1)
    resumed = cn.StepLR(other, 3, 0.5)
    resumed.load_state_dict(saved)
    assert other.lr == opt.lr == pytest.approx(0.05)
    assert resumed.step() == schedule.step()


@pytest.mark.parametrize("make, message", [
    (lambda opt: cn.StepLR(opt, 0), "StepLR: step_size must be >= 1, received 0"),
    (lambda opt: cn.CosineAnnealingLR(opt, 0), "CosineAnnealingLR: T_max must be >= 1, "
                                               "received 0"),
    (lambda opt: cn.LinearWarmup(opt, 0), "LinearWarmup: warmup must be >= 1, received 0"),
])
def test_bad_schedule_arguments(make, message):
    opt, _ = _pair(0.1)
    with pytest.raises(ValueError) as info:
        make(opt)
    assert str(info.value) == message
