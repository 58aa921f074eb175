"""What one iteration of a network costs: FLOPs, parameter bytes, and (optionally) measured times.

The simulator needs, per worker and iteration, the forward time f, the backward time b, the time u
to apply a solver update, and the order and size in which gradients appear during backward (to
form the allreduce buckets). A ModelCosts carries them in one of two ways:

* analytically: per-layer forward/backward FLOPs per sample and parameter bytes; times then come
  from a node FLOP rate (``ScaleConfig.node_flops``). This is how the paper's HEP network is
  described (``hep_cnn()``), so reproducing the paper needs no net and no measurement;
* measured: ``measure(prototxt)`` builds ``engine.Net(prototxt, engine.TRAIN)`` and times
  ``net.forward_backward()`` and ``net.forward()`` on this machine (medians over a few runs);
  backward is the difference. FLOPs per layer come from ``engine.cli.layer_flops`` and parameter
  bytes from ``net.learnable_params`` (4 bytes per float32 value).

Assumptions, stated once: compute time is linear in the batch (``Timing.scaled``); within
backward, each layer takes a share of the backward time proportional to its backward FLOPs (layers
without FLOPs, such as pooling and ReLU, are taken as free), so a layer's gradients are ready when
the layers above it and itself have done that share; parameter-free layers hold no gradient.
"""
from dataclasses import dataclass, field, replace
import statistics
import time


@dataclass(frozen=True)
class LayerCost:
    """One layer, per sample: forward and backward FLOPs, and the bytes of its learnable params."""
    name: str
    fwd_flops: float
    bwd_flops: float
    param_bytes: int


@dataclass(frozen=True)
class Timing:
    """Measured per-iteration seconds of one process at `batch` samples (medians)."""
    batch: int
    forward_s: float
    backward_s: float
    update_s: float = 0.0
    runs: int = 0
    threads: int = 0

    def scaled(self, batch):
        """(forward_s, backward_s) at another batch, assuming time linear in the batch."""
        k = batch / self.batch
        return self.forward_s * k, self.backward_s * k


@dataclass(frozen=True)
class ModelCosts:
    """A network as the simulator sees it.

    layers: LayerCost per layer in forward order (per-sample FLOPs).
    uniform_gradients: True when only totals are known (``from_totals``); gradient bytes are then
        assumed to be produced at a constant rate through backward.
    timing: measured times on some machine, used when no node FLOP rate is given.
    batch: the batch the net was built with (the default batch per worker), if known.
    """
    name: str
    layers: tuple
    uniform_gradients: bool = False
    timing: Timing = None
    batch: int = None
    notes: tuple = field(default=())

    @property
    def fwd_flops_per_sample(self):
        return float(sum(l.fwd_flops for l in self.layers))

    @property
    def bwd_flops_per_sample(self):
        return float(sum(l.bwd_flops for l in self.layers))

    @property
    def flops_per_sample(self):
        """Forward plus backward FLOPs of one sample."""
        return self.fwd_flops_per_sample + self.bwd_flops_per_sample

    @property
    def param_bytes(self):
        return int(sum(l.param_bytes for l in self.layers))

    def gradient_chunks(self):
        """[(bytes, fraction of backward elapsed when these bytes are ready)] in the order
        backward produces them (last layer first). For uniform gradients: one chunk per byte
        stream, marked with fraction None (the bucket builder cuts the stream itself)."""
        if self.uniform_gradients:
            return [(self.param_bytes, None)]
        order = list(reversed(self.layers))
        total = sum(l.bwd_flops for l in order)
        chunks, done = [], 0.0
        for i, layer in enumerate(order):
            if total > 0:
                done += layer.bwd_flops / total
            else:  # no FLOPs known: equal backward time per layer
                done = (i + 1) / len(order)
            if layer.param_bytes:
                chunks.append((layer.param_bytes, min(done, 1.0)))
        return chunks

    def with_timing(self, timing):
        return replace(self, timing=timing)

    @classmethod
    def from_totals(cls, flops_per_sample, param_bytes, fwd_fraction=1 / 3, name="model"):
        """A model known only by its FLOPs per sample (forward + backward) and parameter bytes.
        fwd_fraction: share of the FLOPs in the forward pass (1/3 when backward computes both
        the data and the weight gradient, each as costly as the forward)."""
        if flops_per_sample <= 0 or param_bytes <= 0:
            raise ValueError("flops_per_sample and param_bytes must be positive")
        if not 0 < fwd_fraction < 1:
            raise ValueError(f"fwd_fraction must be in (0, 1), got {fwd_fraction}")
        fwd = flops_per_sample * fwd_fraction
        layer = LayerCost("all", fwd, flops_per_sample - fwd, int(param_bytes))
        return cls(name, (layer,), uniform_gradients=True)


# -- the HEP network of "Deep Learning at 15PF" ----------------------------------------------

def conv_macs(h, w, c_in, c_out, k):
    """Multiply-adds of a stride-1 'same' convolution with a k x k kernel on an h x w x c_in
    input (pad (k-1)/2): every output value reads c_in * k * k inputs."""
    return h * w * c_out * c_in * k * k


