"""Data sharding across ranks (engine.data.sharding), the two random streams (engine.rng) and
HDF5Data's reading of only the rows a rank takes."""
import json
import multiprocessing
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest

import engine
from engine import rng
from engine.blob import Blob
from engine.data import lmdb_io
from engine.data.sharding import ShardMismatchError, data_shard, set_data_shard
from engine.errors import CremaError, LayerError
from engine.layers import data as data_layers
from engine.testing import layer_from_text

N_RECORDS = 11  # not a multiple of any world size used below, so passes do not align


# -- helpers --------------------------------------------------------------------------------------
def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, arr in datasets.items():
            f.create_dataset(name, data=arr)
    return str(path)


def h5_source(tmp_path, sizes, name="list.txt", row_shape=(), seed=0):
    """Files of `sizes` rows; dataset "x" (float64, values not exact in float32, row_shape) and
    "id" (int32, the record's number across all files, unique). Returns (source, arrays)."""
    g = np.random.default_rng(seed)
    paths, arrays, start = [], [], 0
    for k, n in enumerate(sizes):
        x = g.standard_normal((n,) + tuple(row_shape))
        ids = np.arange(start, start + n, dtype=np.int32)
        start += n
        paths.append(write_h5(tmp_path / f"{name}.{k}.h5", x=x, id=ids))
        arrays.append({"x": x, "id": ids})
    src = tmp_path / name
    src.write_text("\n".join(paths) + "\n")
    return src, arrays


def hdf5_text(source, batch_size, shuffle=False, name="h5"):
    return (f'name: "{name}" type: "HDF5Data" top: "x" top: "id" hdf5_data_param {{ '
            f'source: "{source}" batch_size: {batch_size} shuffle: {str(shuffle).lower()} }}')


def built(text, n_top, phase=engine.TRAIN):
    layer = layer_from_text(text, phase=phase)
    top = [Blob(()) for _ in range(n_top)]
    layer.setup([], top)
    layer.reshape([], top)
    return layer, top


def read(layer, top, batches, column=1):
    """The values of top `column` over `batches` forwards, as one list."""
    out = []
    for _ in range(batches):
        layer.forward([], top)
        out.extend(top[column].data.reshape(len(top[column].data), -1)[:, 0].tolist())
    return out


@pytest.fixture
def lmdb_db(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (N_RECORDS, 1, 2, 3), dtype=np.uint8)
    path = tmp_path / "db"
    lmdb_io.write_arrays(path, images, np.arange(N_RECORDS))
    return path


def data_text(path, batch_size, extra=""):
    return (f'name: "d" type: "Data" top: "data" top: "label" data_param {{ source: "{path}" '
            f'batch_size: {batch_size} backend: LMDB {extra} }}')


MEM = ('name: "m" type: "MemoryData" top: "data" top: "label" '
       'memory_data_param {{ batch_size: {b} channels: 1 height: 1 width: 2 }}')


def memory_layer(batch_size, n_rows, phase=engine.TRAIN):
    layer, top = built(MEM.format(b=batch_size), 2, phase)
    data = np.arange(2 * n_rows, dtype=np.float32).reshape(n_rows, 1, 1, 2)
    layer.set_input_arrays(data, np.arange(n_rows, dtype=np.float32))
    return layer, top


def batches(layer, top, n):
    """Copies of every top after each of n forwards."""
    out = []
    for _ in range(n):
        layer.forward([], top)
        out.append([t.data.copy() for t in top])
    return out


def close(layer):
    if hasattr(layer, "close"):  # MemoryData holds nothing to close
        layer.close()


def first_pass(per_rank, world, n):
    """Rank r's k-th record is stream record r + k*world; the records of stream offsets < n."""
    return [rec for r in range(world) for k, rec in enumerate(per_rank[r]) if r + k * world < n]


