"""The parameter arena: one buffer for all learnable data, one for all diffs."""
import numpy as np
import pytest

from engine import Net, TEST, TRAIN
from engine.arena import ALIGN, byte_balanced_slices
from engine.errors import ShapeError
from engine.solvers import get_solver, solver_class

NET = """
name: "arena"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" }
                            bias_filler { type: "constant" value: 0.5 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "c" top: "y1"
        param { name: "shared_w" } param { name: "shared_b" }
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "c" top: "y2"
        param { name: "shared_w" } param { name: "shared_b" }
        inner_product_param { num_output: 4 } }
layer { name: "sum" type: "Eltwise" bottom: "y1" bottom: "y2" top: "y" }
"""


def _base(array):
    while array.base is not None:
        array = array.base
    return array


def test_every_parameter_is_a_view_into_the_arena():
    net = Net(NET, TRAIN)
    arena = net.arena
    assert len(arena) == len(net.learnable_params) == 4  # conv w/b, the shared ip w/b once
    for blob, off, n in zip(net.learnable_params, arena.offsets, arena.counts):
        assert off % ALIGN == 0 and n == blob.count
        assert _base(blob.data) is arena.data and _base(blob.diff) is arena.diff
        np.testing.assert_array_equal(arena.data[off:off + n], blob.data.ravel())
    # writing through the arena shows in the blobs and the other way round
    arena.data[:] = 0
    assert not net.params["conv"][0].data.any()
    net.params["ip2"][0].data[...] = 3.0  # shares storage with ip1
    assert np.all(net.params["ip1"][0].data == 3.0)
    # gaps between segments never learn
    mask = np.zeros(arena.size, bool)
    for off, n in zip(arena.offsets, arena.counts):
        mask[off:off + n] = True
    assert not arena.lr_mult[~mask].any() and not arena.decay_mult[~mask].any()
    off, n = arena.segment(1)
    assert np.all(arena.lr_mult[off:off + n] == 2) and not arena.decay_mult[off:off + n].any()


def test_permissive_share_and_test_net_follow_the_arena():
    text = NET.replace('param { name: "shared_w" } param { name: "shared_b" }\n        inner_product_param { num_output: 4 } }',
                       'param { name: "shared_w" share_mode: PERMISSIVE } param { name: "shared_b" }\n        inner_product_param { num_output: 4 } }')
    net = Net(text, TRAIN)
    test_net = Net(text, TEST)
    test_net.share_with(net)
    net.arena.data[:] = 1.5
    assert np.all(test_net.params["conv"][0].data == 1.5)
    assert np.all(net.params["ip2"][0].data == 1.5)


def test_parameters_cannot_leave_the_arena():
    net = Net(NET, TRAIN)
    blob = net.params["conv"][0]
    blob.reshape(blob.count)  # same count: still a view
    assert _base(blob.data) is net.arena.data
    with pytest.raises(ShapeError, match="parameter arena"):
        blob.reshape(blob.count + 1)


def test_byte_balanced_slices_cover_the_arena():
    for size in (0, 16, 17 * 16, 1000 * 16 + 5):
        for parts in (1, 2, 3, 7):
            slices = byte_balanced_slices(size, parts)
            assert slices[0][0] == 0 and slices[-1][1] == size
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
            lengths = [hi - lo for lo, hi in slices]
            if size >= parts * ALIGN:
                assert max(lengths) - min(lengths) <= ALIGN + size % ALIGN
            assert all(lo % ALIGN == 0 for lo, _ in slices)


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_update_rule_on_slices_equals_whole_arena(kind):
    """A parameter server applies the rule to its slice only: slices must give the same floats."""
    cls = solver_class(kind)
    from engine import crema_pb2
    param = crema_pb2.SolverParameter(type=kind, base_lr=0.1, weight_decay=0.01, iter_size=2,
                                      momentum=0.9 if kind in ("SGD", "Nesterov", "Adam",
                                                               "AdaDelta") else 0.0)
    g = np.random.default_rng(3)
    size = 160
    data = g.standard_normal(size).astype(np.float32)
    diffs = [g.standard_normal(size).astype(np.float32) for _ in range(3)]
    lr = g.choice([0.0, 1.0, 2.0], size).astype(np.float32)
    decay = g.choice([0.0, 1.0], size).astype(np.float32)
    whole_hist = [np.zeros(size, np.float32) for _ in range(cls.history_sets)]
    part_hist = [np.zeros(size, np.float32) for _ in range(cls.history_sets)]
    whole, parts = data.copy(), data.copy()
    for it, d in enumerate(diffs):
        step = d.copy()
        cls.compute_update(param, whole, step, whole_hist, lr, decay, 0.1, it)
        whole -= step
        for lo, hi in byte_balanced_slices(size, 3):
            step = d[lo:hi].copy()
            cls.compute_update(param, parts[lo:hi], step, [h[lo:hi] for h in part_hist],
                               lr[lo:hi], decay[lo:hi], 0.1, it)
            parts[lo:hi] -= step
    np.testing.assert_array_equal(parts, whole)
    assert not np.array_equal(whole, data)


def test_solver_history_shares_the_arena_layout():
    solver = get_solver(f'net_param {{ {NET} }} base_lr: 0.1 type: "Adam"'.replace(
        'name: "arena"', 'name: "arena" force_backward: true'))
    arena = solver.net.arena
    assert len(solver.history_buffers) == 2
    assert all(b.shape == (arena.size,) for b in solver.history_buffers)
    assert len(solver.history) == 2 * len(arena)
    for view, blob in zip(solver.history, solver.net.learnable_params * 2):
        assert view.shape == blob.shape
