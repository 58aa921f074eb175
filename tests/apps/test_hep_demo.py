"""The HEP demo's training and evaluation on small hand-made data (the generator has its own
tests in tests/data/hep): the net learns, the metrics and the result line come out right."""
import re
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from engine.apps import hep


def _write(folder, n, seed):
    """Signal images have a bright central blob; background a dim wide one. psr marks a cut that
    keeps most signal and some background."""
    g = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.float32)
    data = g.random((n, 3, 64, 64), dtype=np.float32) * 0.2
    data[labels == 1, :, 28:36, 28:36] += 1.0
    weight = np.where(labels == 1, 1.0, 5.0)
    psr = np.where(labels == 1, g.random(n) < 0.6, g.random(n) < 0.2)
    path = folder / f"set{seed}.h5"
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = labels
        f["weight"] = weight
        f["normweight"] = np.ones(n, np.float32)
        f["psr"] = psr.astype(np.int8)
    listing = folder / f"set{seed}.txt"
    listing.write_text(f"{path}\n")
    return str(path), str(listing)


def test_demo_training_learns_and_beats_the_cuts(tmp_path):
    train_file, train_list = _write(tmp_path, 96, 0)
    test_file, test_list = _write(tmp_path, 60, 1)
    paths = {"files": {"train": train_file, "test": test_file},
             "lists": {"train": train_list, "test": test_list}}
    args = SimpleNamespace(size=64, iters=30, seed=3)
    solver = hep.make_solver(args, paths)
    solver.param.display = 0
    first = float(solver.net.forward_backward())
    solver.step(30)
    last = np.mean([float(solver.net.forward_backward()) for _ in range(3)])
    assert last < 0.5 * first
    result = hep.evaluate(solver, paths, str(tmp_path / "out"))
    assert (tmp_path / "out" / "hep_roc.png").stat().st_size > 1000
    assert result["events"] == 60
    assert result["auc"] > 0.95 and result["cnn_tpr"] > result["cut_tpr"]
    line = hep.result_line(result)
    assert re.fullmatch(r"HEP result: CNN AUC \d\.\d{3}, cuts TPR \d\.\d{3} at FPR \d\.\d{5}; "
                        r"CNN TPR \d\.\d{3} at that FPR \(\d+\.\d{2} times the cuts\); "
                        r"60 test events", line), line