# -- one TRAIN pass over all ranks is a partition; TEST reads everything -------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["hdf5", "hdf5-shuffle", "lmdb", "lmdb-prefetch", "memory"])
def test_one_train_pass_over_the_ranks_reads_every_record_once(kind, world, tmp_path, lmdb_db):
    batch = 2
    per_rank = {}
    for rank in range(world):
        engine.set_random_seed(7, rank=rank)  # data shuffles must agree although ranks differ
        if kind.startswith("hdf5"):
            src, _ = h5_source(tmp_path, [4, 1, 6])
            layer, top = built(hdf5_text(src, batch, shuffle=kind.endswith("shuffle")), 2)
        elif kind.startswith("lmdb"):
            prefetch = 3 if kind.endswith("prefetch") else 0
            layer, top = built(data_text(lmdb_db, batch, f"prefetch: {prefetch}"), 2)
        else:
            layer, top = memory_layer(batch, 12)
        layer.set_shard(rank, world)
        assert layer.shard == (rank, world)
        per_rank[rank] = read(layer, top, 8)
        close(layer)
    n = 12 if kind == "memory" else N_RECORDS
    records = first_pass(per_rank, world, n)
    assert sorted(records) == list(range(n))  # all of them, none twice


@pytest.mark.parametrize("kind", ["hdf5-shuffle", "lmdb", "memory"])
def test_test_phase_reads_every_record_on_every_rank(kind, tmp_path, lmdb_db):
    got = []
    for rank, world in ((0, 1), (2, 3)):
        engine.set_random_seed(3, rank=rank)
        if kind == "hdf5-shuffle":
            src, _ = h5_source(tmp_path, [4, 1, 6])
            layer, top = built(hdf5_text(src, 3, shuffle=True), 2, engine.TEST)
        elif kind == "lmdb":
            layer, top = built(data_text(lmdb_db, 3), 2, engine.TEST)
        else:
            layer, top = memory_layer(3, 12, engine.TEST)
        layer.set_shard(rank, world)
        got.append(read(layer, top, 5))
        close(layer)
    assert got[0] == got[1]
    n = 12 if kind == "memory" else N_RECORDS
    assert sorted(got[0][:n]) == list(range(n))


# -- HDF5Data reads only its rows, equal to a reference that loads everything -------------------
def reference_stream(arrays, shuffle, gen):
    """Rows (per top, float32 as the old whole-file reading converted them) in stream order:
    file order drawn at setup and at each wrap, row order drawn at each file visit."""
    n_files = len(arrays)
    order = gen.permutation(n_files) if shuffle else np.arange(n_files)
    current = 0
    while True:
        full = {k: np.asarray(v, dtype=np.float32) for k, v in arrays[order[current]].items()}
        n = len(full["id"])
        for j in (gen.permutation(n) if shuffle else np.arange(n)):
            yield {k: v[j] for k, v in full.items()}
        if n_files > 1:
            current += 1
            if current == n_files:
                current = 0
                if shuffle:
                    order = gen.permutation(n_files)


def reference_batches(arrays, shuffle, gen, rank, world, stride, batch, n_batches):
    rows = []
    for offset, row in enumerate(reference_stream(arrays, shuffle, gen)):
        if not stride or offset % world == rank:
            rows.append(row)
        if len(rows) == batch * n_batches:
            break
    return {k: np.stack([r[k] for r in rows]) for k in ("x", "id")}


