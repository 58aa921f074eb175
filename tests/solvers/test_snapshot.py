"""Snapshots: Caffe's file names and layouts, atomic writes, and bit-identical resume."""
import logging
import os

import re

import h5py
import numpy as np
import pytest

from engine import crema_pb2
from engine.errors import SolverError
from engine.solvers import get_solver
from engine.solvers import snapshot as snap

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""

SOLVERS = {
    "SGD": 'type: "SGD" momentum: 0.9 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 '
           'stepvalue: 4',
    "Adam": 'type: "Adam" momentum: 0.9 lr_policy: "fixed"',
}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing lands in the working directory of the test run


def make(prefix, kind="SGD", fmt="BINARYPROTO", extra="", seed=31):
    text = (f'net_param {{ {NET} }} base_lr: 0.05 weight_decay: 0.01 average_loss: 4 '
            f'random_seed: {seed} snapshot_prefix: "{prefix}" snapshot_format: {fmt} '
            f'{SOLVERS[kind]} {extra}')
    return get_solver(text)


def weights(solver):
    return [b.data.copy() for b in solver.net.learnable_params]


def test_binary_snapshot_names_and_contents(tmp_path, caplog):
    prefix = tmp_path / "run"
    solver = make(prefix, extra="snapshot: 2 max_iter: 4")
    with caplog.at_level(logging.INFO, logger="crema"):
        solver.solve()
    names = sorted(os.listdir(tmp_path))
    assert names == ["run_iter_2.caffemodel", "run_iter_2.solverstate",
                     "run_iter_2.solverstate.crema", "run_iter_4.caffemodel",
                     "run_iter_4.solverstate", "run_iter_4.solverstate.crema"]
    model, state_path = f"{prefix}_iter_4.caffemodel", f"{prefix}_iter_4.solverstate"
    assert f"Snapshotting to binary proto file {model}" in caplog.text
    assert f"Snapshotting solver state to binary proto file {state_path}" in caplog.text
    state = crema_pb2.SolverState()
    with open(state_path, "rb") as fh:
        state.ParseFromString(fh.read())
    assert state.iter == 4 and state.learned_net == model and state.current_step == 1
    assert len(state.history) == 2
    for bp, hist, param in zip(state.history, solver.history, solver.net.learnable_params):
        assert tuple(bp.shape.dim) == param.shape
        np.testing.assert_array_equal(np.array(bp.data, dtype=np.float32).reshape(param.shape),
                                      hist)
        assert not len(bp.diff)
    assert np.any(solver.history[0] != 0)
    # the model file is a NetParameter with the trained weights
    net_param = crema_pb2.NetParameter()
    with open(model, "rb") as fh:
        net_param.ParseFromString(fh.read())
    ip = next(l for l in net_param.layer if l.name == "ip")
    np.testing.assert_array_equal(np.array(ip.blobs[0].data, np.float32).reshape(2, 3),
                                  solver.net.params["ip"][0].data)


def test_hdf5_snapshot_layout(tmp_path, caplog):
    prefix = tmp_path / "h"
    solver = make(prefix, "Adam", "HDF5")
    solver.step(3)
    with caplog.at_level(logging.INFO, logger="crema"):
        model, state_path = solver.snapshot()
    assert model == f"{prefix}_iter_3.caffemodel.h5"
    assert state_path == f"{prefix}_iter_3.solverstate.h5"
    assert sorted(os.listdir(tmp_path)) == ["h_iter_3.caffemodel.h5", "h_iter_3.solverstate.h5"]
    assert f"Snapshotting to HDF5 file {model}" in caplog.text
    assert f"Snapshotting solver state to HDF5 file {state_path}" in caplog.text
    with h5py.File(state_path, "r") as fh:
        assert fh["iter"].shape == (1,) and fh["iter"].dtype == np.int32
        assert int(fh["iter"][0]) == 3 and int(fh["current_step"][0]) == 0
        assert fh["learned_net"][()].rstrip(b"\0").decode() == model
        history = fh["history"]
        assert sorted(history) == ["0", "1", "2", "3"]  # Adam: m for both params, then v
        for i, hist in enumerate(solver.history):
            assert history[str(i)].dtype == np.float32
            np.testing.assert_array_equal(history[str(i)][()], hist)
        assert "crema" in fh and "manifest" in fh["crema"]
    with h5py.File(model, "r") as fh:
        np.testing.assert_array_equal(fh["data"]["ip"]["0"][()], solver.net.params["ip"][0].data)


