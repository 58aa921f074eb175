"""Caffe 1.0's recurrent layers, RNN and LSTM, computed directly in numpy.

Caffe builds these layers as an unrolled internal net (one InnerProduct / Eltwise / LSTMUnit chain
per timestep). crema computes the same numbers without that net: the input projections of all
timesteps are one matrix product, only the recurrence itself loops over time. The parameter blobs
come in the order in which the unrolled net first uses them, so weights are interchangeable with
Caffe's .caffemodel files, and they are filled in that same order (same random stream order).
"""
import numpy as np

from ..layer import Layer
from ..registry import register_layer


def _sigmoid(v):
    # Caffe's formula 1 / (1 + exp(-v)); exp overflow for very negative v gives the right limit 0.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


class _RecurrentBase(Layer):
    """Shared bottom/top bookkeeping of RNN and LSTM (Caffe's RecurrentLayer).

    Bottoms: x (T, N, ...), cont (T, N), optional x_static (N, ...), then with expose_hidden the
    initial states (1, N, H) each. Tops: the sequence output (T, N, H), then with expose_hidden the
    final states (1, N, H) each.
    """

    # Names of the recurrent states, in Caffe's RecurrentInputBlobNames order.
    state_names = ()

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        rp = param.recurrent_param
        self.expose_hidden = bool(rp.expose_hidden)
        exposed = len(self.state_names) if self.expose_hidden else 0
        # Caffe's MinBottomBlobs / MaxBottomBlobs / ExactNumTopBlobs depend on expose_hidden, so
        # they are per instance here (they shadow the class attributes the net reads).
        self.min_bottom = 2 + exposed
        self.max_bottom = 3 + exposed
        self.exact_num_top = 1 + exposed

    # Subclasses define _param_specs(input_dim, static_dim): [(name, shape, 'weight' | 'bias')]
    # in Caffe's blob order.

    def allow_force_backward(self, bottom_index):
        # Caffe: "Can't propagate to sequence continuation indicators."
        return bottom_index != 1

    # -- setup / reshape -----------------------------------------------------------------------
    def _check_counts(self, bottom, top):
        if not self.min_bottom <= len(bottom) <= self.max_bottom:
            raise self.error(
                f"takes {self.min_bottom} to {self.max_bottom} bottoms (x, cont, optional x_static"
                + (", " + ", ".join(n + "_0" for n in self.state_names) if self.expose_hidden
                   else "") + f"), got {len(bottom)}")
        if len(top) != self.exact_num_top:
            raise self.error(f"takes exactly {self.exact_num_top} tops, got {len(top)}")

    def _input_geometry(self, bottom):
        """Validates x / cont / x_static and returns (T, N, input_dim, static_dim or None)."""
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            raise self.error(f"bottom[0] (x) must have at least 2 axes (#timesteps, #streams, "
                             f"...), got shape {x.shape}")
        steps, streams = x.shape[0], x.shape[1]
        if cont.shape != (steps, streams):
            raise self.error(f"bottom[1] (cont) must have shape (T, N) = {(steps, streams)} to "
                             f"match bottom[0] (x) of shape {x.shape}, got shape {cont.shape}")
        static_dim = None
        if self.static_input:
            xs = bottom[2]
            if xs.num_axes < 1 or xs.shape[0] != streams:
                raise self.error(f"bottom[2] (x_static) must have shape (N, ...) with N = "
                                 f"{streams} from bottom[0] (x) of shape {x.shape}, got shape "
                                 f"{xs.shape}")
            static_dim = xs.count_range(1)
        return steps, streams, x.count_range(2), static_dim

    def setup(self, bottom, top):
        self._check_counts(bottom, top)
        rp = self.param.recurrent_param
        self.num_output = int(rp.num_output)
        if self.num_output <= 0:
            raise self.error(f"recurrent_param.num_output must be positive, got {self.num_output}"
                             " (is it set?)")
        self.debug_info = bool(rp.debug_info)  # Caffe logs the unrolled net; nothing to log here
        exposed = len(self.state_names) if self.expose_hidden else 0
        # Caffe: bottom[2] is x_static exactly when there is one bottom more than required.
        self.static_input = len(bottom) > 2 + exposed
        _, _, input_dim, static_dim = self._input_geometry(bottom)
        specs = self._param_specs(input_dim, static_dim)
        dtype = bottom[0].data.dtype
        if not self.blobs:
            self.blobs = [self.make_param(shape, rp.weight_filler if kind == "weight"
                                          else rp.bias_filler, dtype=dtype)
                          for _, shape, kind in specs]
        else:
            if len(self.blobs) != len(specs):
                raise self.error(
                    f"expects {len(specs)} parameter blobs ({', '.join(n for n, _, _ in specs)}), "
                    f"got {len(self.blobs)}")
            for i, ((name, shape, _), blob) in enumerate(zip(specs, self.blobs)):
                if tuple(blob.shape) != tuple(shape):
                    raise self.error(f"parameter blob {i} ({name}) must have shape {tuple(shape)},"
                                     f" got {blob.shape}")
        self.param_propagate_down = [True] * len(self.blobs)

    def reshape(self, bottom, top):
        self._check_counts(bottom, top)
        steps, streams, input_dim, static_dim = self._input_geometry(bottom)
        specs = self._param_specs(input_dim, static_dim)
        for i, ((name, shape, _), blob) in enumerate(zip(specs, self.blobs)):
            if tuple(blob.shape) != tuple(shape):
                raise self.error(
                    f"parameter blob {i} ({name}) has shape {blob.shape}, but the bottoms need "
                    f"{tuple(shape)} (x of shape {bottom[0].shape}"
                    + (f", x_static of shape {bottom[2].shape}" if self.static_input else "")
                    + ")")
        hidden = self.num_output
        state_shape = (1, streams, hidden)
        offset = 2 + self.static_input
        if self.expose_hidden:
            for j, name in enumerate(self.state_names):
                b = bottom[offset + j]
                if b.shape != state_shape:
                    raise self.error(f"bottom[{offset + j}] ({name}_0) must have shape "
                                     f"{state_shape}, got {b.shape}")
        top[0].reshape(steps, streams, hidden)
        for j in range(1, len(top)):
            top[j].reshape(state_shape)
        self.steps, self.streams, self.input_dim = steps, streams, input_dim
        self.kernel = "numpy"

    # -- helpers shared by forward / backward --------------------------------------------------
    def _flat_inputs(self, bottom):
        x = bottom[0].data.reshape(self.steps, self.streams, self.input_dim)
        cont = bottom[1].data.reshape(self.steps, self.streams, 1)
        xs = bottom[2].data.reshape(self.streams, -1) if self.static_input else None
        return x, cont, xs

    def _initial_states(self, bottom, dtype):
        shape = (self.streams, self.num_output)
        if not self.expose_hidden:
            return [np.zeros(shape, dtype=dtype) for _ in self.state_names]
        offset = 2 + self.static_input
        return [bottom[offset + j].data.reshape(shape).astype(dtype, copy=True)
                for j in range(len(self.state_names))]

    def _input_projection(self, x, xs, w_x, b, w_s):
        """W_x x_t + b [+ W_s x_static] for all timesteps at once: (T, N, M)."""
        proj = x @ w_x.T + b
        if xs is not None:
            proj += (xs @ w_s.T)[None]
        return proj

    def _input_backward(self, d_pre, bottom, propagate_down, x, xs, w_x, w_s,
                        i_wx, i_b, i_ws):
        """Gradients of the input projection, given d(pre-activation) d_pre (T, N, M)."""
        m = d_pre.shape[2]
        flat = d_pre.reshape(-1, m)
        pd = self.param_propagate_down
        if pd[i_wx]:
            self.blobs[i_wx].diff[...] += flat.T @ x.reshape(-1, self.input_dim)
        if pd[i_b]:
            self.blobs[i_b].diff[...] += flat.sum(axis=0)
        if propagate_down[0]:
            bottom[0].diff[...] = (d_pre @ w_x).reshape(bottom[0].shape)
        if xs is not None:
            # x_static enters every timestep: its gradient sums over time.
            d_static = d_pre.sum(axis=0)
            if pd[i_ws]:
                self.blobs[i_ws].diff[...] += d_static.T @ xs
            if propagate_down[2]:
                bottom[2].diff[...] = (d_static @ w_s).reshape(bottom[2].shape)

    def _check_propagate(self, propagate_down):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("cannot backpropagate to bottom[1] (cont), the sequence "
                             "continuation indicators")

    def _write_state_diffs(self, bottom, propagate_down, diffs):
        if not self.expose_hidden:
            return
        offset = 2 + self.static_input
        for j, d in enumerate(diffs):
            if propagate_down[offset + j]:
                bottom[offset + j].diff[...] = d.reshape(bottom[offset + j].shape)

    def _top_state_diffs(self, top, dtype):
        shape = (self.streams, self.num_output)
        if not self.expose_hidden:
            return [np.zeros(shape, dtype=dtype) for _ in self.state_names]
        return [top[1 + j].diff.reshape(shape).astype(dtype, copy=True)
                for j in range(len(self.state_names))]


