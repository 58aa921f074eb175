"""Caffe's SGD solver family (sgd_solver.cpp and the solvers beside it): ApplyUpdate and one
ComputeUpdateValue per update rule.

ApplyUpdate, per iteration, in Caffe's order:
  rate = lr_policy(iter)                          ("Iteration N, lr = x" at display iterations)
  clip:       clip_gradients >= 0 and the L2 norm of ALL learnable diffs exceeds it -> every diff
              is scaled by clip_gradients / norm (before normalization, as in Caffe)
  per learnable parameter i (local_rate = rate * lr_mult[i], local_decay = weight_decay *
  decay_mult[i]):
    normalize:  diff *= 1 / iter_size
    regularize: L2: diff += local_decay * data;  L1: diff += local_decay * sign(data)
    update value (below), left in diff
  data -= diff for every learnable parameter
Update rules, g = diff, history arrays h (and h2) per parameter:
  SGD       h = momentum*h + local_rate*g;              update = h
  Nesterov  h_prev = h; h = momentum*h + local_rate*g;  update = (1+momentum)*h - momentum*h_prev
  AdaGrad   h += g^2;                                   update = local_rate * g / (sqrt(h) + delta)
  RMSProp   h = rms_decay*h + (1-rms_decay)*g^2;        update = local_rate * g / (sqrt(h) + delta)
  AdaDelta  h = momentum*h + (1-momentum)*g^2;
            u = g * sqrt((h2 + delta) / (h + delta));
            h2 = momentum*h2 + (1-momentum)*u^2;        update = local_rate * u
  Adam      m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g^2
            (beta1 = momentum, beta2 = momentum2, t = iter + 1)
            update = local_rate * sqrt(1-beta2^t)/(1-beta1^t) * m / (sqrt(v) + delta)
The rules run over the whole parameter arena at once (engine/arena.py): local_rate and local_decay
are per-element vectors (the arena's lr_mult and decay_mult times the global rate and decay), and
`compute_update` works on any slice [lo, hi) of the arena's buffers, so a parameter server applies
exactly the same code to the slice it owns. Elementwise, every operation is the one Caffe performs
per parameter, in the same order, so the results are the same floats.
All arithmetic is float32 like Caffe's Dtype. Plain SGD (the common case) runs as one native,
threaded pass over the arena (kernels.sgd_update: normalize, regularize, momentum step and, when
no before_update hook watches, data -= step), with the same float32 operations in the same order
and no fused multiply-adds, so it gives the numpy rule's floats bit for bit; the numpy rule below
remains its reference and the path wherever the native kernels do not run. The rules write their
intermediates into per-thread work arrays (`_work`) instead of fresh numpy temporaries: a fresh
~MB temporary is returned to the OS when freed and page-faults back in on the next iteration,
which measured 4.6 ms of LeNet's 0.6 ms update. Sanity checks (Caffe's): AdaGrad and RMSProp
refuse a momentum, RMSProp needs 0 <= rms_decay < 1.
"""
import math
import threading

import numpy as np

from .. import kernels
from ..errors import SolverError
from .base import Solver, register_solver
from .lr_policy import learning_rate

_F = np.float32
_thread_work = threading.local()


def _work(n, k):
    """k float32 work arrays of n elements, kept per thread and size (a solver uses one size, each
    parameter server its slice's), so the update rules allocate nothing per iteration. Slot 0
    carries local_rate into update_value; the rules use slots 1 and 2."""
    cache = getattr(_thread_work, "cache", None)
    if cache is None:
        cache = _thread_work.cache = {}
    arrays = cache.get(n)
    if arrays is None or len(arrays) < k:
        arrays = cache[n] = [np.empty(n, _F) for _ in range(k)]
    return arrays