@pytest.mark.parametrize("kind", sorted(SOLVERS))
@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_resume_is_bit_identical(tmp_path, kind, fmt):
    straight = make(tmp_path / "a", kind, fmt)
    straight.step(6)

    first = make(tmp_path / "b", kind, fmt)
    first.step(3)
    _, state_path = first.snapshot()
    resumed = make(tmp_path / "c", kind, fmt, seed=99)
    resumed.restore(state_path)
    assert resumed.iter == 3 and resumed.current_step == first.current_step
    for a, b in zip(resumed.history, first.history):
        np.testing.assert_array_equal(a, b)
    resumed.step(3)
    assert resumed.iter == 6 and resumed.current_step == straight.current_step
    for a, b in zip(weights(resumed), weights(straight)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(resumed.history, straight.history):
        np.testing.assert_array_equal(a, b)
    assert resumed.smoothed_loss == straight.smoothed_loss


def test_solve_resume_file(tmp_path, caplog):
    straight = make(tmp_path / "a", extra="max_iter: 5 snapshot_after_train: false")
    straight.solve()
    first = make(tmp_path / "b", extra="max_iter: 5")
    first.step(2)
    _, state_path = first.snapshot()
    resumed = make(tmp_path / "b", extra="max_iter: 5 snapshot_after_train: false")
    with caplog.at_level(logging.INFO, logger="crema"):
        resumed.solve(state_path)
    assert f"Restoring previous solver status from {state_path}" in caplog.text
    assert resumed.iter == 5
    for a, b in zip(weights(resumed), weights(straight)):
        np.testing.assert_array_equal(a, b)


def test_layer_state_is_saved_and_restored(tmp_path):
    solver = make(tmp_path / "s")
    layer = solver.net.layer_dict["data"]
    layer.state_dict = lambda: {"cursor": 7, "order": np.array([2, 0, 1]), "name": "x"}
    solver.step(1)
    _, state_path = solver.snapshot()
    other = make(tmp_path / "t")
    received = []
    other.net.layer_dict["data"].load_state_dict = received.append
    other.restore(state_path)
    assert len(received) == 1
    assert received[0]["cursor"] == 7 and received[0]["name"] == "x"
    np.testing.assert_array_equal(received[0]["order"], [2, 0, 1])


def test_restore_caffe_state_without_extras(tmp_path, caplog):
    solver = make(tmp_path / "s")
    solver.step(2)
    _, state_path = solver.snapshot()
    os.remove(snap.extras_path(state_path))
    other = make(tmp_path / "t")
    with caplog.at_level(logging.INFO, logger="crema"):
        other.restore(state_path)
    assert "no crema extras" in caplog.text
    assert other.iter == 2
    for a, b in zip(weights(other), weights(solver)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(other.history, solver.history):
        np.testing.assert_array_equal(a, b)
    other.step(1)
    assert other.iter == 3


def test_learned_net_found_beside_state_file(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    solver = make("snaps")  # relative prefix: files in run/, learned_net "snaps_iter_1..."
    solver.step(1)
    _, state_path = solver.snapshot()
    moved = tmp_path / "moved"
    os.rename(run, moved)
    monkeypatch.chdir(tmp_path)
    other = make(tmp_path / "x")
    other.restore(moved / os.path.basename(state_path))
    for a, b in zip(weights(other), weights(solver)):
        np.testing.assert_array_equal(a, b)


def test_restore_errors(tmp_path):
    sgd = make(tmp_path / "s")
    sgd.step(1)
    _, state_path = sgd.snapshot()
    adam = make(tmp_path / "a", "Adam")
    with pytest.raises(SolverError, match=r"Incorrect length of history blobs.*holds 2.*needs 4"):
        adam.restore(state_path)
    assert adam.iter == 0  # nothing changed
    with pytest.raises(SolverError, match="not found"):
        sgd.restore(tmp_path / "missing.solverstate")
    # a state whose history shapes do not fit this net
    bad = crema_pb2.SolverState(iter=1, current_step=0)
    for shape in [(3, 2), (2,)]:
        bp = bad.history.add()
        bp.shape.dim.extend(shape)
        bp.data.extend([0.0] * int(np.prod(shape)))
    bad_path = tmp_path / "bad.solverstate"
    bad_path.write_bytes(bad.SerializeToString())
    with pytest.raises(SolverError, match=r"history blob 0 has shape \(3, 2\).*\(2, 3\)"):
        sgd.restore(bad_path)
    (tmp_path / "junk.solverstate").write_bytes(b"\xff\xff\xff")
    with pytest.raises(SolverError, match="not a binary SolverState"):
        sgd.restore(tmp_path / "junk.solverstate")
    gone = crema_pb2.SolverState(iter=1, learned_net=str(tmp_path / "gone.caffemodel"))
    for hist in sgd.history:
        bp = gone.history.add()
        bp.shape.dim.extend(hist.shape)
        bp.data.extend(hist.ravel().tolist())
    (tmp_path / "gone.solverstate").write_bytes(gone.SerializeToString())
    with pytest.raises(SolverError, match="learned_net .*gone.caffemodel.* not found"):
        sgd.restore(tmp_path / "gone.solverstate")


def test_legacy_4d_history_shapes_are_accepted(tmp_path):
    sgd = make(tmp_path / "s")
    sgd.net.save(str(tmp_path / "old.caffemodel"))
    state = crema_pb2.SolverState(iter=4, current_step=1, learned_net="old.caffemodel")
    values = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([5, 6], np.float32)]
    for shape4, v in zip([(1, 1, 2, 3), (1, 1, 1, 2)], values):
        bp = state.history.add()
        bp.num, bp.channels, bp.height, bp.width = shape4
        bp.data.extend(v.ravel().tolist())
    path = tmp_path / "old.solverstate"
    path.write_bytes(state.SerializeToString())
    sgd.restore(path)
    assert sgd.iter == 4 and sgd.current_step == 1
    for a, b in zip(sgd.history, values):
        np.testing.assert_array_equal(a, b)


def test_atomic_writes_leave_no_temp_file(tmp_path):
    target = tmp_path / "state.solverstate"
    target.write_bytes(b"old")

    def failing(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError):
        snap.atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.solverstate"]
    # a real snapshot leaves only the final files
    solver = make(tmp_path / "r", "Adam", "HDF5")
    solver.step(1)
    solver.snapshot()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".") or n.endswith(".tmp")]
    with pytest.raises(SolverError, match="cannot write"):
        snap.atomic_write(tmp_path / "no" / "such" / "dir", failing)


