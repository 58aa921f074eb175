"""Readable per-timestep, per-stream forward passes of Caffe's RNN and LSTM layers.

These follow Caffe 1.0's unrolled nets one step and one stream at a time, with no vectorization
across time or streams, so that the layers in engine/layers/recurrent.py (which batch the work)
can be checked against an independent statement of the same equations.

Shapes (Caffe's layout): x (T, N, ...), flattened from axis 2 to (T, N, D); cont (T, N), 0 where a
sequence starts and 1 where it continues; x_static (N, ...), flattened from axis 1 to (N, S);
initial states (1, N, H) or None for zeros.
"""
import math

import numpy as np


def _sigmoid(v):
    # Caffe's LSTMUnit: 1 / (1 + exp(-v)); math.exp overflows only for v < -709, out of reach here
    # for the tiny reference inputs, but guard anyway so the reference never raises.
    if v < -700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-v))


def _affine(weight, vector):
    """weight (M, K) times vector (K,): a plain double loop, one output row at a time."""
    out = np.zeros(weight.shape[0], dtype=np.float64)
    for m in range(weight.shape[0]):
        total = 0.0
        for k in range(weight.shape[1]):
            total += float(weight[m, k]) * float(vector[k])
        out[m] = total
    return out


def _flatten_inputs(x, cont, x_static):
    x = np.asarray(x, dtype=np.float64)
    steps, streams = x.shape[0], x.shape[1]
    x = x.reshape(steps, streams, -1)
    cont = np.asarray(cont, dtype=np.float64).reshape(steps, streams)
    if x_static is not None:
        x_static = np.asarray(x_static, dtype=np.float64).reshape(streams, -1)
    return x, cont, x_static, steps, streams


def _initial(state, streams, hidden):
    if state is None:
        return np.zeros((streams, hidden), dtype=np.float64)
    return np.asarray(state, dtype=np.float64).reshape(streams, hidden).copy()


def lstm_forward(x, cont, w_xc, b_c, w_hc, x_static=None, w_xc_static=None, h0=None, c0=None):
    """Caffe's LSTM layer.

    w_xc (4H, D), b_c (4H,), w_hc (4H, H), w_xc_static (4H, S). Gate order along 4H: i, f, o, g.
    Returns (h, h_T, c_T): h (T, N, H) and the final states (1, N, H), all float64.
    """
    x, cont, x_static, steps, streams = _flatten_inputs(x, cont, x_static)
    hidden = w_hc.shape[1]
    h_prev = _initial(h0, streams, hidden)
    c_prev = _initial(c0, streams, hidden)
    h_out = np.zeros((steps, streams, hidden), dtype=np.float64)
    for t in range(steps):
        h_next = np.zeros((streams, hidden), dtype=np.float64)
        c_next = np.zeros((streams, hidden), dtype=np.float64)
        for n in range(streams):
            flag = cont[t, n]
            # h_conted_{t-1} = cont_t * h_{t-1}: a sequence start forgets the previous stream state
            h_conted = flag * h_prev[n]
            gates = _affine(w_xc, x[t, n]) + np.asarray(b_c, dtype=np.float64)
            if x_static is not None:
                gates += _affine(w_xc_static, x_static[n])
            gates += _affine(w_hc, h_conted)
            for d in range(hidden):
                i = _sigmoid(gates[d])
                f = _sigmoid(gates[hidden + d])
                o = _sigmoid(gates[2 * hidden + d])
                g = math.tanh(gates[3 * hidden + d])
                c = flag * f * c_prev[n, d] + i * g
                c_next[n, d] = c
                h_next[n, d] = o * math.tanh(c)
        h_out[t] = h_next
        h_prev, c_prev = h_next, c_next
    return h_out, h_prev.reshape(1, streams, hidden), c_prev.reshape(1, streams, hidden)


def rnn_forward(x, cont, w_xh, b_h, w_hh, w_ho, b_o, x_static=None, w_xh_static=None, h0=None):
    """Caffe's RNN layer.

    w_xh (H, D), b_h (H,), w_hh (H, H), w_ho (H, H), b_o (H,), w_xh_static (H, S).
    h_t = tanh(W_xh x_t + b_h [+ W_xh_static x_static] + W_hh (cont_t h_{t-1}));
    o_t = tanh(W_ho h_t + b_o).
    Returns (o, h_T): o (T, N, H) and the final hidden state (1, N, H), float64.
    """
    x, cont, x_static, steps, streams = _flatten_inputs(x, cont, x_static)
    hidden = w_hh.shape[0]
    h_prev = _initial(h0, streams, hidden)
    o_out = np.zeros((steps, streams, hidden), dtype=np.float64)
    for t in range(steps):
        h_next = np.zeros((streams, hidden), dtype=np.float64)
        for n in range(streams):
            h_conted = cont[t, n] * h_prev[n]
            pre = _affine(w_xh, x[t, n]) + np.asarray(b_h, dtype=np.float64)
            if x_static is not None:
                pre += _affine(w_xh_static, x_static[n])
            pre += _affine(w_hh, h_conted)
            for d in range(hidden):
                h_next[n, d] = math.tanh(pre[d])
            out = _affine(w_ho, h_next[n]) + np.asarray(b_o, dtype=np.float64)
            for d in range(hidden):
                o_out[t, n, d] = math.tanh(out[d])
        h_prev = h_next
    return o_out, h_prev.reshape(1, streams, hidden)


def lstm_unit_forward(c_prev, x, cont):
    """Caffe's LSTMUnit, one stream and one hidden unit at a time: c_prev (1, N, D), gate inputs
    x (1, N, 4D) ordered i, f, o, g; cont (1, N). Returns (c, h), each (1, N, D):
    c = cont*sigmoid(f)*c_prev + sigmoid(i)*tanh(g), h = sigmoid(o)*tanh(c)."""
    _, n, d = c_prev.shape
    c = np.zeros((1, n, d))
    h = np.zeros((1, n, d))
    for s in range(n):
        for k in range(d):
            i = _sigmoid(float(x[0, s, k]))
            f = float(cont[0, s]) * _sigmoid(float(x[0, s, d + k]))
            o = _sigmoid(float(x[0, s, 2 * d + k]))
            g = math.tanh(float(x[0, s, 3 * d + k]))
            c[0, s, k] = f * float(c_prev[0, s, k]) + i * g
            h[0, s, k] = o * math.tanh(c[0, s, k])
    return c, h
