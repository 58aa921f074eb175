"""HDF5 layout and atomic writing of the HEP data set, split assignment, weights and the
generate() orchestration, with a synthetic block generator standing in for Pythia."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from engine.data.hep import pipeline, writer  # noqa: E402
from engine.errors import CremaError  # noqa: E402


def columns(n, seed=0):
    g = np.random.default_rng(seed)
    cols = {name: g.uniform(0, 10, n).astype(dtype) for name, dtype in writer.COLUMNS.items()}
    cols["label"] = np.arange(n) % 2
    return cols


def test_split_writer_layout_and_normalisation(tmp_path):
    path = tmp_path / "train.h5"
    n, size = 5, 8
    imgs = np.random.default_rng(0).uniform(0, 100, (n, 3, size, size)).astype(np.float32)
    w = writer.SplitWriter(path, n, size)
    for row in (3, 0, 4, 1, 2):  # rows arrive in any order
        w.put(row, imgs[row])
    np.testing.assert_allclose(w.max, imgs.reshape(n, 3, -1).max(axis=(0, 2)))
    cmax = np.array([200.0, 50.0, 0.0])  # a zero maximum leaves its channel unscaled
    w.finish(columns(n), cmax, True, {"split": "train", "config": "{}"}, np.ones((n, 8, 4)))
    assert sorted(os.listdir(tmp_path)) == ["train.h5"]  # no temporaries left
    with h5py.File(path, "r") as f:
        d = f["data"]
        assert d.shape == (n, 3, size, size) and d.dtype == np.float32
        assert d.chunks == (1, 3, size, size) and d.compression == "gzip"
        np.testing.assert_allclose(d[...], imgs / np.array([200.0, 50.0, 1.0])[None, :, None, None],
                                   rtol=1e-6)
        for name, dtype in writer.COLUMNS.items():
            assert f[name].shape == (n,) and f[name].dtype == dtype, name
        assert f["jets"].shape == (n, 8, 4)
        assert f.attrs["normalized"] == 1 and f.attrs["split"] == "train"
        np.testing.assert_array_equal(f.attrs["channel_max"], cmax)
        assert f.attrs["channels"] == "calo_energy,em_energy,track_count"
    np.testing.assert_allclose(writer.normalize_channels(imgs, cmax), writer.read(path)["data"],
                               rtol=1e-6)


def test_failed_finish_leaves_the_old_file_and_no_temporaries(tmp_path):
    path = tmp_path / "val.h5"
    path.write_bytes(b"previous content")
    w = writer.SplitWriter(path, 2, 4)
    w.put(0, np.ones((3, 4, 4), np.float32))
    with pytest.raises(CremaError, match="never written"):
        w.finish(columns(2), np.ones(3), True, {}, np.zeros((2, 8, 4)))
    w.put(1, np.ones((3, 4, 4), np.float32))
    bad = columns(2)
    del bad["psr"]
    with pytest.raises(KeyError):
        w.finish(bad, np.ones(3), True, {}, np.zeros((2, 8, 4)))
    w.abort()
    assert path.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["val.h5"]


def test_many_processes_read_a_file_at_once(tmp_path):
    path = tmp_path / "test.h5"
    w = writer.SplitWriter(path, 4, 4)
    for i in range(4):
        w.put(i, np.full((3, 4, 4), i, np.float32))
    w.finish(columns(4), np.ones(3), False, {}, np.zeros((4, 8, 4)))
    reader = ("import sys, time, h5py\n"
              "f = h5py.File(sys.argv[1], 'r')\n"
              "print('open', flush=True)\n"
              "time.sleep(0.5)\n"
              "print(float(f['data'][...].sum()))\n")
    procs = [subprocess.Popen([sys.executable, "-c", reader, str(path)], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    for p in procs:  # wait until all three hold the file open, then read here too
        assert p.stdout.readline().strip() == "open"
    with h5py.File(path, "r") as f:
        total = float(f["data"][...].sum())
    outs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert total == 3 * 16 * (0 + 1 + 2 + 3) and outs == [str(total)] * 3


def test_split_counts_and_assignment():
    assert list(pipeline.split_counts(10, [0.7, 0.1, 0.2])) == [7, 1, 2]
    assert list(pipeline.split_counts(6, [0.7, 0.1, 0.2])) == [4, 1, 1]
    assert pipeline.split_counts(7, [0.5, 0.5]).sum() == 7
    labels = np.array([1] * 30 + [0] * 50)
    split, row = pipeline.assign_splits(labels, [0.7, 0.1, 0.2], seed=3)
    for s, (n_sig, n_bkg) in enumerate(((21, 35), (3, 5), (6, 10))):  # stratified, exact
        assert (labels[split == s] == 1).sum() == n_sig and (labels[split == s] == 0).sum() == n_bkg
        assert sorted(row[split == s]) == list(range(n_sig + n_bkg))
    again = pipeline.assign_splits(labels, [0.7, 0.1, 0.2], seed=3)
    np.testing.assert_array_equal(again[0], split)
    np.testing.assert_array_equal(again[1], row)
    assert not np.array_equal(pipeline.assign_splits(labels, [0.7, 0.1, 0.2], seed=4)[1], row)


def test_parse_split():
    assert pipeline.parse_split("train=0.7,val=0.1,test=0.2") == {"train": 0.7, "val": 0.1,
                                                                 "test": 0.2}
    for bad in ("train=0.7,val=0.1", "train:1", "train=x", "a/b=1", "train=1.5,val=-0.5"):
        with pytest.raises(CremaError):
            pipeline.parse_split(bad)


def fake_block(task, cfg):
    """Stands in for Pythia: deterministic per (seed, process, block), like run_block."""
    seed_main, _, rng = pipeline.block_seeds(cfg.seed, task.process.code, task.block)
    n = task.n_events
    cols = {name: np.zeros(n, arr.dtype) for name, arr in pipeline._feature_columns().items()}
    cols["njet"][:] = rng.integers(3, 7, n) + (task.process.label == 1)
    cols["lead_pt"][:] = rng.uniform(400, 1500, n)
    cols["deta12"][:] = rng.uniform(0, 2.5, n)
    cols["msum"][:] = rng.uniform(100, 1500, n)
    flags = pipeline.cuts.rpv_cuts(cols["njet"], cols["lead_pt"], cols["deta12"], cols["msum"])
    for k, v in flags.items():
        cols[k][:] = v
    cols["process"][:] = task.process.code
    return {"code": task.process.code, "block": task.block, "offset": task.offset, "n": n,
            "images": {s: rng.uniform(0, 10, (n, 3, s, s)).astype(np.float32) for s in cfg.sizes},
            "columns": cols, "jets": np.zeros((n, 8, 4), np.float32),
            "n_generated": 3 * n + task.process.code, "sigma_pb": 10.0 ** (3 - task.process.code),
            "sigma_err_pb": 1.0, "pileup_events": 0, "seconds": 0.5, "cpu_seconds": 0.4,
            "pid": os.getpid()}


def test_generate_orchestration(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "run_block", fake_block)
    kw = dict(n_signal=13, n_background=21, sizes=(8, 16), seed=5, block_size=4,
              preselection="none", pthat_edges=(400, 700, 1000), progress=False, mpi="off")
    paths = pipeline.generate(tmp_path / "a", **kw)
    assert set(paths["files"]) == {8, 16}
    meta = json.loads(open(paths["meta"]).read())
    assert meta["rows"] == {"train": 24, "val": 3, "test": 7}
    procs = {p["code"]: p for p in meta["processes"].values()}
    assert {c: p["n_accepted"] for c, p in procs.items()} == {0: 13, 1: 7, 2: 7, 3: 7}
    for s in (8, 16):
        for split, n in meta["rows"].items():
            d = writer.read(paths["files"][s][split])
            assert d["data"].shape == (n, 3, s, s)
            with open(paths["lists"][s][split]) as fh:
                assert fh.read().strip() == paths["files"][s][split]
            # weight = sigma / generated events of the event's process
            for code, p in procs.items():
                sel = d["process"] == code
                np.testing.assert_allclose(d["weight"][sel], p["sigma_pb"] / p["n_generated"],
                                           rtol=1e-6)
                assert (d["label"][sel] == (code == 0)).all()
            # normweight: each class sums to n/2 inside the file
            for cls in (0, 1):
                assert d["normweight"][d["label"] == cls].sum() == pytest.approx(n / 2, rel=1e-5)
            np.testing.assert_array_equal(
                d["psr"], pipeline.cuts.rpv_cuts(d["njet"], d["lead_pt"], d["deta12"],
                                                 d["msum"])["psr"])
            assert d["data"].max() <= 1.0 or split != "train"
        train = writer.read(paths["files"][s]["train"])
        # every channel of the training split reaches exactly 1 after division by its maximum
        np.testing.assert_allclose(train["data"].reshape(24, 3, -1).max(axis=(0, 2)), 1.0)
        assert train["attrs"]["config"]["seed"] == 5
    # Same seed again: identical files (worker-count independence with real Pythia blocks is
    # checked in test_hep_generate; the fake blocks can only run in this process).
    again = pipeline.generate(tmp_path / "b", workers=1, **kw)
    for s in (8, 16):
        for split in meta["rows"]:
            a, b = writer.read(paths["files"][s][split]), writer.read(again["files"][s][split])
            for k in a:
                if k != "attrs":
                    np.testing.assert_array_equal(a[k], b[k])


def test_generate_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def failing(task, cfg):
        calls.append(task)
        if len(calls) == 3:
            raise RuntimeError("generator died")
        return fake_block(task, cfg)

    monkeypatch.setattr(pipeline, "run_block", failing)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="generator died"):
        pipeline.generate(out, 8, 8, sizes=(8,), block_size=2, preselection="none",
                          pthat_edges=(400,), progress=False, mpi="off")
    leftovers = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
    assert leftovers == []


def test_generate_rejects_bad_arguments(tmp_path):
    bad = [dict(n_signal=0, n_background=0), dict(sizes=(0,)), dict(seed=-1),
           dict(block_size=0), dict(preselection="loose"), dict(split={"train": 0.5}),
           dict(pthat_edges=(400, 300)), dict(slice_fractions=[1.0, 2.0])]
    for kw in bad:
        args = dict(n_signal=2, n_background=2, pthat_edges=(400,), progress=False, mpi="off")
        args.update(kw)
        with pytest.raises(CremaError):
            pipeline.generate(tmp_path, **args)
    assert os.listdir(tmp_path) == []
