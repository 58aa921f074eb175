"""Caffe's learning-rate policies (SGDSolver::GetLearningRate) as one pure function.

    rate, current_step = learning_rate(param, iteration, current_step)

`param` is a SolverParameter; `current_step` is the solver's step counter, which only the "step"
and "multistep" policies change and which the solver saves in its state. Policies:

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)          (sets current_step to the floor)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ (-power)
    multistep  base_lr * gamma ^ current_step, where current_step advances by ONE when
               iter >= stepvalue[current_step] (Caffe tests with `if`, not `while`: one step per
               call, and the solver calls once per iteration)
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))

The arithmetic runs in double precision on the float32 parameter values and the result is rounded
to float32, as Caffe's `Dtype rate` is. Where Caffe would divide by zero (step with stepsize 0,
poly with max_iter 0) this raises SolverError instead.
"""
import math

import numpy as np

from ..errors import SolverError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


# Caffe's CHECKs in SGDSolver::GetLearningRate, per policy: gamma >= 0 and stepsize > 0 where the
# policy uses them (Caffe aborts at the first iteration; crema refuses the solver when it is made).
_NEEDS_GAMMA = ("step", "exp", "inv", "multistep", "sigmoid")
_NEEDS_STEPSIZE = ("step", "sigmoid")


def check_policy(param, label="solver"):
    """Raise SolverError for a policy Caffe would abort on (unknown name, gamma < 0, stepsize <=
    0 where used, poly without max_iter, stepvalues that do not increase)."""
    policy = param.lr_policy
    if policy not in POLICIES:
        raise SolverError(f"{label}: Unknown learning rate policy: \"{policy}\" (lr_policy must "
                          f"be one of {', '.join(POLICIES)})")
    if policy in _NEEDS_GAMMA and param.gamma < 0:
        raise SolverError(f"{label}: lr_policy \"{policy}\" needs gamma >= 0, got "
                          f"{param.gamma:g}")
    if policy in _NEEDS_STEPSIZE and param.stepsize <= 0:
        raise SolverError(f"{label}: lr_policy \"{policy}\" needs stepsize > 0, got "
                          f"{param.stepsize}")
    if policy == "poly" and param.max_iter <= 0:
        raise SolverError(f"{label}: lr_policy \"poly\" needs max_iter > 0, got {param.max_iter}")
    steps = list(param.stepvalue)
    if policy == "multistep" and any(b <= a for a, b in zip(steps, steps[1:])):
        raise SolverError(f"{label}: lr_policy \"multistep\" needs increasing stepvalue entries, "
                          f"got {steps}")


def learning_rate(param, iteration, current_step=0):
    """(rate as np.float32, new current_step) for `iteration` under `param.lr_policy`."""
    policy = param.lr_policy
    base_lr, gamma, power = param.base_lr, param.gamma, param.power
    it = int(iteration)
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        if param.stepsize <= 0:
            raise SolverError(f"lr_policy \"step\" needs stepsize > 0, got {param.stepsize}")
        current_step = it // param.stepsize
        rate = base_lr * math.pow(gamma, current_step)
    elif policy == "exp":
        rate = base_lr * _pow(gamma, it)
    elif policy == "inv":
        rate = base_lr * _pow(1.0 + gamma * it, -power)
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        rate = base_lr * _pow(gamma, current_step)
    elif policy == "poly":
        if param.max_iter <= 0:
            raise SolverError(f"lr_policy \"poly\" needs max_iter > 0, got {param.max_iter}")
        rate = base_lr * _pow(1.0 - it / param.max_iter, power)
    elif policy == "sigmoid":
        if param.stepsize <= 0:
            raise SolverError(f"lr_policy \"sigmoid\" needs stepsize > 0, got {param.stepsize}")
        z = -gamma * (it - param.stepsize)
        rate = base_lr * (1.0 / (1.0 + (math.inf if z > 709 else math.exp(z))))
    else:
        raise SolverError(f"Unknown learning rate policy: \"{policy}\" (lr_policy must be one of "
                          f"{', '.join(POLICIES)})")
    return np.float32(rate), current_step


def _pow(x, y):
    """C's pow: overflow gives inf and a negative base with a fractional exponent gives nan,
    instead of Python's exceptions and complex numbers."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.nan