def test_hdf5_rows_equal_a_whole_file_reference(tmp_path, monkeypatch):
    cases = np.random.default_rng(2024)
    for case in range(30):
        sizes = cases.integers(1, 10, size=cases.integers(1, 5)).tolist()
        batch = int(cases.integers(1, 8))
        world = int(cases.integers(1, 5))
        shuffle = bool(cases.integers(2))
        phase = engine.TEST if cases.random() < 0.2 else engine.TRAIN
        row_shape = ((), (3,), (2, 3))[case % 3]
        # small read windows make the reader split files into several reads of every kind
        window = int(cases.choice([8, 40, 200, 32 << 20]))
        monkeypatch.setattr(data_layers, "_READ_WINDOW_BYTES", window)
        src, arrays = h5_source(tmp_path, sizes, name=f"case{case}.txt", row_shape=row_shape,
                                seed=case)
        n_batches = 2 * sum(sizes) // batch + 3  # past a few wraps
        for rank in range(world):
            seed = 100 + case
            engine.set_random_seed(seed, rank=rank)
            gen = rng.spawn_data_generator()  # the generator the layer takes at setup
            engine.set_random_seed(seed, rank=rank)
            layer, top = built(hdf5_text(src, batch, shuffle), 2, phase)
            layer.set_shard(rank, world)
            got = {"x": [], "id": []}
            for _ in range(n_batches):
                layer.forward([], top)
                got["x"].append(top[0].data.copy())
                got["id"].append(top[1].data.copy())
            layer.close()
            want = reference_batches(arrays, shuffle, gen, rank, world,
                                     phase == engine.TRAIN and world > 1, batch, n_batches)
            where = f"case {case}: sizes {sizes} batch {batch} rank {rank}/{world} " \
                    f"shuffle {shuffle} phase {phase} window {window}"
            np.testing.assert_array_equal(np.concatenate(got["id"]), want["id"], err_msg=where)
            np.testing.assert_array_equal(np.concatenate(got["x"]), want["x"], err_msg=where)


def test_hdf5_ranks_read_only_their_rows(tmp_path, monkeypatch):
    """Over one pass, each row is read from disk by exactly one rank (no whole-file loads)."""
    src, _ = h5_source(tmp_path, [30, 17, 25])  # 72 rows
    read_ids = []
    original = data_layers._read_sorted_rows

    def spy(ds, rows, out):
        original(ds, rows, out)
        if ds.name == "/id":
            read_ids.extend(out.astype(int).tolist())

    monkeypatch.setattr(data_layers, "_read_sorted_rows", spy)
    per_rank = []
    for rank in range(4):
        engine.set_random_seed(1, rank=rank)
        layer, top = built(hdf5_text(src, 3, shuffle=True), 2)
        layer.set_shard(rank, 4)
        read_ids.clear()
        taken = read(layer, top, 6)  # 18 rows: this rank's quarter of one pass
        assert sorted(read_ids) == sorted(taken)  # read from disk: what it took, nothing more
        per_rank.append(set(read_ids))
        layer.close()
    assert set.union(*per_rank) == set(range(72)) and sum(map(len, per_rank)) == 72


class CountingDataset:
    """An h5py dataset that records the selections read from it."""

    def __init__(self, ds):
        self.ds, self.reads = ds, []
        self.shape, self.dtype = ds.shape, ds.dtype

    def __getitem__(self, key):
        self.reads.append(key)
        return self.ds[key]


def test_read_sorted_rows_reads_runs_in_blocks(tmp_path, monkeypatch):
    values = np.random.default_rng(0).standard_normal((1000, 4))
    with h5py.File(write_h5(tmp_path / "big.h5", x=values), "r") as f:
        def read_into(rows):
            ds = CountingDataset(f["x"])
            out = np.empty((len(rows), 4), np.float32)
            data_layers._read_sorted_rows(ds, np.asarray(rows), out)
            np.testing.assert_array_equal(out, values[rows].astype(np.float32))
            return ds.reads

        assert read_into(np.arange(1000)) == [slice(0, 1000, 1)]  # no shuffle, world 1
        assert read_into(np.arange(2, 1000, 3)) == [slice(2, 999, 3)]  # no shuffle, world 3
        dense = np.sort(np.random.default_rng(1).choice(1000, 600, replace=False))
        reads = read_into(dense)
        assert len(reads) == 1 and isinstance(reads[0], slice)  # one span, picked in memory
        sparse = np.array([3, 200, 201, 650, 999])
        reads = read_into(sparse)
        assert len(reads) == 1 and list(reads[0]) == sparse.tolist()  # one point selection
        # a window of 100 rows: the span is read in pieces of at most 100 rows
        monkeypatch.setattr(data_layers, "_READ_WINDOW_BYTES", 100 * 8 * 4)
        reads = read_into(np.arange(1000))
        assert len(reads) == 10 and all(r.stop - r.start <= 100 for r in reads)
        read_into(dense)
        read_into(sparse)


