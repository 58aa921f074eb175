"""Input, DummyData, MemoryData, HDF5Data, HDF5Output."""
import os
import warnings

import h5py
import numpy as np
import pytest

import engine
from engine.blob import Blob
from engine.errors import LayerError
from engine.testing import check_gradient, layer_from_text, run_forward


def _tops(n, dtype=np.float32):
    return [Blob((), dtype=dtype) for _ in range(n)]


def _setup(layer, n_top, dtype=np.float32):
    top = _tops(n_top, dtype)
    layer.setup([], top)
    layer.reshape([], top)
    return top


# --- Input ---------------------------------------------------------------------------------

def test_input_one_shape_per_top():
    layer = layer_from_text('type: "Input" top: "a" top: "b" '
                            'input_param { shape { dim: 2 dim: 3 } shape { dim: 4 } }')
    _, top = run_forward(layer, [], n_top=2)
    assert top[0].shape == (2, 3) and top[1].shape == (4,)


def test_input_shared_shape_and_reshape_is_kept():
    layer = layer_from_text('type: "Input" top: "a" top: "b" '
                            'input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } }')
    top = _setup(layer, 2)
    assert top[0].shape == top[1].shape == (1, 2, 5, 5)
    top[0].data[...] = 7.0
    layer.forward([], top)
    assert np.all(top[0].data == 7.0)  # forward leaves the user's data alone
    top[0].reshape((3, 2, 5, 5))
    layer.reshape([], top)  # like Caffe, reshape keeps a user's new shape
    assert top[0].shape == (3, 2, 5, 5)


def test_input_no_shape_leaves_top():
    layer = layer_from_text('type: "Input" top: "a"')
    top = _tops(1)
    top[0].reshape((2, 2))
    layer.setup([], top)
    assert top[0].shape == (2, 2)


def test_input_wrong_shape_count():
    layer = layer_from_text('type: "Input" top: "a" top: "b" top: "c" '
                            'input_param { shape { dim: 1 } shape { dim: 2 } }')
    with pytest.raises(LayerError, match="3 tops"):
        _setup(layer, 3)


def test_input_has_no_gradient():
    layer = layer_from_text('type: "Input" top: "a" input_param { shape { dim: 2 } }')
    top = _setup(layer, 1)
    layer.backward(top, [], [])  # data layers have nothing to propagate
    assert layer.exact_num_bottom == 0 and layer.blobs == []


# --- DummyData -----------------------------------------------------------------------------

def test_dummy_data_default_constant_zero_and_shapes():
    layer = layer_from_text('type: "DummyData" top: "a" top: "b" '
                            'dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 } }')
    _, top = run_forward(layer, [], n_top=2)
    assert top[0].shape == (2, 3) and top[1].shape == (4,)
    assert np.all(top[0].data == 0) and np.all(top[1].data == 0)


def test_dummy_data_legacy_dims_and_constant_value():
    layer = layer_from_text('type: "DummyData" top: "a" top: "b" dummy_data_param { '
                            'num: 2 channels: 3 channels: 1 height: 4 width: 5 '
                            'data_filler { type: "constant" value: 1.5 } }')
    _, top = run_forward(layer, [], n_top=2)
    assert top[0].shape == (2, 3, 4, 5) and top[1].shape == (2, 1, 4, 5)
    assert np.all(top[0].data == 1.5) and np.all(top[1].data == 1.5)


def test_dummy_data_constant_filled_once_gaussian_every_forward():
    text = ('type: "DummyData" top: "c" top: "g" dummy_data_param { shape { dim: 500 } '
            'data_filler { type: "constant" value: 3 } '
            'data_filler { type: "gaussian" mean: 2 std: 0.5 } }')
    engine.set_random_seed(5)
    layer = layer_from_text(text)
    top = _setup(layer, 2)
    top[0].data[...] = -1.0  # Caffe does not refill constant tops after setup
    layer.forward([], top)
    first = top[1].data.copy()
    layer.forward([], top)
    assert np.all(top[0].data == -1.0)
    assert not np.array_equal(first, top[1].data)  # gaussian refilled
    assert abs(first.mean() - 2.0) < 0.15 and abs(first.std() - 0.5) < 0.1
    # the same seed gives the same draws
    engine.set_random_seed(5)
    again = layer_from_text(text)
    top2 = _setup(again, 2)
    again.forward([], top2)
    np.testing.assert_array_equal(top2[1].data, first)


