"""`crema data hep` (engine.data.hep.cli.main) with tiny arguments."""
import json

import pytest

from engine.data.hep import cli, writer


def test_bad_arguments_return_2_without_generating(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--out", str(out), "--signal", "2", "--background", "2",
                     "--split", "train=0.9"]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert cli.main(["--out", str(out), "--signal", "0", "--background", "0"]) == 2
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["--signal", "2"])  # argparse: --out and --background missing
    assert exc.value.code == 2


def test_tiny_run(tmp_path, capsys):
    pytest.importorskip("pythia8mc", reason="pythia8mc (Pythia 8 Python bindings) is not "
                                            "installed: pip install pythia8mc==8.317.2")
    pytest.importorskip("fastjet", reason="fastjet is not installed: pip install fastjet")
    out = tmp_path / "hep"
    rc = cli.main(["--out", str(out), "--signal", "2", "--background", "2", "--size", "8",
                   "--size", "12", "--seed", "1", "--workers", "1", "--pileup", "0",
                   "--block-size", "2", "--preselection", "none", "--pthat-slices", "400",
                   "--split", "train=0.5,test=0.5", "--mpi", "off"])
    assert rc == 0
    report = capsys.readouterr().out
    assert "events/s" in report and "rpv_gluino_direct_1400" in report
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rows"] == {"train": 2, "test": 2}
    for size in (8, 12):
        d = writer.read(out / str(size) / "train.h5")
        assert d["data"].shape == (2, 3, size, size)
        assert sorted(d["label"]) == [0, 1]
        assert (out / str(size) / "test.txt").read_text().strip().endswith("test.h5")


def test_mpi_ranks_write_the_same_files_as_one_process(tmp_path):
    """Under mpirun -n 2 each rank generates every other block and rank 0 writes: the files equal
    those of a single process with the same seed."""
    import sys

    import numpy as np

    pytest.importorskip("pythia8mc", reason="pythia8mc (Pythia 8 Python bindings) is not "
                                            "installed: pip install pythia8mc==8.317.2")
    pytest.importorskip("fastjet", reason="fastjet is not installed: pip install fastjet")
    from tests.parallel.mpi_helpers import REASON, run_mpi
    if REASON:
        pytest.skip(REASON)
    args = ["--signal", "2", "--background", "2", "--size", "8", "--seed", "9",
            "--block-size", "1", "--preselection", "none", "--pthat-slices", "400",
            "--split", "train=0.5,test=0.5", "--quiet"]
    proc = run_mpi(2, None, tmp_path, timeout=300,
                   argv=[sys.executable, "-m", "engine.data.hep", "--out", str(tmp_path / "mpi"),
                         "--mpi", "on", *args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli.main(["--out", str(tmp_path / "one"), "--mpi", "off", *args]) == 0
    meta = json.loads((tmp_path / "mpi" / "meta.json").read_text())
    assert meta["timing"]["workers"] == 2
    for split in ("train", "test"):
        a = writer.read(tmp_path / "mpi" / "8" / f"{split}.h5")
        b = writer.read(tmp_path / "one" / "8" / f"{split}.h5")
        for k in a:
            if k != "attrs":
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{split}/{k}")