@register_solver("SGD")
class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (Caffe's SGDSolver)."""

    def learning_rate(self):
        """The rate of this iteration (logged at display iterations), advancing current_step."""
        p = self.param
        rate, step = learning_rate(p, self.iter, self.current_step)
        if p.lr_policy == "multistep" and step != self.current_step:
            self.log.info("MultiStep Status: Iteration %d, step = %d", self.iter, step)
        self.current_step = step
        if getattr(self, "display_now", False):
            self.log.info("Iteration %d, lr = %s", self.iter, f"{float(rate):g}")
        return rate

    def apply_update(self):
        rate = self.learning_rate()
        self.clip_gradients()
        arena = self.net.arena
        # with no before_update hook to show the steps to, a native rule applies them itself
        applied = self.compute_update(self.param, arena.data, arena.diff, self.history_buffers,
                                      arena.lr_mult, arena.decay_mult, rate, self.iter,
                                      apply=not self.hooks.watches_steps(),
                                      decays=arena.decays)
        if not applied:
            self.hooks.before_update(self)  # the diffs now hold the steps
            np.subtract(arena.data, arena.diff, out=arena.data)

    def clip_gradients(self):
        clip = _F(self.param.clip_gradients)
        if clip < 0:
            return
        d = self.net.arena.diff
        norm = _F(np.sqrt(_F(np.dot(d, d))))
        if norm > clip:
            scale = _F(clip / norm)
            self.log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale "
                          "factor %s", f"{float(norm):g}", f"{float(clip):g}", f"{float(scale):g}")
            d *= scale

    @classmethod
    def compute_update(cls, param, data, diff, history, lr_mult, decay_mult, rate, it, *,
                       apply=False, decays=None):
        """Turn the gradient `diff` into the step to subtract, in place, over matching slices of
        the arena: normalize by iter_size, regularize, then the rule (update_value). `history` is
        the list of history-set buffers (same slice); `it` is the iteration (Adam's t - 1).
        `decays` is decay_mult.any() where the caller knows it (the arena's is fixed).
        Plain SGD runs as one native pass (kernels.sgd_update, the same floats); with `apply` that
        pass also subtracts the step from data. Returns whether data was updated (otherwise the
        caller subtracts diff)."""
        weight_decay = _F(param.weight_decay)
        if decays is None:
            decays = bool(weight_decay) and bool(decay_mult.any())
        regularization = param.regularization_type if weight_decay and decays else None
        if regularization not in (None, "L2", "L1"):
            raise SolverError(f"Unknown regularization type: {param.regularization_type}")
        diff_scale = _F(1) / _F(param.iter_size)
        if cls.update_value is SGDSolver.update_value and kernels.sgd_update(
                data, diff, history[0], lr_mult, decay_mult, diff_scale=diff_scale,
                weight_decay=weight_decay, regularization=regularization, rate=_F(rate),
                momentum=_F(param.momentum), apply=apply):
            return apply
        local_rate, t, _ = _work(diff.size, 3)
        if param.iter_size != 1:
            diff *= diff_scale
        if regularization is not None:
            np.multiply(decay_mult, weight_decay, out=t)  # local_decay
            np.multiply(t, data if regularization == "L2" else np.sign(data), out=t)
            diff += t
        np.multiply(lr_mult, _F(rate), out=local_rate)
        cls.update_value(param, diff, history, local_rate, it)
        return False

    @staticmethod
    def update_value(param, g, history, local_rate, it):
        """The rule: g (the regularized gradient) becomes the step; local_rate is work storage
        the rule may overwrite; history is updated in place."""
        h, = history
        np.multiply(local_rate, g, out=local_rate)
        h *= _F(param.momentum)
        h += local_rate
        np.copyto(g, h)