def hep_cnn(image=224, channels=3, filters=128, blocks=4, classes=2):
    """ModelCosts of the HEP classifier of Kurth et al. (SC17), computed analytically.

    Topology (the paper's description): input image x image x channels; `blocks` x [conv 3x3,
    `filters` filters, pad 1, + ReLU + max pool 2x2 stride 2]; one more conv 3x3 `filters`;
    global average pool; fully connected filters -> classes.
    FLOPs: forward = 2 x multiply-adds of the convolutions and the FC layer (pooling, ReLU and
    the loss are negligible next to them and not counted, as FLOP counts of CNNs usually do);
    backward = 2 x forward (data gradient + weight gradient), so forward + backward = 3 x
    forward. Parameters: weights + biases, float32.
    """
    layers, h, w, c = [], image, image, channels
    for i in range(blocks + 1):
        macs = conv_macs(h, w, c, filters, 3)
        params = filters * c * 9 + filters
        layers.append(LayerCost(f"conv{i + 1}", 2.0 * macs, 4.0 * macs, 4 * params))
        c = filters
        if i < blocks:  # the last conv feeds the global average pool, not a 2x2 pool
            h, w = h // 2, w // 2
    fc_macs = filters * classes
    layers.append(LayerCost("fc", 2.0 * fc_macs, 4.0 * fc_macs, 4 * (filters * classes + classes)))
    return ModelCosts("hep_cnn", tuple(layers),
                      notes=(f"{image}x{image}x{channels} input, {blocks} x (conv3x3 {filters} "
                             f"+ ReLU + maxpool 2/2), conv3x3 {filters}, global avg pool, "
                             f"FC {filters}->{classes}",))


# -- measured on this machine ----------------------------------------------------------------

def costs_from_net(net, name="net"):
    """ModelCosts (per-sample FLOPs, parameter bytes per layer) of a built engine.Net."""
    from engine.cli import layer_flops
    batch = _net_batch(net)
    learnable = {id(b) for b in net.learnable_params}
    seen = set()
    layers = []
    for i, layer in enumerate(net.layers):
        fwd, bwd = layer_flops(net, i)
        nbytes = 0
        for blob in getattr(layer, "blobs", []) or []:
            # shared parameters are learned once: count each learnable blob once
            if id(blob) in learnable and id(blob) not in seen:
                seen.add(id(blob))
                nbytes += 4 * int(blob.count)
        lname = net.layer_params[i].name if i < len(net.layer_params) else f"layer{i}"
        layers.append(LayerCost(lname, fwd / batch, bwd / batch, nbytes))
    total = sum(4 * int(b.count) for b in net.learnable_params)
    counted = sum(l.param_bytes for l in layers)
    if total > counted:  # parameters not found through layer.blobs: keep the total right
        layers.append(LayerCost("(other params)", 0.0, 0.0, total - counted))
    return ModelCosts(name, tuple(layers), batch=batch)


def _net_batch(net):
    for name in getattr(net, "inputs", []) or []:
        shape = net.blobs[name].shape
        if shape:
            return int(shape[0])
    first = net._top_blobs[0][0] if getattr(net, "_top_blobs", None) else None
    return int(first.shape[0]) if first is not None and first.shape else 1


def _median_time(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_update_s(param_bytes, runs=5):
    """Seconds for one SGD-with-momentum update (v = m v - lr g; w += v) over param_bytes of
    float32 parameters with numpy: the cost a worker (P = 0) or a server pays per update."""
    import numpy as np
    n = max(1, int(param_bytes) // 4)
    w, g, v = (np.zeros(n, np.float32) for _ in range(3))

    scratch = np.empty_like(g)

    def step():
        np.multiply(v, np.float32(0.9), out=v)
        np.multiply(g, np.float32(0.01), out=scratch)
        np.subtract(v, scratch, out=v)
        np.add(w, v, out=w)
    step()
    return _median_time(step, runs)


def measure(prototxt, runs=3, warmup=1, threads=None, name=None):
    """Build engine.Net(prototxt, TRAIN) and measure it on this machine.

    Returns ModelCosts with per-layer FLOPs and parameter bytes and a Timing: forward_s and
    backward_s = medians of the forward and backward passes' times within the same
    net.forward_backward() runs (the net's own per-layer timing, summed: never a difference of
    two noisy medians, which a loaded machine can make negative), update_s = median of a numpy
    momentum update over the parameters. threads: engine.set_num_threads before timing (the
    threads each rank will use); None keeps the current setting.
    """
    import engine
    if threads:
        engine.set_num_threads(int(threads))
    net = engine.Net(str(prototxt), engine.TRAIN)
    costs = costs_from_net(net, name=name or str(prototxt))
    for _ in range(max(0, warmup)):
        net.forward_backward()
    fwd, bwd = [], []
    for _ in range(max(1, runs)):
        f, b = [0.0] * len(net.layers), [0.0] * len(net.layers)
        net.forward_backward(f, b)
        fwd.append(sum(f))
        bwd.append(sum(b))
    timing = Timing(batch=costs.batch, forward_s=statistics.median(fwd),
                    backward_s=statistics.median(bwd),
                    update_s=measure_update_s(costs.param_bytes), runs=runs,
                    threads=int(engine.get_num_threads()))
    return costs.with_timing(timing)