def test_dummy_data_errors():
    with pytest.raises(LayerError, match="data_filler"):
        _setup(layer_from_text('type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { '
                               'shape { dim: 1 } data_filler { } data_filler { } }'), 3)
    with pytest.raises(LayerError, match="both 'shape' and the legacy"):
        _setup(layer_from_text('type: "DummyData" top: "a" dummy_data_param { shape { dim: 1 } '
                               'num: 1 channels: 1 height: 1 width: 1 }'), 1)
    with pytest.raises(LayerError, match="'width'"):
        _setup(layer_from_text('type: "DummyData" top: "a" dummy_data_param { '
                               'num: 1 channels: 1 height: 1 }'), 1)
    with pytest.raises(LayerError, match="'shape' once"):
        _setup(layer_from_text('type: "DummyData" top: "a"'), 1)
    with pytest.raises(LayerError, match="unknown filler"):
        _setup(layer_from_text('type: "DummyData" top: "a" dummy_data_param { shape { dim: 1 } '
                               'data_filler { type: "nope" } }'), 1)


# --- MemoryData ----------------------------------------------------------------------------

MEM = ('name: "mem" type: "MemoryData" top: "data" top: "label" '
       'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 }')


def test_memory_data_batches_wrap_around():
    layer = layer_from_text(MEM)
    top = _setup(layer, 2)
    assert top[0].shape == (2, 1, 2, 3) and top[1].shape == (2,)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([10, 11, 12, 13], np.float32)
    layer.set_input_arrays(data, labels)
    seen = []
    for _ in range(3):
        layer.forward([], top)
        seen.append((top[0].data.copy(), top[1].data.copy()))
    np.testing.assert_array_equal(seen[0][0], data[0:2])
    np.testing.assert_array_equal(seen[1][0], data[2:4])
    np.testing.assert_array_equal(seen[2][0], data[0:2])  # wrapped around
    np.testing.assert_array_equal(seen[1][1], [12, 13])
    np.testing.assert_array_equal(seen[2][1], [10, 11])


def test_memory_data_pycaffe_label_shape_and_reset():
    layer = layer_from_text(MEM)
    top = _setup(layer, 2)
    data = np.ones((2, 1, 2, 3), np.float32)
    layer.set_input_arrays(data, np.array([5, 6], np.float32).reshape(2, 1, 1, 1))
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, [5, 6])
    data2 = np.full((6, 1, 2, 3), 4.0, np.float32)
    layer.reset(data2, np.arange(6, dtype=np.float32), 4)  # serve only the first 4 rows
    for expected in ([0, 1], [2, 3], [0, 1]):
        layer.forward([], top)
        np.testing.assert_array_equal(top[1].data, expected)
    assert np.all(top[0].data == 4.0)