@register_layer("LSTM")
class LSTMLayer(_RecurrentBase):
    """Caffe's LSTM (long short-term memory) layer.

    recurrent_param: num_output (H, required > 0), weight_filler (W_xc, W_xc_x_static, W_hc;
    default constant 0), bias_filler (b_c; default constant 0), debug_info (accepted, no effect),
    expose_hidden.
    Bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0 (1, N, H), c_0 (1, N, H) with
    expose_hidden]. Tops: h (T, N, H), [h_T (1, N, H), c_T (1, N, H) with expose_hidden].
    Parameter blobs: W_xc (4H, D), b_c (4H), [W_xc_x_static (4H, S)], W_hc (4H, H), where
    D = x.count(2:), S = x_static.count(1:). Gate order along 4H: input, forget, output, candidate.
      gates_t = W_xc x_t + b_c [+ W_xc_x_static x_static] + W_hc (cont_t h_{t-1})
      c_t = cont_t f_t c_{t-1} + i_t g_t,   h_t = o_t tanh(c_t)
    With expose_hidden the final states get gradients from their tops and the initial states
    receive gradients too (Caffe 1.0 itself does not backpropagate through those blobs).
    """

    state_names = ("h", "c")

    def _param_specs(self, input_dim, static_dim):
        g = 4 * self.num_output
        specs = [("W_xc", (g, input_dim), "weight"), ("b_c", (g,), "bias")]
        if static_dim is not None:
            specs.append(("W_xc_x_static", (g, static_dim), "weight"))
        specs.append(("W_hc", (g, self.num_output), "weight"))
        return specs

    def _weights(self):
        w_x, b = self.blobs[0].data, self.blobs[1].data
        w_s = self.blobs[2].data if self.static_input else None
        return w_x, b, w_s, self.blobs[-1].data

    def forward(self, bottom, top):
        x, cont, xs = self._flat_inputs(bottom)
        w_x, b, w_s, w_h = self._weights()
        dtype = bottom[0].data.dtype
        hidden, steps = self.num_output, self.steps
        pre_x = self._input_projection(x, xs, w_x, b, w_s)
        h_prev, c_prev = self._initial_states(bottom, dtype)
        # Saved for backward: activated gates, cell states, the conted h_{t-1} and c_{t-1}.
        gates = np.empty((steps, self.streams, 4 * hidden), dtype=dtype)
        cells = np.empty((steps, self.streams, hidden), dtype=dtype)
        h_conted = np.empty((steps, self.streams, hidden), dtype=dtype)
        c_prevs = np.empty((steps, self.streams, hidden), dtype=dtype)
        out = top[0].data
        for t in range(steps):
            h_conted[t] = cont[t] * h_prev
            c_prevs[t] = c_prev
            a = pre_x[t] + h_conted[t] @ w_h.T
            ifo = _sigmoid(a[:, :3 * hidden])
            g = np.tanh(a[:, 3 * hidden:])
            gates[t, :, :3 * hidden] = ifo
            gates[t, :, 3 * hidden:] = g
            i, f, o = ifo[:, :hidden], ifo[:, hidden:2 * hidden], ifo[:, 2 * hidden:]
            c_prev = cont[t] * f * c_prev + i * g
            cells[t] = c_prev
            h_prev = o * np.tanh(c_prev)
            out[t] = h_prev
        if self.expose_hidden:
            top[1].data[...] = h_prev.reshape(top[1].shape)
            top[2].data[...] = c_prev.reshape(top[2].shape)
        self._saved = (gates, cells, h_conted, c_prevs)

    def backward(self, top, propagate_down, bottom):
        self._check_propagate(propagate_down)
        x, cont, xs = self._flat_inputs(bottom)
        w_x, _, w_s, w_h = self._weights()
        gates, cells, h_conted, c_prevs = self._saved
        dtype = gates.dtype
        hidden = self.num_output
        d_h_next, d_c_next = self._top_state_diffs(top, dtype)
        d_pre = np.empty_like(gates)
        top_diff = top[0].diff
        for t in range(self.steps - 1, -1, -1):
            i, f = gates[t, :, :hidden], gates[t, :, hidden:2 * hidden]
            o, g = gates[t, :, 2 * hidden:3 * hidden], gates[t, :, 3 * hidden:]
            tanh_c = np.tanh(cells[t])
            d_h = top_diff[t] + d_h_next
            d_c = d_h * o * (1.0 - tanh_c * tanh_c) + d_c_next
            d_pre[t, :, :hidden] = d_c * g * i * (1.0 - i)
            d_pre[t, :, hidden:2 * hidden] = d_c * cont[t] * c_prevs[t] * f * (1.0 - f)
            d_pre[t, :, 2 * hidden:3 * hidden] = d_h * tanh_c * o * (1.0 - o)
            d_pre[t, :, 3 * hidden:] = d_c * i * (1.0 - g * g)
            d_c_next = d_c * cont[t] * f
            d_h_next = cont[t] * (d_pre[t] @ w_h)
        if self.param_propagate_down[-1]:
            self.blobs[-1].diff[...] += (d_pre.reshape(-1, 4 * hidden).T
                                         @ h_conted.reshape(-1, hidden))
        self._input_backward(d_pre, bottom, propagate_down, x, xs, w_x, w_s, 0, 1, 2)
        self._write_state_diffs(bottom, propagate_down, (d_h_next, d_c_next))


