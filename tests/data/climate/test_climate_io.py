"""The ExtremeWeather-layout loader and writer, the split pipeline, the CLI and the semi-supervised
data layer, on small files."""
import json
import os

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from engine import rng  # noqa: E402
from engine.blob import Blob  # noqa: E402
from engine.data.climate import (VARIABLES, ExtremeWeatherFile, generate, labeled_mask,  # noqa: E402
                                 load_extremeweather, normalize, write_extremeweather)
from engine.data.climate.cli import main as cli_main  # noqa: E402
from engine.errors import CremaError  # noqa: E402


def real_layout_file(path, n=5, h=16, w=24, seed=0):
    """A file as the ExtremeWeather site describes climo_YYYY.h5: `images` (N,16,H,W) float32 and
    integer `boxes` (N,15,5) padded with -1, nothing else (no labeled mask, no attributes)."""
    g = np.random.default_rng(seed)
    scale = np.arange(1, 17, dtype=np.float32)[None, :, None, None]
    images = (g.normal(size=(n, 16, h, w)) * scale).astype(np.float32)
    boxes = -np.ones((n, 15, 5), np.int64)
    boxes[0, 0] = [2, 4, 10, 12, 1]
    boxes[0, 1] = [0, 0, 4, 6, 3]
    boxes[3, 0] = [6, 8, 14, 20, 2]
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["boxes"] = boxes
    return images, boxes