def test_memory_data_errors():
    layer = layer_from_text(MEM)
    top = _setup(layer, 2)
    with pytest.raises(LayerError, match="set_input_arrays"):
        layer.forward([], top)
    with pytest.raises(LayerError, match=r"\(3, 1, 2, 2\).*\(N, 1, 2, 3\)"):
        layer.set_input_arrays(np.zeros((3, 1, 2, 2), np.float32), np.zeros(3, np.float32))
    with pytest.raises(LayerError, match="multiple of batch_size"):
        layer.set_input_arrays(np.zeros((3, 1, 2, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(LayerError, match="float32"):
        layer.set_input_arrays(np.zeros((2, 1, 2, 3), np.float64), np.zeros(2, np.float32))
    with pytest.raises(LayerError, match="C-contiguous"):
        layer.set_input_arrays(np.zeros((2, 1, 3, 2), np.float32).transpose(0, 1, 3, 2),
                               np.zeros(2, np.float32))
    with pytest.raises(LayerError, match=r"4 rows.*2"):
        layer.set_input_arrays(np.zeros((4, 1, 2, 3), np.float32), np.zeros(2, np.float32))
    with pytest.raises(LayerError, match="positive"):
        _setup(layer_from_text('type: "MemoryData" top: "d" top: "l" '
                               'memory_data_param { batch_size: 2 channels: 1 height: 2 }'), 2)


def test_memory_data_warns_about_transform_param():
    layer = layer_from_text(MEM + ' transform_param { scale: 2 }')
    _setup(layer, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer.set_input_arrays(np.zeros((2, 1, 2, 3), np.float32), np.zeros(2, np.float32))
    assert any("does not transform" in str(w.message) for w in caught)


# --- HDF5Data ------------------------------------------------------------------------------

def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, arr in datasets.items():
            f.create_dataset(name, data=arr)
    return path


def _two_files(tmp_path):
    """file a: rows 0..2, file b: rows 3..6; data row r = [r, 10r], label r = 100r."""
    rows = np.arange(7)
    data = np.stack([rows, 10 * rows], axis=1).astype(np.float64)
    label = (100 * rows).astype(np.int32)  # integers are converted, as Caffe does
    _h5(tmp_path / "a.h5", data=data[:3], label=label[:3])
    _h5(tmp_path / "b.h5", data=data[3:], label=label[3:])
    src = tmp_path / "list.txt"
    src.write_text(f"{tmp_path / 'a.h5'}\n\n{tmp_path / 'b.h5'}\n")
    return src


def _hdf5_layer(source, batch_size, shuffle=False, tops=("data", "label"), phase=engine.TRAIN):
    text = (f'name: "h5" type: "HDF5Data" ' + " ".join(f'top: "{t}"' for t in tops) +
            f' hdf5_data_param {{ source: "{source}" batch_size: {batch_size} '
            f'shuffle: {"true" if shuffle else "false"} }}')
    return layer_from_text(text, phase=phase)


def test_hdf5_data_batches_span_files_and_wrap(tmp_path):
    layer = _hdf5_layer(_two_files(tmp_path), 4)
    top = _setup(layer, 2)
    assert top[0].shape == (4, 2) and top[1].shape == (4,)
    assert top[0].dtype == np.float32
    order = []
    for _ in range(4):
        layer.forward([], top)
        np.testing.assert_array_equal(top[0].data[:, 1], 10 * top[0].data[:, 0])
        np.testing.assert_array_equal(top[1].data, 100 * top[0].data[:, 0])
        order.extend(top[0].data[:, 0].astype(int).tolist())
    # 3 rows of a.h5, then b.h5 (the first batch spans the boundary), then a.h5 again
    assert order == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 1]


def test_hdf5_data_shuffle_keeps_rows(tmp_path):
    src = _two_files(tmp_path)
    engine.set_random_seed(3)
    layer = _hdf5_layer(src, 7, shuffle=True)
    top = _setup(layer, 2)
    epochs = []
    for _ in range(3):
        layer.forward([], top)
        np.testing.assert_array_equal(top[1].data, 100 * top[0].data[:, 0])  # rows stay paired
        epochs.append(top[0].data[:, 0].astype(int).tolist())
    for epoch in epochs:
        assert sorted(epoch) == list(range(7))  # each epoch: every row once
    assert any(e != list(range(7)) for e in epochs)
    # files are read whole, one at a time: each epoch is a.h5's rows then b.h5's, or the reverse
    for e in epochs:
        assert sorted(e[:3]) == [0, 1, 2] or sorted(e[:4]) == [3, 4, 5, 6]
    # the same seed repeats the same order
    engine.set_random_seed(3)
    again = _hdf5_layer(src, 7, shuffle=True)
    top = _setup(again, 2)
    again.forward([], top)
    assert top[0].data[:, 0].astype(int).tolist() == epochs[0]


def test_hdf5_data_single_file_multi_dim(tmp_path):
    x = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    _h5(tmp_path / "one.h5", x=x)
    src = tmp_path / "list.txt"
    src.write_text(str(tmp_path / "one.h5") + "\n")
    layer = _hdf5_layer(src, 3, tops=("x",))
    top = _setup(layer, 1)
    assert top[0].shape == (3, 2, 3)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, x[:3])
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, x[[3, 4, 0]])


def test_hdf5_data_rank_striding(tmp_path):
    src = _two_files(tmp_path)
    got = {}
    for rank in (0, 1):
        layer = _hdf5_layer(src, 3)
        layer.rank, layer.world_size = rank, 2
        top = _setup(layer, 2)
        rows = []
        for _ in range(3):
            layer.forward([], top)
            rows.extend(top[0].data[:, 0].astype(int).tolist())
        got[rank] = rows
    # global row offsets 0..17 over the stream 0..6,0..6,0..3: rank r keeps offsets = r mod 2
    stream = (list(range(7)) * 3)[:18]
    assert got[0] == stream[0::2][:9]
    assert got[1] == stream[1::2][:9]
    test_layer = _hdf5_layer(src, 3, phase=engine.TEST)
    test_layer.rank, test_layer.world_size = 1, 2
    top = _setup(test_layer, 2)
    test_layer.forward([], top)  # TEST reads every row on every rank, as Caffe
    assert top[0].data[:, 0].tolist() == [0, 1, 2]


def test_hdf5_data_relative_paths(tmp_path, monkeypatch):
    sub = tmp_path / "lists"
    sub.mkdir()
    x = np.arange(4, dtype=np.float32).reshape(4, 1)
    _h5(sub / "beside.h5", x=x)
    _h5(tmp_path / "cwd.h5", x=x + 10)
    (sub / "list.txt").write_text("beside.h5\ncwd.h5\n")
    monkeypatch.chdir(tmp_path)
    layer = _hdf5_layer("lists/list.txt", 8, tops=("x",))  # source relative to the cwd
    top = _setup(layer, 1)
    layer.forward([], top)
    # beside.h5 found next to the list; cwd.h5 found in the working directory
    assert top[0].data[:, 0].tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
    (sub / "list.txt").write_text("missing.h5\n")
    with pytest.raises(LayerError, match=r"missing\.h5.*current directory.*folder of the source"):
        _setup(_hdf5_layer("lists/list.txt", 1, tops=("x",)), 1)


def test_hdf5_data_errors(tmp_path):
    src = _two_files(tmp_path)
    with pytest.raises(LayerError, match=r"no dataset 'nope'.*a\.h5|a\.h5.*no dataset 'nope'"):
        _setup(_hdf5_layer(src, 2, tops=("data", "nope")), 2)
    with pytest.raises(LayerError, match="'h5'"):
        _setup(_hdf5_layer(src, 2, tops=("nope",)), 1)
    with pytest.raises(LayerError, match="cannot open hdf5_data_param source"):
        _setup(_hdf5_layer(tmp_path / "absent.txt", 2), 2)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(LayerError, match="lists no HDF5 files"):
        _setup(_hdf5_layer(empty, 2), 2)
    _h5(tmp_path / "bad.h5", data=np.zeros((3, 2)), label=np.zeros(2))
    bad = tmp_path / "bad.txt"
    bad.write_text(str(tmp_path / "bad.h5"))
    with pytest.raises(LayerError, match="different numbers of rows"):
        _setup(_hdf5_layer(bad, 2), 2)
    with pytest.raises(LayerError, match="batch_size"):
        _setup(_hdf5_layer(src, 0), 2)
    _h5(tmp_path / "c.h5", data=np.zeros((2, 3)), label=np.zeros(2))
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / 'c.h5'}\n")
    layer = _hdf5_layer(mixed, 4)
    top = _setup(layer, 2)
    with pytest.raises(LayerError, match=r"rows of shape \(3,\).*\(2,\)"):
        layer.forward([], top)