@register_layer("RNN")
class RNNLayer(_RecurrentBase):
    """Caffe's RNN (Elman) layer.

    recurrent_param: num_output (H, the hidden and the output size, required > 0), weight_filler
    (W_xh, W_xh_x_static, W_hh, W_ho; default constant 0), bias_filler (b_h, b_o; default
    constant 0), debug_info (accepted, no effect), expose_hidden.
    Bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0 (1, N, H) with expose_hidden].
    Tops: o (T, N, H), [h_T (1, N, H) with expose_hidden].
    Parameter blobs: W_xh (H, D), b_h (H), [W_xh_x_static (H, S)], W_hh (H, H), W_ho (H, H),
    b_o (H), where D = x.count(2:), S = x_static.count(1:).
      h_t = tanh(W_xh x_t + b_h [+ W_xh_x_static x_static] + W_hh (cont_t h_{t-1}))
      o_t = tanh(W_ho h_t + b_o)
    With expose_hidden h_T gets gradients from its top and h_0 receives a gradient too (Caffe 1.0
    itself does not backpropagate through those blobs).
    """

    state_names = ("h",)

    def _param_specs(self, input_dim, static_dim):
        h = self.num_output
        specs = [("W_xh", (h, input_dim), "weight"), ("b_h", (h,), "bias")]
        if static_dim is not None:
            specs.append(("W_xh_x_static", (h, static_dim), "weight"))
        specs += [("W_hh", (h, h), "weight"), ("W_ho", (h, h), "weight"), ("b_o", (h,), "bias")]
        return specs

    def _indices(self):
        s = 1 if self.static_input else 0
        return 2 + s, 3 + s, 4 + s  # W_hh, W_ho, b_o

    def forward(self, bottom, top):
        x, cont, xs = self._flat_inputs(bottom)
        i_hh, i_ho, i_bo = self._indices()
        w_s = self.blobs[2].data if self.static_input else None
        w_hh = self.blobs[i_hh].data
        dtype = bottom[0].data.dtype
        pre = self._input_projection(x, xs, self.blobs[0].data, self.blobs[1].data, w_s)
        (h_prev,) = self._initial_states(bottom, dtype)
        hs = np.empty((self.steps, self.streams, self.num_output), dtype=dtype)
        h_conted = np.empty_like(hs)
        for t in range(self.steps):
            h_conted[t] = cont[t] * h_prev
            h_prev = np.tanh(pre[t] + h_conted[t] @ w_hh.T)
            hs[t] = h_prev
        # The output layer has no recurrence: all timesteps in one product.
        o = np.tanh(hs @ self.blobs[i_ho].data.T + self.blobs[i_bo].data)
        top[0].data[...] = o
        if self.expose_hidden:
            top[1].data[...] = h_prev.reshape(top[1].shape)
        # o is kept too, so that a layer working in place on the top cannot change backward.
        self._saved = (hs, h_conted, o)

    def backward(self, top, propagate_down, bottom):
        self._check_propagate(propagate_down)
        x, cont, xs = self._flat_inputs(bottom)
        i_hh, i_ho, i_bo = self._indices()
        w_s = self.blobs[2].data if self.static_input else None
        w_hh, w_ho = self.blobs[i_hh].data, self.blobs[i_ho].data
        hs, h_conted, o = self._saved
        dtype = hs.dtype
        hidden = self.num_output
        d_out = top[0].diff * (1.0 - o * o)
        pd = self.param_propagate_down
        if pd[i_ho]:
            self.blobs[i_ho].diff[...] += d_out.reshape(-1, hidden).T @ hs.reshape(-1, hidden)
        if pd[i_bo]:
            self.blobs[i_bo].diff[...] += d_out.reshape(-1, hidden).sum(axis=0)
        d_h_from_out = d_out @ w_ho
        (d_h_next,) = self._top_state_diffs(top, dtype)
        d_pre = np.empty_like(hs)
        for t in range(self.steps - 1, -1, -1):
            d_h = d_h_from_out[t] + d_h_next
            d_pre[t] = d_h * (1.0 - hs[t] * hs[t])
            d_h_next = cont[t] * (d_pre[t] @ w_hh)
        if pd[i_hh]:
            self.blobs[i_hh].diff[...] += (d_pre.reshape(-1, hidden).T
                                           @ h_conted.reshape(-1, hidden))
        self._input_backward(d_pre, bottom, propagate_down, x, xs, self.blobs[0].data, w_s,
                             0, 1, 2)
        self._write_state_diffs(bottom, propagate_down, (d_h_next,))


