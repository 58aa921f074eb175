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
All arithmetic is float32 like Caffe's Dtype. Sanity checks (Caffe's): AdaGrad and RMSProp refuse a
momentum, RMSProp needs 0 <= rms_decay < 1.
"""
import math

import numpy as np

from ..errors import SolverError
from .base import Solver, register_solver
from .lr_policy import learning_rate

_F = np.float32


@register_solver("SGD")
class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (Caffe's SGDSolver)."""

    def apply_update(self):
        p = self.param
        rate, step = learning_rate(p, self.iter, self.current_step)
        if p.lr_policy == "multistep" and step != self.current_step:
            self.log.info("MultiStep Status: Iteration %d, step = %d", self.iter, step)
        self.current_step = step
        if p.display and self.iter % p.display == 0:
            self.log.info("Iteration %d, lr = %s", self.iter, f"{float(rate):g}")
        self.clip_gradients()
        for i in range(len(self.net.learnable_params)):
            self.normalize(i)
            self.regularize(i)
            self.compute_update_value(i, rate)
        self._run_hooks(2)  # before_update: the diffs now hold the steps
        for blob in self.net.learnable_params:
            np.subtract(blob.data, blob.diff, out=blob.data)

    def clip_gradients(self):
        clip = _F(self.param.clip_gradients)
        if clip < 0:
            return
        sumsq = _F(0)
        for blob in self.net.learnable_params:
            d = blob.diff.ravel()
            sumsq += _F(np.dot(d, d))
        norm = _F(np.sqrt(sumsq))
        if norm > clip:
            scale = _F(clip / norm)
            self.log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale "
                          "factor %s", f"{float(norm):g}", f"{float(clip):g}", f"{float(scale):g}")
            for blob in self.net.learnable_params:
                blob.diff[...] *= scale

    def normalize(self, i):
        if self.param.iter_size == 1:
            return
        self.net.learnable_params[i].diff[...] *= _F(1) / _F(self.param.iter_size)

    def regularize(self, i):
        p = self.param
        blob = self.net.learnable_params[i]
        local_decay = _F(p.weight_decay) * _F(self.net.params_weight_decay[i])
        if not local_decay:
            return
        if p.regularization_type == "L2":
            blob.diff[...] += local_decay * blob.data
        elif p.regularization_type == "L1":
            blob.diff[...] += local_decay * np.sign(blob.data)
        else:
            raise SolverError(f"Unknown regularization type: {p.regularization_type}")

    def _local_rate(self, i, rate):
        return _F(rate) * _F(self.net.params_lr[i])

    def compute_update_value(self, i, rate):
        g = self.net.learnable_params[i].diff
        h = self.history[i]
        momentum = _F(self.param.momentum)
        h[...] = self._local_rate(i, rate) * g + momentum * h
        g[...] = h


@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient (Caffe's NesterovSolver)."""

    def compute_update_value(self, i, rate):
        g = self.net.learnable_params[i].diff
        h = self.history[i]
        momentum = _F(self.param.momentum)
        previous = h.copy()
        h[...] = self._local_rate(i, rate) * g + momentum * h
        g[...] = (_F(1) + momentum) * h + (-momentum) * previous


@register_solver("AdaGrad")
class AdaGradSolver(SGDSolver):
    """AdaGrad (Caffe's AdaGradSolver); refuses momentum."""

    def check_param(self):
        if self.param.momentum != 0:
            raise SolverError(f"{self._label}: Momentum cannot be used with AdaGrad (momentum "
                              f"{self.param.momentum:g})")

    def compute_update_value(self, i, rate):
        g = self.net.learnable_params[i].diff
        h = self.history[i]
        h += g * g
        g[...] = self._local_rate(i, rate) * (g / (np.sqrt(h) + _F(self.param.delta)))


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

    def compute_update_value(self, i, rate):
        g = self.net.learnable_params[i].diff
        h = self.history[i]
        decay = _F(self.param.rms_decay)
        h[...] = (_F(1) - decay) * (g * g) + decay * h
        g[...] = self._local_rate(i, rate) * (g / (np.sqrt(h) + _F(self.param.delta)))


@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    """AdaDelta (Caffe's AdaDeltaSolver): `momentum` is the decay; history holds the running mean
    of squared gradients (first set) and of squared updates (second set)."""

    history_sets = 2

    def compute_update_value(self, i, rate):
        n = len(self.net.learnable_params)
        g = self.net.learnable_params[i].diff
        h, h2 = self.history[i], self.history[n + i]
        momentum = _F(self.param.momentum)
        delta = _F(self.param.delta)
        h[...] = (_F(1) - momentum) * (g * g) + momentum * h
        g[...] = g * np.sqrt((h2 + delta) / (h + delta))
        h2[...] = (_F(1) - momentum) * (g * g) + momentum * h2
        g[...] = self._local_rate(i, rate) * g


@register_solver("Adam")
class AdamSolver(SGDSolver):
    """Adam (Caffe's AdamSolver): beta1 = momentum, beta2 = momentum2, epsilon = delta; history
    holds m (first set) and v (second set)."""

    history_sets = 2

    def compute_update_value(self, i, rate):
        n = len(self.net.learnable_params)
        g = self.net.learnable_params[i].diff
        m, v = self.history[i], self.history[n + i]
        beta1, beta2 = _F(self.param.momentum), _F(self.param.momentum2)
        t = self.iter + 1
        # Caffe: sqrt(Dtype(1) - pow(beta2, t)) / (Dtype(1) - pow(beta1, t)) in double, then float
        correction = _F(math.sqrt(1.0 - math.pow(float(beta2), t))
                        / (1.0 - math.pow(float(beta1), t)))
        m[...] = (_F(1) - beta1) * g + beta1 * m
        v[...] = (_F(1) - beta2) * (g * g) + beta2 * v
        scale = self._local_rate(i, rate) * correction
        g[...] = scale * (m / (np.sqrt(v) + _F(self.param.delta)))
