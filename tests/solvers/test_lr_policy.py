"""Learning-rate policies against Caffe's formulas written out by hand."""
import math

import numpy as np
import pytest

from engine import crema_pb2
from engine.errors import SolverError
from engine.solvers import learning_rate


def param(**fields):
    p = crema_pb2.SolverParameter()
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    return p


def f32(x):
    return float(np.float32(x))


ITERS = [0, 1, 5, 9, 10, 11, 99, 100, 250]


@pytest.mark.parametrize("it", ITERS)
def test_fixed(it):
    rate, step = learning_rate(param(lr_policy="fixed", base_lr=0.01), it, 3)
    assert rate == np.float32(0.01) and step == 3


@pytest.mark.parametrize("it", ITERS)
def test_step(it):
    p = param(lr_policy="step", base_lr=0.1, gamma=0.5, stepsize=10)
    rate, step = learning_rate(p, it, 0)
    assert step == it // 10
    assert rate == pytest.approx(f32(0.1) * f32(0.5) ** (it // 10), rel=1e-6)


@pytest.mark.parametrize("it", ITERS)
def test_exp(it):
    rate, _ = learning_rate(param(lr_policy="exp", base_lr=0.1, gamma=0.99), it)
    assert rate == pytest.approx(f32(0.1) * f32(0.99) ** it, rel=1e-6)


@pytest.mark.parametrize("it", ITERS)
def test_inv(it):
    rate, _ = learning_rate(param(lr_policy="inv", base_lr=0.01, gamma=1e-4, power=0.75), it)
    assert rate == pytest.approx(f32(0.01) * (1 + f32(1e-4) * it) ** (-f32(0.75)), rel=1e-6)


@pytest.mark.parametrize("it", ITERS)
def test_poly(it):
    p = param(lr_policy="poly", base_lr=0.02, power=2.0, max_iter=250)
    rate, _ = learning_rate(p, it)
    assert rate == pytest.approx(f32(0.02) * (1 - it / 250) ** 2, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("it", ITERS)
def test_sigmoid(it):
    p = param(lr_policy="sigmoid", base_lr=0.1, gamma=-0.05, stepsize=100)
    rate, _ = learning_rate(p, it)
    assert rate == pytest.approx(f32(0.1) / (1 + math.exp(-f32(-0.05) * (it - 100))), rel=1e-6)


def test_multistep_advances_one_step_per_call():
    p = param(lr_policy="multistep", base_lr=1.0, gamma=0.1, stepvalue=[3, 5, 5, 8])
    step, seen = 0, []
    for it in range(10):
        rate, step = learning_rate(p, it, step)
        seen.append((step, rate))
    # Caffe checks `iter >= stepvalue[current_step]` once per call, so the repeated 5 takes effect
    # one iteration later (at 6).
    assert [s for s, _ in seen] == [0, 0, 0, 1, 1, 2, 3, 3, 4, 4]
    for s, rate in seen:
        assert rate == pytest.approx(0.1 ** s, rel=1e-6)


def test_multistep_resumes_from_saved_step():
    p = param(lr_policy="multistep", base_lr=1.0, gamma=0.5, stepvalue=[2, 4])
    rate, step = learning_rate(p, 7, 2)
    assert step == 2 and rate == pytest.approx(0.25)
    rate, step = learning_rate(p, 7, 0)  # a fresh step counter advances one step per call
    assert step == 1 and rate == pytest.approx(0.5)


def test_rate_is_float32():
    rate, _ = learning_rate(param(lr_policy="fixed", base_lr=0.1), 0)
    assert isinstance(rate, np.float32)


@pytest.mark.parametrize("fields, message", [
    (dict(lr_policy="bogus", base_lr=0.1), "Unknown learning rate policy"),
    (dict(base_lr=0.1), "Unknown learning rate policy"),
    (dict(lr_policy="step", base_lr=0.1, gamma=0.1), "stepsize"),
    (dict(lr_policy="poly", base_lr=0.1, power=1.0), "max_iter"),
])
def test_errors(fields, message):
    with pytest.raises(SolverError, match=message):
        learning_rate(param(**fields), 3)


@pytest.mark.parametrize("text,message", [
    ('lr_policy: "step" gamma: -0.1 stepsize: 10', "needs gamma >= 0"),
    ('lr_policy: "exp" gamma: -1', "needs gamma >= 0"),
    ('lr_policy: "inv" gamma: -0.5 power: 0.75', "needs gamma >= 0"),
    ('lr_policy: "multistep" gamma: -2 stepvalue: 5', "needs gamma >= 0"),
    ('lr_policy: "sigmoid" gamma: -1 stepsize: 5', "needs gamma >= 0"),
    ('lr_policy: "step" gamma: 0.1', "needs stepsize > 0"),
    ('lr_policy: "sigmoid" gamma: 0.1 stepsize: 0', "needs stepsize > 0"),
    ('lr_policy: "poly" power: 2', "needs max_iter > 0"),
    ('lr_policy: "multistep" gamma: 0.1 stepvalue: 10 stepvalue: 5', "increasing stepvalue"),
    ('lr_policy: "steep"', "Unknown learning rate policy"),
])
def test_solver_refuses_what_caffe_checks_before_training(text, message):
    from engine import get_solver
    from engine.errors import SolverError
    net = ('net_param { name: "n" layer { name: "in" type: "Input" top: "x" '
           'input_param { shape { dim: 1 } } } }')
    with pytest.raises(SolverError, match=message):
        get_solver(f"{net} base_lr: 0.1 {text}").step(1)