# --- HDF5Output ----------------------------------------------------------------------------

def test_hdf5_output_round_trip(tmp_path):
    out = tmp_path / "out.h5"
    layer = layer_from_text(f'name: "o" type: "HDF5Output" bottom: "d" bottom: "l" '
                            f'hdf5_output_param {{ file_name: "{out}" }}')
    d1 = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    l1 = np.array([1, 2], np.float32)
    bottom = [Blob.from_array(d1), Blob.from_array(l1)]
    layer.setup(bottom, [])
    assert out.exists()  # created at setup, as Caffe truncates the file
    layer.reshape(bottom, [])
    layer.forward(bottom, [])
    d2, l2 = d1 + 100, l1 + 100
    bottom[0].data[...] = d2
    bottom[1].data[...] = l2
    layer.forward(bottom, [])
    layer.close()
    with h5py.File(out, "r") as f:
        data, label = f["data"][...], f["label"][...]
    assert data.dtype == np.float32
    # Caffe's 4-D (num, channels, height, width) layout, rows appended per forward
    np.testing.assert_array_equal(data, np.concatenate([d1, d2]).reshape(4, 3, 2, 1))
    np.testing.assert_array_equal(label, np.concatenate([l1, l2]).reshape(4, 1, 1, 1))
    assert not os.path.exists(str(out) + ".tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
    layer.backward([], [False, False], bottom)  # no gradient: nothing happens
    np.testing.assert_array_equal(bottom[0].diff, 0)


def test_hdf5_output_errors(tmp_path):
    layer = layer_from_text(f'type: "HDF5Output" bottom: "d" bottom: "l" '
                            f'hdf5_output_param {{ file_name: "{tmp_path / "o.h5"}" }}')
    bottom = [Blob.from_array(np.zeros((3, 2))), Blob.from_array(np.zeros(2))]
    layer.setup(bottom, [])
    with pytest.raises(LayerError, match=r"3 rows.*\(3, 2\).*\(2,\)"):
        layer.reshape(bottom, [])
    with pytest.raises(LayerError, match="file_name"):
        layer_from_text('type: "HDF5Output"').setup(bottom, [])
    with pytest.raises(LayerError, match="cannot write"):
        layer_from_text(f'type: "HDF5Output" hdf5_output_param {{ '
                        f'file_name: "{tmp_path / "no" / "dir" / "o.h5"}" }}').setup(bottom, [])


def test_data_layers_registered_and_no_params():
    for t in ("Input", "DummyData", "MemoryData", "HDF5Data", "HDF5Output"):
        assert t in engine.layer_type_list()
    # the gradient check helper runs a data layer's (empty) backward without complaint
    check_gradient('type: "DummyData" top: "a" dummy_data_param { shape { dim: 2 } }', [],
                   n_top=1, check_bottom=[])


def test_hdf5data_state_dict_resumes_on_the_next_row(tmp_path):
    import h5py
    rng = np.random.default_rng(0)
    files = []
    for k, n in enumerate((5, 7)):
        path = tmp_path / f"part{k}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = rng.standard_normal((n, 2)).astype(np.float32)
        files.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(files) + "\n")
    text = (f'name: "h" type: "HDF5Data" top: "data" hdf5_data_param {{ source: "{tmp_path / "list.txt"}" '
            'batch_size: 4 shuffle: true }')
    engine.set_random_seed(3)
    layer = layer_from_text(text)
    _, top = run_forward(layer, [], n_top=1, dtype=np.float32)
    for _ in range(2):
        layer.forward([], top)
    state = layer.state_dict()
    expected = []
    rng_state = engine.rng.get_state()
    for _ in range(3):
        layer.forward([], top)
        expected.append(top[0].data.copy())
    engine.set_random_seed(99)  # a different stream until the solver restores it
    fresh = layer_from_text(text)
    _, top2 = run_forward(fresh, [], n_top=1, dtype=np.float32)
    fresh.load_state_dict(state)
    engine.rng.set_state(rng_state)
    for want in expected:
        fresh.forward([], top2)
        np.testing.assert_array_equal(top2[0].data, want)