def test_snapshot_every_n_and_after_train(tmp_path):
    solver = make(tmp_path / "e", extra="snapshot: 3 max_iter: 7")
    solver.solve()
    models = sorted(n for n in os.listdir(tmp_path) if n.endswith(".caffemodel"))
    assert models == ["e_iter_3.caffemodel", "e_iter_6.caffemodel", "e_iter_7.caffemodel"]
    quiet = make(tmp_path / "q", extra="max_iter: 2 snapshot_after_train: false")
    quiet.solve()
    assert not [n for n in os.listdir(tmp_path) if n.startswith("q_")]


def test_snapshot_diff_writes_gradients(tmp_path):
    solver = make(tmp_path / "d", extra="snapshot_diff: true")
    solver.step(1)
    model, _ = solver.snapshot()
    param = crema_pb2.NetParameter()
    with open(model, "rb") as fh:
        param.ParseFromString(fh.read())
    ip = next(l for l in param.layer if l.name == "ip")
    assert len(ip.blobs[0].diff) == 6


# Damaged or incomplete solver states are refused with a crema error naming the file.
def _snapshot_once(tmp_path, fmt):
    solver = make(tmp_path / "s", "Adam", fmt)
    solver.step(2)
    return solver, solver.snapshot()[1]


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_sidecar_is_refused_naming_it(tmp_path, damage):
    solver, state = _snapshot_once(tmp_path, "BINARYPROTO")
    sidecar = state + ".crema"
    raw = open(sidecar, "rb").read()
    with open(sidecar, "wb") as f:
        f.write({"garbage": b"not a zip file at all" * 10, "truncate": raw[:len(raw) // 2],
                 "empty": b""}[damage])
    with pytest.raises(SolverError, match=re.escape(sidecar)):
        make(tmp_path / "t", "Adam", "BINARYPROTO").restore(state)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_damaged_hdf5_state_is_refused_naming_it(tmp_path, cut):
    solver, state = _snapshot_once(tmp_path, "HDF5")
    raw = open(state, "rb").read()
    with open(state, "wb") as f:
        f.write(raw[:int(len(raw) * cut)])
    with pytest.raises(SolverError, match=re.escape(state)):
        make(tmp_path / "t", "Adam", "HDF5").restore(state)


def test_state_without_learned_net_is_refused(tmp_path):
    from engine import crema_pb2
    solver, state = _snapshot_once(tmp_path, "BINARYPROTO")
    msg = crema_pb2.SolverState()
    msg.ParseFromString(open(state, "rb").read())
    msg.ClearField("learned_net")
    open(state, "wb").write(msg.SerializeToString())
    with pytest.raises(SolverError, match="names no weights file"):
        make(tmp_path / "t", "Adam", "BINARYPROTO").restore(state)
