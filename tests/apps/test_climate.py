"""The climate demo's pieces: the example net trains (its loss falls) through crema's solver on
generated files, detections decode and score, the plot and the result line."""
import argparse
import json
import re

import numpy as np
import pytest

pytest.importorskip("h5py")

from engine import TEST, Net, rng  # noqa: E402
from engine.apps import climate  # noqa: E402
from engine.data.climate import ExtremeWeatherFile, generate  # noqa: E402
from engine.layers.detection import encode_targets  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("climate")
    paths = generate(folder, train=8, test=4, labeled_fraction=0.5, seed=4)
    with ExtremeWeatherFile(paths["train"]) as f:
        stats = f.channel_stats()
    (folder / "stats.json").write_text(json.dumps({k: np.asarray(v).tolist() for k, v in
                                                   stats.items() if k != "variables"}))
    return {"train": paths["train"], "test": paths["test"], "stats": folder / "stats.json"}


def args(**kw):
    base = dict(iters=12, lr=2e-3, seed=3)
    base.update(kw)
    return argparse.Namespace(**base)


def test_training_the_climate_net_lowers_its_loss(tiny):
    rng.set_random_seed(3)
    solver = climate.make_solver(args(), tiny, lam=10.0)
    # the example's TEST phase reads the test file (all labeled) in order, 8 images a batch
    test_net = Net(climate.net_param(tiny, 10.0), TEST)
    test_net.share_with(solver.net)

    def test_loss():
        out = test_net.forward()
        # the net's objective: detection + lambda * MSE (the reconstruction top's loss weight)
        return float(out["detection_loss"]) + \
            float(out["reconstruction_loss"]) * test_net.blob_loss_weights["reconstruction_loss"]

    before = test_loss()
    solver.step(12)
    after = test_loss()
    assert np.isfinite(after) and after < 0.8 * before
    # the reconstruction weight is 2 lambda / (C H W): lambda times the mean squared error
    assert test_net.blob_loss_weights["reconstruction_loss"] == pytest.approx(
        20.0 / (16 * 96 * 144))
    pred = climate.predict(solver, np.zeros((3, 16, 96, 144), np.float32), batch=2)
    assert pred.shape == (3, 9, 12, 18)
    settings = climate.head_settings(solver)
    assert settings["obj_prior"] == 0.01 and settings["stride"] == 8
    # 96 / 8 = 12 and 144 / 8 = 18: the stride is the encoder's
    assert len(climate.detect(pred, settings)) == 3


def test_supervised_run_ignores_reconstruction(tiny):
    solver = climate.make_solver(args(), tiny, lam=0.0)
    assert solver.net.blob_loss_weights["reconstruction_loss"] == 0.0


def test_perfect_predictions_score_one_and_results_are_reported(tmp_path):
    boxes = -np.ones((3, 15, 5), np.float32)
    boxes[0, 0] = [10, 20, 26, 50, 3]
    boxes[0, 1] = [40, 3, 47, 11, 1]
    boxes[1, 0] = [60, 100, 70, 108, 0]
    boxes[2, 0] = [5, 30, 30, 70, 2]
    obj, cls, t = encode_targets(boxes, (12, 18), 8.0, 8.0, 4)
    pred = np.zeros((3, 9, 12, 18), np.float32)
    pred[:, 0] = np.where(obj > 0, 10.0, -10.0)
    pred[:, 1:5] = 10.0 * np.eye(4)[cls].transpose(0, 3, 1, 2)
    pred[:, 5:] = t
    dets = climate.detect(pred)
    res = climate.score(dets, boxes)
    for thr in climate.IOU_THRESHOLDS:
        assert res[thr]["map"] == pytest.approx(1.0)
    worse = climate.score([d[:0] for d in dets], boxes)
    results = {"semi-supervised": res, "supervised": worse}
    line = climate.result_line(results, 0.1)
    assert re.fullmatch(r"climate result: mAP@0\.1 semi-supervised 1\.000 vs supervised 0\.000; "
                        r"mAP@0\.5 semi-supervised 1\.000 vs supervised 0\.000; labeled 10%", line)
    assert "mAP@0.1" in climate.table(results)
    raw = np.random.default_rng(0).uniform(0, 60, (3, 16, 96, 144)).astype(np.float32)
    png = tmp_path / "boxes.png"
    climate.plot_boxes(raw, boxes, {"semi-supervised": dets, "supervised": dets}, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