def _read_shard_in_process(source, rank, world, conn):
    try:
        import engine as eng
        from engine.testing import layer_from_text as from_text
        from engine.blob import Blob as B
        eng.set_random_seed(5, rank=rank)
        layer = from_text(hdf5_text(source, 5, shuffle=True))
        top = [B(()), B(())]
        layer.setup([], top)
        layer.reshape([], top)
        layer.set_shard(rank, world)
        conn.send(read(layer, top, 4))
    except BaseException as e:  # reported to the parent, which fails the test with it
        conn.send(f"{type(e).__name__}: {e}")


def test_hdf5_files_are_read_by_several_processes_at_once(tmp_path):
    src, _ = h5_source(tmp_path, [20, 20])
    engine.set_random_seed(5)
    holder, top = built(hdf5_text(src, 5, shuffle=True), 2)  # this process keeps a file open
    holder.forward([], top)
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for rank in range(2):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_read_shard_in_process, args=(str(src), rank, 2, child))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    results = []
    for parent, proc in zip(pipes, procs):
        assert parent.poll(120), "a reader process gave no answer"
        results.append(parent.recv())
        proc.join(30)
    holder.close()
    for r in results:
        assert isinstance(r, list), r
    assert sorted(results[0] + results[1]) == list(range(40))


# -- the two random streams ---------------------------------------------------------------------
def test_data_stream_is_shared_by_ranks_and_main_stream_is_not():
    draws = []
    for rank in range(3):
        rng.set_random_seed(11, rank=rank)
        draws.append((rng.generator().random(4), rng.data_generator().random(4)))
    for rank in (1, 2):
        np.testing.assert_array_equal(draws[rank][1], draws[0][1])
        assert not np.array_equal(draws[rank][0], draws[0][0])
    # rank 0's main stream is seeded as it was before the data stream existed
    np.testing.assert_array_equal(draws[0][0], np.random.default_rng(11).random(4))
    assert not np.array_equal(draws[0][0], draws[0][1])
    rng.set_random_seed(12)
    assert not np.array_equal(rng.data_generator().random(4), draws[0][1])  # the seed matters
    with pytest.raises(ValueError, match="rank"):
        rng.set_random_seed(1, rank=-1)


def test_rng_state_covers_both_streams_and_reads_the_old_format():
    rng.set_random_seed(3, rank=2)
    rng.generator().random(5)
    rng.data_generator().random(7)
    state = json.loads(json.dumps(rng.get_state()))  # what a snapshot sidecar stores
    want = (rng.generator().random(3), rng.data_generator().random(3))
    rng.set_random_seed(99)
    rng.set_state(state)
    np.testing.assert_array_equal(rng.generator().random(3), want[0])
    np.testing.assert_array_equal(rng.data_generator().random(3), want[1])
    # the single-stream state of older snapshots restores the main stream only
    old = np.random.default_rng(8)
    old.random(2)
    rng.set_random_seed(4)
    data_before = rng.data_generator().bit_generator.state
    rng.set_state(json.loads(json.dumps(old.bit_generator.state)))
    np.testing.assert_array_equal(rng.generator().random(3), old.random(3))
    assert rng.data_generator().bit_generator.state == data_before
    with pytest.raises(ValueError, match="format"):
        rng.set_state({"format": "something else"})