@register_layer("LSTMUnit")
class LSTMUnitLayer(Layer):
    """One LSTM step (Caffe's LSTMUnit, the cell inside Caffe's unrolled LSTM).

    Bottoms: c_prev (1, N, D), gate inputs x (1, N, 4D) in the order i, f, o, g, and the sequence
    continuation flags cont (1, N) (0 starts a new sequence: the forget gate is cut).
    Tops: c (1, N, D) and h (1, N, D), with
      i = sigmoid(x_i), f = cont * sigmoid(x_f), o = sigmoid(x_o), g = tanh(x_g),
      c = f * c_prev + i * g,  h = o * tanh(c).
    No gradient reaches cont (Caffe: "Cannot backpropagate to sequence indicators")."""
    exact_num_bottom = 3
    exact_num_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        n = bottom[0].shape[1] if bottom[0].num_axes >= 2 else None
        for i, blob in enumerate(bottom):
            axes = 2 if i == 2 else 3
            if blob.num_axes != axes or blob.shape[0] != 1 or blob.shape[1] != n:
                raise self.error(f"bottom[{i}] has shape {blob.shape}; LSTMUnit needs (1, N, D) "
                                 f"c_prev, (1, N, 4D) gates and (1, N) cont with one N (bottom[0] "
                                 f"{bottom[0].shape})")
        d = bottom[0].shape[2]
        if bottom[1].shape[2] != 4 * d:
            raise self.error(f"bottom[1] (gates) has {bottom[1].shape[2]} values per stream; "
                             f"4 x hidden size {d} = {4 * d} are needed")
        top[0].reshape(bottom[0].shape)
        top[1].reshape(bottom[0].shape)
        self.kernel = "numpy"

    def forward(self, bottom, top):
        d = bottom[0].shape[2]
        x = bottom[1].data
        cont = bottom[2].data[..., None]
        self._i = _sigmoid(x[..., :d])
        self._f = cont * _sigmoid(x[..., d:2 * d])
        self._o = _sigmoid(x[..., 2 * d:3 * d])
        self._g = np.tanh(x[..., 3 * d:])
        c = self._f * bottom[0].data + self._i * self._g
        self._tanh_c = np.tanh(c)
        top[0].data[...] = c
        top[1].data[...] = self._o * self._tanh_c

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to sequence indicators (bottom[2], cont)")
        d = bottom[0].shape[2]
        dc = top[0].diff + top[1].diff * self._o * (1 - self._tanh_c ** 2)
        if propagate_down[0]:
            bottom[0].diff[...] = dc * self._f
        if propagate_down[1]:
            dx = bottom[1].diff
            i, f, o, g = self._i, self._f, self._o, self._g
            cont = bottom[2].data[..., None]
            sig_f = np.divide(f, cont, out=np.zeros_like(f), where=cont != 0)
            dx[..., :d] = dc * g * i * (1 - i)
            dx[..., d:2 * d] = dc * bottom[0].data * cont * sig_f * (1 - sig_f)
            dx[..., 2 * d:3 * d] = top[1].diff * self._tanh_c * o * (1 - o)
            dx[..., 3 * d:] = dc * i * (1 - g ** 2)
