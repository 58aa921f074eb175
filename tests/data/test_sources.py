"""Sources and the SourceData batching layer: reading, shuffling, sharding, prefetch, resume."""
import h5py
import numpy as np
import pytest

import engine
from engine.data.sources import ArraySource, BatchReader, HDF5Source, SourceError, open_source
from engine.errors import LayerError


def _h5_files(folder, sizes=(5, 7, 4)):
    rows = []
    names = []
    g = np.random.default_rng(0)
    for k, n in enumerate(sizes):
        x = g.standard_normal((n, 2, 3)).astype(np.float32)
        path = folder / f"part{k}.h5"
        with h5py.File(path, "w") as f:
            f["x"] = x
            f["y"] = np.arange(sum(sizes[:k]), sum(sizes[:k + 1]), dtype=np.float32)
        rows.append(x)
        names.append(path.name)
    (folder / "list.txt").write_text("\n".join(names) + "\n")
    return np.concatenate(rows)


def test_hdf5_source_reads_any_rows_across_files(tmp_path):
    x = _h5_files(tmp_path)
    src = open_source("hdf5:list.txt", base_dir=str(tmp_path))
    assert isinstance(src, HDF5Source) and len(src) == 16 and src.fields["x"] == (2, 3)
    idx = np.array([15, 0, 6, 6, 11, 4])
    got = src.read(idx)
    np.testing.assert_array_equal(got["x"], x[idx])
    np.testing.assert_array_equal(got["y"], idx)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_partition_each_pass_and_prefetch_changes_nothing(world, shuffle):
    n, batch = 12, 2
    src = ArraySource({"i": np.arange(n)})
    seen = []
    for rank in range(world):
        plain = BatchReader(src, batch, ["i"], shuffle=shuffle, seed=9, prefetch=0)
        ahead = BatchReader(src, batch, ["i"], shuffle=shuffle, seed=9, prefetch=3)
        for _ in range(n // (batch * world)):
            a, b = plain.next(rank, world)["i"], ahead.next(rank, world)["i"]
            np.testing.assert_array_equal(a, b)
            seen.extend(a.tolist())
    assert sorted(seen) == list(range(n))  # one pass: every record exactly once
    test_reader = BatchReader(src, batch, ["i"], train=False, prefetch=0)
    assert test_reader.next(1, world)["i"].tolist() == [0, 1]  # TEST reads everything


def test_shuffle_changes_order_between_passes():
    src = ArraySource({"i": np.arange(8)})
    r = BatchReader(src, 8, ["i"], shuffle=True, seed=4, prefetch=0)
    first, second = r.next()["i"], r.next()["i"]
    assert sorted(first) == sorted(second) == list(range(8))
    assert not np.array_equal(first, second)


NET = """name: "s"
layer {{ name: "d" type: "SourceData" top: "x" top: "label"
        source_data_param {{ source: "npz:{path}" batch_size: 3 shuffle: true
                            field: "x" field: "y" }} }}
"""


def test_source_data_layer_resumes_exactly(tmp_path):
    g = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=g.standard_normal((10, 4)).astype(np.float32),
             y=np.arange(10, dtype=np.float32))
    engine.rng.set_random_seed(3)
    net = engine.Net(NET.format(path=tmp_path / "d.npz"), engine.TRAIN)
    assert net.blobs["x"].shape == (3, 4) and net.blobs["label"].shape == (3,)
    net.forward()
    state = net.layers[0].state_dict()
    labels = [net.forward() and net.blobs["label"].data.copy() for _ in range(4)]
    engine.rng.set_random_seed(3)
    again = engine.Net(NET.format(path=tmp_path / "d.npz"), engine.TRAIN)
    again.layers[0].load_state_dict(state)
    for expected in labels:
        again.forward()
        np.testing.assert_array_equal(again.blobs["label"].data, expected)


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(SourceError, match="unknown source kind 'ftp'"):
        open_source("ftp:x")
    with pytest.raises(SourceError, match="kind:argument"):
        open_source("list.txt")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(4))
    bad = NET.format(path=tmp_path / "d.npz").replace('field: "y"', 'field: "z"')
    with pytest.raises(LayerError, match="no field 'z'"):
        engine.Net(bad, engine.TRAIN)
    with pytest.raises(LayerError, match="cannot open the HDF5 list"):
        engine.Net(NET.format(path="x").replace("npz:x", "hdf5:nowhere.txt"), engine.TRAIN)


def test_climate_generator_is_a_source():
    src = open_source("climate:n=5,seed=2,height=32,width=48,noise=0.5")
    assert len(src) == 5 and src.fields == {"images": (16, 32, 48), "boxes": (15, 5)}
    a, b = src.read(np.array([1, 3])), src.read(np.array([3]))
    np.testing.assert_array_equal(a["images"][1], b["images"][0])  # record 3 is record 3
    assert abs(float(a["images"].mean())) < 2.0  # standardised
    r = BatchReader(src, 2, ["images", "boxes"], prefetch=1)
    batch = r.next()
    assert batch["images"].shape == (2, 16, 32, 48) and batch["boxes"].shape == (2, 15, 5)
    with pytest.raises(SourceError, match="unknown setting 'colour=1'"):
        open_source("climate:colour=1")