def test_hdf5_shuffle_ignores_other_draws_between_batches(tmp_path):
    """A layer shuffles from its own generator: a rank whose other layers (or a root-only test
    net) draw from the data stream between batches still reads the same order."""
    src, _ = h5_source(tmp_path, [3, 4])
    orders = []
    for interfere in (False, True):
        engine.set_random_seed(2)
        layer, top = built(hdf5_text(src, 2, shuffle=True), 2)
        order = []
        for _ in range(10):
            order += read(layer, top, 1)
            if interfere:
                rng.data_generator().random(3)
                rng.generator().random(3)
        orders.append(order)
    assert orders[0] == orders[1]
    assert orders[0][:7] != sorted(orders[0][:7]) or orders[0][7:14] != sorted(orders[0][7:14])


# -- resume per rank ----------------------------------------------------------------------------
def make(kind, source, rank, world, seed=21):
    engine.set_random_seed(seed, rank=rank)
    if kind == "hdf5":
        layer, top = built(hdf5_text(source, 3, shuffle=True), 2)
    elif kind == "lmdb":
        layer, top = built(data_text(source, 3, "prefetch: 2 rand_skip: 5"), 2)
    else:
        layer, top = memory_layer(3, 9)
    layer.set_shard(rank, world)
    return layer, top


@pytest.mark.parametrize("kind", ["hdf5", "lmdb", "memory"])
def test_each_rank_resumes_exactly_and_refuses_another_world(kind, tmp_path, lmdb_db):
    world = 3
    source = h5_source(tmp_path, [5, 3, 4])[0] if kind == "hdf5" else lmdb_db
    for rank in range(world):
        layer, top = make(kind, source, rank, world)
        batches(layer, top, 4)
        state = layer.state_dict()
        assert (state["shard_rank"], state["shard_world"]) == (rank, world)
        want = batches(layer, top, 6)
        # another process: other seeds (another shuffle), and it has read a batch already
        fresh, top2 = make(kind, source, rank, world, seed=1000)
        batches(fresh, top2, 1)
        fresh.load_state_dict(state)
        got = batches(fresh, top2, 6)
        for w, g in zip(want, got):
            for a, b in zip(w, g):
                np.testing.assert_array_equal(a, b)
        other, _ = make(kind, source, 0, 2)
        with pytest.raises(ShardMismatchError,
                           match=r"layer '\w+' .*world of 3 ranks.*world of 2 \(rank 0\)"):
            other.load_state_dict(state)
        # the same position loads when the caller knowingly replaces the shard keys
        other.load_state_dict({**state, "shard_rank": 0, "shard_world": 2})
        for l in (layer, fresh, other):
            close(l)


def test_state_without_shard_keys_still_loads(tmp_path):
    layer, top = memory_layer(2, 6)
    layer.set_shard(1, 2)
    layer.load_state_dict({"pos": 4})  # a state saved before sharding existed
    layer.forward([], top)
    assert top[1].data.tolist() == [5, 1]  # stream rows 5, 7 -> array rows 5, 1
    layer.set_shard(0, 1)  # back to one rank, off a batch boundary: rows 8, 9 wrap to 2, 3
    layer.forward([], top)
    assert top[1].data.tolist() == [2, 3]
    layer.load_state_dict({"pos": 5})
    layer.forward([], top)
    assert top[1].data.tolist() == [5, 0]  # a batch across the wrap


# -- the API: set_shard, set_data_shard, data_shard ---------------------------------------------
@pytest.mark.parametrize("args", [(-1, 2), (2, 2), (0, 0), (3, -1), (0.5, 2), ("0", 1),
                                  (True, 2), (0, None)])
def test_bad_shard_arguments_are_layer_errors(args, tmp_path, lmdb_db):
    src, _ = h5_source(tmp_path, [4])
    layers = [built(hdf5_text(src, 2), 2)[0], built(data_text(lmdb_db, 2), 2)[0],
              memory_layer(2, 4)[0]]
    for layer in layers:
        with pytest.raises(LayerError, match=rf"layer '{layer.name}' \(type {layer.type}\)"):
            layer.set_shard(*args)
        assert layer.shard == (0, 1)  # nothing changed
        close(layer)


