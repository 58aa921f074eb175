"""Caffe LMDB databases (engine.data.lmdb_io) and the Data layer (engine.layers.db_data)."""
import time

import numpy as np
import pytest
from google.protobuf import text_format

import engine
from engine import crema_pb2
from engine.blob import Blob
from engine.data import lmdb_io
from engine.errors import CremaError, LayerError
from engine.io import array_to_blobproto
from engine.layers.db_data import DataLayer


# -- helpers --------------------------------------------------------------------------------------
def make_images(n, c=1, h=4, w=5, seed=0):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, c, h, w), dtype=np.uint8), np.arange(n) % 10


@pytest.fixture
def db(tmp_path):
    """10 records of 1x4x5 uint8; record i has label i and images[i]."""
    images, _ = make_images(10)
    labels = np.arange(10)
    path = tmp_path / "db"
    lmdb_io.write_arrays(path, images, labels)
    return path, images.astype(np.float32), labels


def data_layer(source, batch_size=4, phase=engine.TRAIN, tops=2, extra=""):
    lp = crema_pb2.LayerParameter()
    text_format.Merge(f'name: "d" type: "Data" data_param {{ source: "{source}" '
                      f'batch_size: {batch_size} backend: LMDB }}', lp)
    text_format.Merge(extra, lp)  # merges into data_param / transform_param
    for i in range(tops):
        lp.top.append(["data", "label"][i])
    layer = DataLayer(lp, phase)
    top = [Blob(()) for _ in range(tops)]
    layer.setup([], top)
    layer.reshape([], top)
    return layer, top


def forward(layer, top):
    layer.forward([], top)
    return [t.data.copy() for t in top]


