"""The example networks under examples/ build and train."""
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_example_lenet_train_test_matches_caffes_lenet(tmp_path, monkeypatch):
    """examples/mnist/lenet_train_test.prototxt + lenet_solver.prototxt run from a repository-like
    folder on tiny LMDBs: the nets have Caffe's LeNet shapes and a solver step works."""
    import numpy as np

    import engine
    from engine.data.lmdb_io import write_arrays

    (tmp_path / "examples/mnist").mkdir(parents=True)
    for name in ("lenet_train_test.prototxt", "lenet_solver.prototxt"):
        (tmp_path / "examples/mnist" / name).write_text((REPO / "examples/mnist" / name).read_text())
    rng = np.random.default_rng(0)
    for split, n in (("train", 70), ("test", 100)):
        write_arrays(str(tmp_path / f"examples/mnist/mnist_{split}_lmdb"),
                     rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))
    monkeypatch.chdir(tmp_path)
    solver_text = (tmp_path / "examples/mnist/lenet_solver.prototxt").read_text()
    solver_text = solver_text.replace("max_iter: 10000", "max_iter: 2").replace("test_iter: 100", "test_iter: 1")
    (tmp_path / "examples/mnist/lenet_solver.prototxt").write_text(solver_text)
    solver = engine.get_solver("examples/mnist/lenet_solver.prototxt")
    assert {k: v.shape for k, v in solver.net.blobs.items()}["pool2"] == (64, 50, 4, 4)
    assert solver.test_nets[0].blobs["ip2"].shape == (100, 10)
    assert [tuple(b.shape) for b in solver.net.params["ip1"]] == [(500, 800), (500,)]
    solver.step(2)
    assert solver.iter == 2
    assert 0.0 <= solver.test(0)["accuracy"] <= 1.0