def test_loader_reads_a_real_layout_file(tmp_path):
    path = tmp_path / "climo_1979.h5"
    images, boxes = real_layout_file(path)
    d = load_extremeweather(path)
    np.testing.assert_array_equal(d["images"], images)
    assert d["boxes"].dtype == np.float32
    np.testing.assert_array_equal(d["boxes"], boxes.astype(np.float32))
    assert d["labeled"].dtype == bool and d["labeled"].all()  # real data: all labeled
    flat = images.transpose(1, 0, 2, 3).reshape(16, -1).astype(np.float64)
    np.testing.assert_allclose(d["stats"]["mean"], flat.mean(axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d["stats"]["std"], flat.std(axis=1), rtol=1e-6)
    np.testing.assert_allclose(d["stats"]["min"], flat.min(axis=1))
    with ExtremeWeatherFile(path) as f:
        # chunked statistics equal the in-memory ones, whatever the chunk
        s = f.channel_stats(chunk=2)
        np.testing.assert_allclose(s["std"], flat.std(axis=1), rtol=1e-6)
        # rows in any order, repeated
        sub, b = f.read([3, 0, 3])
        np.testing.assert_array_equal(sub, images[[3, 0, 3]])
        np.testing.assert_array_equal(b[0, 0], [6, 8, 14, 20, 2])


def test_loader_downsamples_and_swaps_box_order(tmp_path):
    path = tmp_path / "climo.h5"
    images, boxes = real_layout_file(path)
    with ExtremeWeatherFile(path, downsample=2) as f:
        assert f.shape == (16, 8, 12)
        img, b = f.read([0])
    np.testing.assert_allclose(img[0, :, 1, 2], images[0, :, 2:4, 4:6].mean(axis=(1, 2)),
                               rtol=1e-5)
    np.testing.assert_array_equal(b[0, 0], [1, 2, 5, 6, 1])
    assert np.all(b[0, 2:] == -1)  # padding stays padding
    with ExtremeWeatherFile(path, box_order="xyxy") as f:
        _, b = f.read([0])
    np.testing.assert_array_equal(b[0, 0], [4, 2, 12, 10, 1])


def test_loader_refuses_other_layouts(tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["data"] = np.zeros((2, 16, 4, 4), np.float32)
    with pytest.raises(CremaError, match="'images' and 'boxes'"):
        ExtremeWeatherFile(bad)
    with h5py.File(bad, "w") as f:
        f["images"] = np.zeros((2, 3, 4, 4), np.float32)
        f["boxes"] = -np.ones((2, 15, 5))
    with pytest.raises(CremaError, match=r"expected \(N, 16, H, W\)"):
        ExtremeWeatherFile(bad)
    real_layout_file(bad)
    with pytest.raises(CremaError, match="blocks"):
        ExtremeWeatherFile(bad, downsample=5)


def test_normalize_modes():
    x = np.random.default_rng(1).normal(3.0, 2.0, (4, 16, 5, 5)).astype(np.float32)
    x[:, 5] = 7.0  # a constant channel
    flat = x.transpose(1, 0, 2, 3).reshape(16, -1)
    stats = {"mean": flat.mean(1), "std": flat.std(1), "min": flat.min(1), "max": flat.max(1)}
    z = normalize(x, stats)
    np.testing.assert_allclose(z.transpose(1, 0, 2, 3).reshape(16, -1).std(1)[:5], 1, rtol=1e-4)
    assert np.all(z[:, 5] == 0)
    m = normalize(x, stats, "minmax")
    assert m.min() == pytest.approx(-1) and m.max() == pytest.approx(1)


def test_writer_round_trip_is_atomic(tmp_path):
    path = tmp_path / "set.h5"
    images = np.random.default_rng(0).normal(size=(3, 16, 8, 8)).astype(np.float32)
    boxes = -np.ones((3, 15, 5), np.float32)
    boxes[1, 0] = [1, 1, 3, 4, 2]
    write_extremeweather(path, images, boxes, labeled=[1, 0, 1], events=[[], [{"cls": 2}], []])
    assert sorted(os.listdir(tmp_path)) == ["set.h5"]  # no temporary left behind
    with ExtremeWeatherFile(path) as f:
        img, b = f.read()
        np.testing.assert_array_equal(img, images)
        np.testing.assert_array_equal(b, boxes)
        np.testing.assert_array_equal(f.labeled, [True, False, True])
        assert f.events(1) == [{"cls": 2}]
    with h5py.File(path, "r") as f:
        assert [v.decode() for v in f.attrs["variables"]] == list(VARIABLES)
        assert "generated by crema" in f.attrs["note"]


def test_labeled_mask_is_exact_and_seeded():
    m = labeled_mask(50, 0.1, seed=3, split_id=0)
    assert m.sum() == 5
    np.testing.assert_array_equal(m, labeled_mask(50, 0.1, seed=3, split_id=0))
    assert not np.array_equal(m, labeled_mask(50, 0.1, seed=4, split_id=0))
    with pytest.raises(CremaError):
        labeled_mask(5, 1.5, 0, 0)


def test_generate_is_deterministic_across_workers_and_cli_writes_the_layout(tmp_path, capsys):
    a = generate(tmp_path / "a", train=5, test=2, labeled_fraction=0.4, seed=9, workers=1)
    b = generate(tmp_path / "b", train=5, test=2, labeled_fraction=0.4, seed=9, workers=2)
    for split in ("train", "test"):
        with h5py.File(a[split], "r") as fa, h5py.File(b[split], "r") as fb:
            np.testing.assert_array_equal(fa["images"][...], fb["images"][...])
            np.testing.assert_array_equal(fa["boxes"][...], fb["boxes"][...])
            np.testing.assert_array_equal(fa["labeled"][...], fb["labeled"][...])
    with h5py.File(a["train"], "r") as f:
        assert f["images"].shape == (5, 16, 96, 144) and f["images"].dtype == np.float32
        assert f["boxes"].shape == (5, 15, 5)
        assert f["labeled"][...].sum() == 2
        assert json.loads(f.attrs["generator_config"])["height"] == 96
    with h5py.File(a["test"], "r") as f:
        assert f["labeled"][...].all()
    rc = cli_main(["--out", str(tmp_path / "cli"), "--train", "3", "--test", "1", "--labeled",
                   "0.34", "--seed", "9", "--height", "48", "--width", "72", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "train:" in out and "test:" in out
    with h5py.File(tmp_path / "cli" / "train.h5", "r") as f:
        assert f["images"].shape == (3, 16, 48, 72) and f["labeled"][...].sum() == 1


def test_semi_supervised_data_layer_mixes_batches_and_hides_unlabeled_boxes(tmp_path):
    from engine.data.climate.layer import SemiSupervisedData
    from engine import crema_pb2
    path = tmp_path / "train.h5"
    n = 12
    images = np.random.default_rng(2).normal(5.0, 3.0, (n, 16, 8, 8)).astype(np.float32)
    boxes = -np.ones((n, 15, 5), np.float32)
    boxes[:, 0] = [1, 1, 4, 4, 0]  # every image has a box
    labeled = np.zeros(n, np.uint8)
    labeled[[2, 7, 9]] = 1
    write_extremeweather(path, images, boxes, labeled=labeled)
    stats = {"mean": [5.0] * 16, "std": [3.0] * 16}
    (tmp_path / "stats.json").write_text(json.dumps(stats))

    def make():
        param = crema_pb2.LayerParameter(name="data", type="Python")
        layer = SemiSupervisedData(param)
        layer.param_str = repr({"source": str(path), "stats": str(tmp_path / "stats.json"),
                                "labeled_per_batch": 2, "unlabeled_per_batch": 3})
        layer.phase = 0
        tops = [Blob((1,)) for _ in range(3)]
        rng.set_random_seed(5)
        layer.setup([], tops)
        layer.reshape([], tops)
        return layer, tops

    layer, tops = make()
    seen = []
    for _ in range(4):
        layer.forward([], tops)
        idx = layer.last_indices
        assert set(idx[:2]) <= {2, 7, 9} and not set(idx[2:]) & {2, 7, 9}
        np.testing.assert_array_equal(tops[2].data, [1, 1, 0, 0, 0])
        assert np.all(tops[1].data[:2, 0] == [1, 1, 4, 4, 0])
        assert np.all(tops[1].data[2:] == -1)  # the truth of unlabeled images never leaves
        np.testing.assert_allclose(tops[0].data, (images[idx] - 5.0) / 3.0, rtol=1e-5,
                                   atol=1e-6)
        seen.append(idx.copy())
    # every labeled image comes round within two batches' worth of draws (epochs of the pool)
    assert set(np.concatenate([s[:2] for s in seen])) == {2, 7, 9}
    again, tops2 = make()  # the same seed repeats the batches
    for s in seen:
        again.forward([], tops2)
        np.testing.assert_array_equal(again.last_indices, s)


def test_zonal_statistics_give_standardised_anomalies(tmp_path):
    path = tmp_path / "z.h5"
    g = np.random.default_rng(4)
    n, h, w = 6, 8, 10
    # a climatology varying with the row, plus noise whose size also varies with the row
    rows = np.arange(h)[None, None, :, None]
    images = (100.0 * rows + (1.0 + rows) * g.normal(size=(n, 16, h, w))).astype(np.float32)
    write_extremeweather(path, images, -np.ones((n, 15, 5)))
    with ExtremeWeatherFile(path) as f:
        z = f.channel_stats(zonal=True, chunk=4)
        flat = f.channel_stats()
    assert z["mean"].shape == (16, h) and flat["mean"].shape == (16,)
    np.testing.assert_allclose(z["mean"], images.mean(axis=(0, 3)), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(z["std"], images.std(axis=(0, 3)), rtol=1e-5)
    a = normalize(images, z)
    np.testing.assert_allclose(a.mean(axis=(0, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(a.std(axis=(0, 3)), 1, rtol=1e-4)