def test_solver_resume_with_hdf5_shuffle_is_bit_identical(tmp_path, monkeypatch):
    """The snapshot sidecar carries the layer's own shuffling generator (a JSON string) and both
    random streams, so a resumed run reads the same rows and draws the same dropout masks."""
    g = np.random.default_rng(0)
    for k, n in enumerate((7, 5)):
        _h5(tmp_path / f"p{k}.h5", data=g.standard_normal((n, 4)).astype(np.float32),
            label=g.integers(0, 3, n).astype(np.float32))
    (tmp_path / "list.txt").write_text("p0.h5\np1.h5\n")
    monkeypatch.chdir(tmp_path)
    net = ('layer { name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { '
           'source: "list.txt" batch_size: 5 shuffle: true } } '
           'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param '
           '{ num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } } '
           'layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" } '
           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }')
    solver = ('base_lr: 0.1 lr_policy: "fixed" max_iter: 8 display: 0 snapshot: 3 '
              f'snapshot_prefix: "{tmp_path}/s" random_seed: 5 net_param {{ {net} }}')
    engine.get_solver(solver).solve()
    full = (tmp_path / "s_iter_8.caffemodel").read_bytes()
    (tmp_path / "s_iter_8.caffemodel").unlink()
    engine.get_solver(solver).solve(str(tmp_path / "s_iter_3.solverstate"))
    assert (tmp_path / "s_iter_8.caffemodel").read_bytes() == full