# -- lmdb_io --------------------------------------------------------------------------------------
def test_lmdb_round_trip_uint8_and_float(tmp_path):
    images, labels = make_images(7, c=3)
    assert lmdb_io.write_arrays(tmp_path / "u8", images, labels) == 7
    records = lmdb_io.read_datums(tmp_path / "u8")
    assert [k for k, _ in records] == [b"%08d" % i for i in range(7)]
    for i, (_, d) in enumerate(records):
        assert len(d.data) == 60 and not len(d.float_data) and d.label == labels[i]
        np.testing.assert_array_equal(lmdb_io.datum_to_array(d), images[i])
    floats = np.linspace(-1, 1, 2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    datums = [lmdb_io.array_to_datum(a, label=5 + i) for i, a in enumerate(floats)]
    assert lmdb_io.write_datums(tmp_path / "f", datums) == 2
    back = lmdb_io.read_datums(tmp_path / "f")
    assert [d.label for _, d in back] == [5, 6]
    np.testing.assert_array_equal(np.stack([lmdb_io.datum_to_array(d) for _, d in back]), floats)


def test_lmdb_map_grows(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (300, 1, 64, 64), dtype=np.uint8)
    path = tmp_path / "grow"
    with lmdb_io.LMDBWriter(path, map_size=1 << 16, commit_every=50) as w:
        for i, im in enumerate(images):
            w.put("%08d" % i, lmdb_io.array_to_datum(im, i).SerializeToString())
    got = lmdb_io.read_datums(path)
    assert len(got) == 300
    np.testing.assert_array_equal(lmdb_io.datum_to_array(got[299][1]), images[299])


def test_lmdb_writes_atomically(tmp_path):
    path = tmp_path / "db"
    images, labels = make_images(3)
    lmdb_io.write_arrays(path, images, labels)
    with pytest.raises(CremaError, match="already exists"):
        lmdb_io.write_arrays(path, images, labels)
    with pytest.raises(RuntimeError):
        with lmdb_io.LMDBWriter(path, overwrite=True) as w:
            w.put(b"00000000", b"x")
            raise RuntimeError("interrupted")
    assert len(lmdb_io.read_datums(path)) == 3  # the old database is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # no temporary left behind
    lmdb_io.write_arrays(path, images[:2], labels[:2], overwrite=True)
    assert len(lmdb_io.read_datums(path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_lmdb_reader_wraps_and_seeks(db):
    path, _, _ = db
    with lmdb_io.LMDBReader(path) as r:
        assert len(r) == 10
        keys = []
        wrapped = []
        for _ in range(12):
            keys.append(r.key())
            wrapped.append(r.next())
        assert keys == [b"%08d" % (i % 10) for i in range(12)]
        assert wrapped == [False] * 9 + [True, False, False]
        r.seek(13)
        assert r.position == 3 and r.key() == b"00000003"
    with pytest.raises(CremaError, match="does not exist"):
        lmdb_io.LMDBReader(path.parent / "nope")


# -- Data layer -----------------------------------------------------------------------------------
def test_batches_in_order_with_wrap_around(db):
    path, images, labels = db
    layer, top = data_layer(path)
    assert top[0].shape == (4, 1, 4, 5) and top[1].shape == (4,)
    seen = [forward(layer, top) for _ in range(3)]
    order = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    for (x, y), idx in zip(seen, order):
        np.testing.assert_array_equal(x, images[idx])
        np.testing.assert_array_equal(y, labels[idx])
        assert x.dtype == np.float32
    one, top1 = data_layer(path, tops=1, batch_size=3)
    np.testing.assert_array_equal(forward(one, top1)[0], images[:3])


def test_scale_and_mean_value(db):
    path, images, _ = db
    layer, top = data_layer(path, extra="transform_param { scale: 0.00390625 }")
    np.testing.assert_array_equal(forward(layer, top)[0], images[:4] * np.float32(0.00390625))
    layer, top = data_layer(path, extra="transform_param { scale: 0.5 mean_value: 100 }")
    expect = (images[:4] - np.float32(100)) * np.float32(0.5)
    np.testing.assert_array_equal(forward(layer, top)[0], expect)
    with pytest.warns(UserWarning, match=r"data_param.scale is a legacy field and is ignored"):
        layer, top = data_layer(path, extra="data_param { scale: 0.5 }")
    np.testing.assert_array_equal(forward(layer, top)[0], images[:4])


def test_float_datums(tmp_path):
    x = np.random.default_rng(2).normal(size=(5, 2, 3, 3)).astype(np.float32)
    lmdb_io.write_arrays(tmp_path / "f", x, np.arange(5))
    assert len(lmdb_io.read_datums(tmp_path / "f")[0][1].float_data) == 18
    layer, top = data_layer(tmp_path / "f", batch_size=5,
                            extra="transform_param { scale: 3 mean_value: 0.5 }")
    np.testing.assert_array_equal(forward(layer, top)[0], (x - np.float32(0.5)) * np.float32(3))


def test_mean_value_per_channel_and_mean_file(tmp_path):
    images, labels = make_images(4, c=3)
    lmdb_io.write_arrays(tmp_path / "rgb", images, labels)
    x = images.astype(np.float32)
    layer, top = data_layer(tmp_path / "rgb",
                            extra="transform_param { mean_value: 1 mean_value: 2 mean_value: 3 }")
    np.testing.assert_array_equal(forward(layer, top)[0],
                                  x - np.float32([1, 2, 3])[:, None, None])
    mean = np.random.default_rng(3).uniform(0, 255, (1, 3, 4, 5)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(array_to_blobproto(mean).SerializeToString())
    layer, top = data_layer(tmp_path / "rgb", extra=f'transform_param {{ mean_file: '
                            f'"{tmp_path / "mean.binaryproto"}" scale: 2 }}')
    np.testing.assert_array_equal(forward(layer, top)[0], (x - mean) * np.float32(2))
    with pytest.raises(LayerError, match=r"give 1 or one per channel \(3\)"):
        data_layer(tmp_path / "rgb", extra="transform_param { mean_value: 1 mean_value: 2 }")
    with pytest.raises(LayerError, match="both mean_file and mean_value"):
        data_layer(tmp_path / "rgb", extra='transform_param { mean_value: 1 mean_file: "m" }')
    with pytest.raises(LayerError, match="cannot read transform_param mean_file 'nope'"):
        data_layer(tmp_path / "rgb", extra='transform_param { mean_file: "nope" }')


def test_crop_center_in_test_and_random_in_train(tmp_path):
    images, labels = make_images(6, c=2, h=7, w=8)
    lmdb_io.write_arrays(tmp_path / "db", images, labels)
    x = images.astype(np.float32)
    layer, top = data_layer(tmp_path / "db", batch_size=6, phase=engine.TEST,
                            extra="transform_param { crop_size: 4 }")
    assert top[0].shape == (6, 2, 4, 4)
    np.testing.assert_array_equal(forward(layer, top)[0], x[:, :, 1:5, 2:6])
    engine.set_random_seed(5)
    layer, top = data_layer(tmp_path / "db", batch_size=6, extra="transform_param { crop_size: 4 }")
    out = forward(layer, top)[0]
    offsets = set()
    for i in range(6):
        hits = [(h, w) for h in range(4) for w in range(5)
                if np.array_equal(out[i], x[i, :, h:h + 4, w:w + 4])]
        assert hits, f"image {i} is not a 4x4 window of its datum"
        offsets.add(hits[0])
    assert len(offsets) > 1
    engine.set_random_seed(5)
    again, top2 = data_layer(tmp_path / "db", batch_size=6,
                             extra="transform_param { crop_size: 4 }")
    np.testing.assert_array_equal(forward(again, top2)[0], out)
    with pytest.raises(LayerError, match=r"crop_size 9 is larger than the datum \(7x8\)"):
        data_layer(tmp_path / "db", extra="transform_param { crop_size: 9 }")


def test_mirror_train_seeded(tmp_path):
    images, labels = make_images(16, h=3, w=4, seed=7)
    lmdb_io.write_arrays(tmp_path / "db", images, labels)
    x = images.astype(np.float32)
    engine.set_random_seed(11)
    layer, top = data_layer(tmp_path / "db", batch_size=16, extra="transform_param { mirror: true }")
    out = forward(layer, top)[0]
    flipped = [np.array_equal(out[i], x[i, :, :, ::-1]) for i in range(16)]
    kept = [np.array_equal(out[i], x[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 16
    engine.set_random_seed(11)
    again, top2 = data_layer(tmp_path / "db", batch_size=16,
                             extra="transform_param { mirror: true }")
    np.testing.assert_array_equal(forward(again, top2)[0], out)
    # crop + mirror: the window is flipped
    engine.set_random_seed(2)
    both, top3 = data_layer(tmp_path / "db", batch_size=16, phase=engine.TEST,
                            extra="transform_param { mirror: true crop_size: 2 }")
    out = forward(both, top3)[0]
    win = x[:, :, 0:2, 1:3]
    assert all(np.array_equal(out[i], win[i]) or np.array_equal(out[i], win[i, :, :, ::-1])
               for i in range(16))


def test_state_dict_resume_gives_same_next_batch(db):
    path, images, _ = db
    engine.set_random_seed(1)
    a, ta = data_layer(path, batch_size=3, extra="transform_param { mirror: true }")
    for _ in range(4):
        forward(a, ta)
    state = a.state_dict()
    assert state == {"offset": 12, "num_records": 10, "shard_rank": 0, "shard_world": 1}
    from engine import rng
    saved_rng = rng.generator().bit_generator.state
    want = forward(a, ta)
    b, tb = data_layer(path, batch_size=3, extra="transform_param { mirror: true }")
    b.load_state_dict(state)
    rng.generator().bit_generator.state = saved_rng
    got = forward(b, tb)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[1], [2, 3, 4])
    with pytest.raises(LayerError, match="saved with 11 records"):
        b.load_state_dict({"offset": 3, "num_records": 11})


def test_rank_striding(db):
    path, images, labels = db
    got = {}
    for rank in range(3):
        layer, top = data_layer(path, batch_size=4)
        layer.rank, layer.world_size = rank, 3
        got[rank] = [forward(layer, top)[1] for _ in range(2)]
    # the stream 0..9,0..9,... split by offset % 3
    stream = np.arange(30) % 10
    for rank in range(3):
        np.testing.assert_array_equal(np.concatenate(got[rank]), stream[rank::3][:8])
    # rank r reads offsets r, r+3, ...: the first pass (offsets 0..9) is split without overlap
    first_pass = sorted(int(label) for r in range(3)
                        for off, label in zip(range(r, 30, 3), np.concatenate(got[r])) if off < 10)
    assert first_pass == list(range(10))
    layer, top = data_layer(path, batch_size=4, phase=engine.TEST)
    layer.rank, layer.world_size = 2, 3
    np.testing.assert_array_equal(forward(layer, top)[1], [0, 1, 2, 3])  # TEST reads everything
    layer.rank = 3
    with pytest.raises(LayerError, match=r"rank 3 is not in \[0, world_size 3\)"):
        forward(layer, top)


def test_rand_skip(db):
    path, _, labels = db
    engine.set_random_seed(4)
    skip = int(engine.rng.data_generator().integers(7))  # rand_skip draws from the data stream
    engine.set_random_seed(4)
    layer, top = data_layer(path, batch_size=2, extra="data_param { rand_skip: 7 }")
    np.testing.assert_array_equal(forward(layer, top)[1], labels[[skip, skip + 1]])
    assert layer.state_dict()["offset"] == skip + 2


def test_errors_name_layer_and_path(tmp_path, db):
    missing = tmp_path / "no_such_lmdb"
    with pytest.raises(LayerError, match=rf"layer 'd' \(type Data\).*'{missing}' does not exist"):
        data_layer(missing)
    with pytest.raises(LayerError, match=r"'.*no_such_lmdb' does not exist"):
        data_layer(missing, extra="data_param { backend: LEVELDB }")
    lp = crema_pb2.LayerParameter()
    text_format.Parse(f'name: "d" type: "Data" top: "data" data_param {{ source: "{db[0]}" '
                      'batch_size: 2 backend: LEVELDB }', lp)
    with pytest.raises(LayerError, match=r"layer 'd'.*LevelDB databases are not supported"):
        DataLayer(lp, engine.TRAIN).setup([], [Blob(())])
    lp.data_param.ClearField("backend")  # Caffe's default LEVELDB on an LMDB directory: read it
    layer = DataLayer(lp, engine.TRAIN)
    layer.setup([], [Blob(())])
    lp.data_param.source = str(tmp_path)
    with pytest.raises(LayerError, match="LevelDB databases are not supported"):
        DataLayer(lp, engine.TRAIN).setup([], [Blob(())])
    datum = lmdb_io.array_to_datum(np.zeros((1, 2, 2), np.uint8), 0)
    datum.encoded = True
    lmdb_io.write_datums(tmp_path / "enc", [datum])
    with pytest.raises(LayerError, match="record 0 .* encoded"):
        data_layer(tmp_path / "enc")
    with pytest.raises(LayerError, match="batch_size must be given"):
        data_layer(db[0], batch_size=0)


def test_lenet_builds_and_runs_on_a_tiny_lmdb(tmp_path, nets_dir):
    images = np.random.default_rng(0).integers(0, 256, (12, 1, 28, 28), dtype=np.uint8)
    lmdb_io.write_arrays(tmp_path / "train", images, np.arange(12) % 10)
    lmdb_io.write_arrays(tmp_path / "test", images[:5], np.arange(5))
    param = crema_pb2.NetParameter()
    text_format.Parse((nets_dir / "lenet" / "lenet_train_test.prototxt").read_text(), param)
    data_layers = [lp for lp in param.layer if lp.type == "Data"]
    assert len(data_layers) == 2
    for lp in data_layers:
        train = lp.include[0].phase == crema_pb2.TRAIN
        lp.data_param.source = str(tmp_path / ("train" if train else "test"))
        lp.data_param.batch_size = 8 if train else 5
    engine.set_random_seed(0)
    net = engine.Net(param, engine.TRAIN)
    assert net.blobs["data"].shape == (8, 1, 28, 28)
    loss = net.forward()["loss"]
    assert np.isfinite(loss) and loss > 0
    np.testing.assert_array_equal(net.blobs["label"].data, np.arange(8) % 10)
    np.testing.assert_allclose(net.blobs["data"].data, images[:8] * np.float32(0.00390625))
    net.forward()  # wraps: records 8..11, 0..3
    np.testing.assert_array_equal(net.blobs["label"].data, [8, 9, 0, 1, 0, 1, 2, 3])
    test_net = engine.Net(param, engine.TEST)
    out = test_net.forward()
    assert set(out) == {"accuracy", "loss"} and 0 <= out["accuracy"] <= 1


# -- encoded datums -------------------------------------------------------------------------------
def encoded_datum(img_hwc_rgb, label, fmt="PNG"):
    import io as _io

    from PIL import Image
    buf = _io.BytesIO()
    Image.fromarray(img_hwc_rgb).save(buf, format=fmt)
    d = crema_pb2.Datum()
    d.data, d.encoded, d.label = buf.getvalue(), True, label
    return d


def test_encoded_png_datums_decode_like_raw_bgr(tmp_path):
    g = np.random.default_rng(5)
    rgb = g.integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)
    lmdb_io.write_datums(tmp_path / "enc", [encoded_datum(rgb[i], i) for i in range(6)])
    bgr_chw = rgb[..., ::-1].transpose(0, 3, 1, 2)
    layer, top = data_layer(tmp_path / "enc", batch_size=3, extra="data_param { prefetch: 0 }")
    data, label = forward(layer, top)
    assert data.shape == (3, 3, 4, 5)
    np.testing.assert_array_equal(data, bgr_chw[:3])
    np.testing.assert_array_equal(label, [0, 1, 2])
    gray, top = data_layer(tmp_path / "enc", batch_size=2,
                           extra="transform_param { force_gray: true }")
    from PIL import Image
    want = np.asarray(Image.fromarray(rgb[0]).convert("L"))
    np.testing.assert_array_equal(forward(gray, top)[0][0, 0], want)
    # a grayscale PNG stays one channel unless force_color
    lmdb_io.write_datums(tmp_path / "g", [encoded_datum(rgb[i, ..., 0], i) for i in range(2)])
    one, top = data_layer(tmp_path / "g", batch_size=2)
    assert forward(one, top)[0].shape == (2, 1, 4, 5)
    three, top = data_layer(tmp_path / "g", batch_size=2, extra="transform_param { force_color: true }")
    d3 = forward(three, top)[0]
    assert d3.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(d3[1, 2], rgb[1, ..., 0])


def test_undecodable_record_is_a_layer_error_with_and_without_prefetch(tmp_path):
    images, labels = make_images(6)
    datums = [lmdb_io.array_to_datum(images[i], i) for i in range(6)]
    bad = crema_pb2.Datum()
    bad.data, bad.encoded = b"not an image", True
    datums[5] = bad
    lmdb_io.write_datums(tmp_path / "bad", datums)
    for prefetch in (0, 3):
        layer, top = data_layer(tmp_path / "bad", batch_size=3,
                                extra=f"data_param {{ prefetch: {prefetch} }}")
        forward(layer, top)
        with pytest.raises(LayerError, match="record 5 .* cannot be decoded"):
            forward(layer, top)
        layer.close()


# -- prefetch -------------------------------------------------------------------------------------
def run_batches(source, prefetch, n, extra="", state=None, seed=7):
    engine.set_random_seed(seed)
    layer, top = data_layer(source, batch_size=3, extra=extra + f" data_param {{ prefetch: {prefetch} }}")
    if state is not None:
        layer.load_state_dict(state[0])
        engine.rng.set_state(state[1])
    out = []
    for _ in range(n):
        out.append(forward(layer, top))
        engine.rng.generator().random(2)  # another layer's draws between the batches
    return layer, out


def test_prefetch_gives_the_same_batches_and_resumes_exactly(db):
    path, _, _ = db
    extra = "transform_param { mirror: true crop_size: 3 scale: 0.5 }"
    _, plain = run_batches(path, 0, 6, extra)
    layer, pre = run_batches(path, 4, 6, extra)
    assert layer._thread is not None  # batches did come through the thread
    for a, b in zip(plain, pre):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # a snapshot after 3 batches describes the consumer's position, not the reader's
    layer, first = run_batches(path, 4, 3, extra)
    time.sleep(0.05)  # let the reader run ahead
    state = (layer.state_dict(), engine.rng.get_state())
    assert state[0]["offset"] == 9
    layer.close()
    _, resumed = run_batches(path, 4, 3, extra, state=state)
    for a, b in zip(plain[3:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_prefetch_thread_stops_on_close_and_deletion(db):
    import gc
    path, _, _ = db
    layer, top = data_layer(path, batch_size=2)
    forward(layer, top)
    thread = layer._thread
    assert thread.daemon and thread.is_alive()
    layer.close()
    assert not thread.is_alive()
    layer, top = data_layer(path, batch_size=2)
    forward(layer, top)
    thread = layer._thread
    del layer, top
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_solver_resume_with_prefetch_is_bit_identical(db, tmp_path, monkeypatch):
    path, _, _ = db
    monkeypatch.chdir(tmp_path)
    net = (f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ '
           f'source: "{path}" batch_size: 3 backend: LMDB prefetch: 2 }} transform_param {{ '
           f'mirror: true crop_size: 3 scale: 0.01 }} }} '
           'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param '
           '{ num_output: 10 weight_filler { type: "gaussian" std: 0.1 } } } '
           'layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" } '
           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }')
    solver = ('base_lr: 0.1 lr_policy: "fixed" max_iter: 8 display: 0 snapshot: 4 '
              f'snapshot_prefix: "{tmp_path}/s" random_seed: 5 net_param {{ {net} }}')
    engine.get_solver(solver).solve()
    full = (tmp_path / "s_iter_8.caffemodel").read_bytes()
    (tmp_path / "s_iter_8.caffemodel").unlink()
    engine.get_solver(solver).solve(str(tmp_path / "s_iter_4.solverstate"))
    assert (tmp_path / "s_iter_8.caffemodel").read_bytes() == full