USER_MODULE = textwrap.dedent('''
    import engine

    class Stream(engine.Layer):
        """A user data layer with its own sharding."""
        def setup(self, bottom, top):
            self.calls = []
        def reshape(self, bottom, top):
            top[0].reshape((1,))
        def forward(self, bottom, top):
            top[0].data[...] = len(self.calls)
        def set_shard(self, rank, world):
            self.calls.append((rank, world))
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "crema_test_sharding_layers"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_set_data_shard_on_a_net(tmp_path, lmdb_db, user_module):
    src, _ = h5_source(tmp_path, [4, 5])
    text = (f'layer {{ {hdf5_text(src, 2, shuffle=True)} }} '
            f'layer {{ {data_text(lmdb_db, 2)} }} '
            f'layer {{ name: "py" type: "Python" top: "p" python_param {{ module: "{user_module}" '
            'layer: "Stream" } } '
            'layer { name: "sum" type: "Eltwise" bottom: "label" bottom: "id" top: "s" }')
    engine.set_random_seed(0)
    net = engine.Net(text, engine.TRAIN)
    assert set_data_shard(net, 1, 3) == ["h5", "d", "py"]
    assert net.layer_dict["py"].calls == [(1, 3)]
    assert data_shard(net) == {"h5": (1, 3), "d": (1, 3), "py": None}
    with pytest.raises(LayerError, match=r"layer 'h5' \(type HDF5Data\).*rank 3 is not in"):
        set_data_shard(net, 3, 3)
    assert data_shard(net)["d"] == (1, 3)  # a refused call changes no layer
    assert net.layer_dict["py"].calls == [(1, 3)]
    net.forward()
    assert net.blobs["label"].data.tolist() == [1, 4]  # records 1 and 4 of the stream
    no_data = engine.Net('layer { name: "in" type: "Input" top: "x" '
                         'input_param { shape { dim: 1 } } }', engine.TRAIN)
    assert set_data_shard(no_data, 0, 2) == []
    with pytest.raises(CremaError, match="world_size 0"):
        set_data_shard(no_data, 0, 0)


def test_set_data_shard_warns_when_the_data_stream_was_never_seeded(tmp_path, monkeypatch):
    src, _ = h5_source(tmp_path, [4])
    net = engine.Net(f'layer {{ {hdf5_text(src, 2, shuffle=True)} }}', engine.TRAIN)
    monkeypatch.setattr(rng, "_data_seeded", False)
    with pytest.warns(UserWarning, match="never seeded"):
        set_data_shard(net, 0, 2)
    monkeypatch.setattr(rng, "_data_seeded", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        set_data_shard(net, 0, 2)


def test_layers_without_a_shard_follow_pycaffes_solver_count_and_rank():
    import engine
    assert engine.solver_count() == 1 and engine.solver_rank() == 0 and not engine.has_nccl()
    from engine.layers.data import MemoryDataLayer
    from engine import crema_pb2
    lp = crema_pb2.LayerParameter(name="m", type="MemoryData")
    lp.memory_data_param.batch_size = 2
    m = MemoryDataLayer(lp, engine.TRAIN)
    assert m.shard == (0, 1)
    try:
        engine.set_solver_count(4)
        engine.set_solver_rank(3)
        assert m.shard == (3, 4)
        m.set_shard(1, 2)  # an explicit shard wins
        assert m.shard == (1, 2)
        with pytest.raises(ValueError):
            engine.set_solver_rank(4)
    finally:
        engine.set_solver_rank(0)
        engine.set_solver_count(1)


def test_pycaffe_timer_and_log(caplog):
    import logging
    import time
    import engine
    t = engine.Timer()
    t.start()
    time.sleep(0.01)
    t.stop()
    assert 5 < t.ms < 1000
    with caplog.at_level(logging.INFO, logger="crema"):
        engine.log("hello from a script")
    assert "hello from a script" in caplog.text
    with pytest.raises(ValueError):
        engine.init_log(7)