@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient (Caffe's NesterovSolver)."""

    @staticmethod
    def update_value(param, g, history, local_rate, it):
        h, = history
        momentum = _F(param.momentum)
        previous, _ = _work(g.size, 3)[1:]
        np.copyto(previous, h)
        np.multiply(local_rate, g, out=local_rate)
        h *= momentum
        h += local_rate
        np.multiply(h, _F(1) + momentum, out=g)
        previous *= -momentum
        g += previous


@register_solver("AdaGrad")
class AdaGradSolver(SGDSolver):
    """AdaGrad (Caffe's AdaGradSolver); refuses momentum."""

    def check_param(self):
        if self.param.momentum != 0:
            raise SolverError(f"{self._label}: Momentum cannot be used with AdaGrad (momentum "
                              f"{self.param.momentum:g})")

    @staticmethod
    def update_value(param, g, history, local_rate, it):
        h, = history
        t, _ = _work(g.size, 3)[1:]
        np.multiply(g, g, out=t)
        h += t
        _scale_by_rms(g, h, _F(param.delta), local_rate, t)


@register_solver("RMSProp")
class RMSPropSolver(SGDSolver):
    """RMSProp (Caffe's RMSPropSolver); refuses momentum, needs 0 <= rms_decay < 1."""

    def check_param(self):
        p = self.param
        if p.momentum != 0:
            raise SolverError(f"{self._label}: Momentum cannot be used with RMSProp (momentum "
                              f"{p.momentum:g})")
        if not 0 <= p.rms_decay < 1:
            raise SolverError(f"{self._label}: rms_decay should lie between 0 and 1 (got "
                              f"{p.rms_decay:g})")

    @staticmethod
    def update_value(param, g, history, local_rate, it):
        h, = history
        decay = _F(param.rms_decay)
        t, _ = _work(g.size, 3)[1:]
        _running_mean_of_squares(h, g, decay, t)
        _scale_by_rms(g, h, _F(param.delta), local_rate, t)


@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    """AdaDelta (Caffe's AdaDeltaSolver): `momentum` is the decay; history holds the running mean
    of squared gradients (first set) and of squared updates (second set)."""

    history_sets = 2

    @staticmethod
    def update_value(param, g, history, local_rate, it):
        h, h2 = history
        momentum = _F(param.momentum)
        delta = _F(param.delta)
        t, u = _work(g.size, 3)[1:]
        _running_mean_of_squares(h, g, momentum, t)
        np.add(h2, delta, out=t)
        np.add(h, delta, out=u)
        np.divide(t, u, out=t)
        np.sqrt(t, out=t)
        g *= t
        _running_mean_of_squares(h2, g, momentum, t)
        np.multiply(local_rate, g, out=g)


@register_solver("Adam")
class AdamSolver(SGDSolver):
    """Adam (Caffe's AdamSolver): beta1 = momentum, beta2 = momentum2, epsilon = delta; history
    holds m (first set) and v (second set)."""

    history_sets = 2

    @staticmethod
    def update_value(param, g, history, local_rate, it):
        m, v = history
        beta1, beta2 = _F(param.momentum), _F(param.momentum2)
        t = it + 1
        # Caffe: sqrt(Dtype(1) - pow(beta2, t)) / (Dtype(1) - pow(beta1, t)) in double, then float
        correction = _F(math.sqrt(1.0 - math.pow(float(beta2), t))
                        / (1.0 - math.pow(float(beta1), t)))
        t, _ = _work(g.size, 3)[1:]
        np.multiply(g, _F(1) - beta1, out=t)
        m *= beta1
        m += t
        _running_mean_of_squares(v, g, beta2, t)
        scale = local_rate
        scale *= correction
        np.sqrt(v, out=t)
        t += _F(param.delta)
        np.divide(m, t, out=t)
        np.multiply(scale, t, out=g)


def _running_mean_of_squares(h, g, decay, t):
    """h = (1 - decay) * g^2 + decay * h, in Caffe's float32 order, with t as work storage."""
    np.multiply(g, g, out=t)
    t *= _F(1) - decay
    h *= decay
    h += t


def _scale_by_rms(g, h, delta, local_rate, t):
    """g = local_rate * (g / (sqrt(h) + delta)) (AdaGrad's and RMSProp's step), t as work."""
    np.sqrt(h, out=t)
    t += delta
    g /= t
    np.multiply(local_rate, g, out=g)
