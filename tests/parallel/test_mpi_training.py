"""Training under mpiexec: synchronous groups, parameter servers, faults, resume."""
import json
import re
import time

import numpy as np
import pytest

from tests.parallel.mpi_helpers import needs_mpi, read_weights, run_mpi, run_single, write_dataset, write_solver

pytestmark = needs_mpi

RANK_BATCH = 4


def _dataset_loss(folder, weights=None, batches=60):
    """Mean loss over the data set with the net's initial weights (the solver's seed) or a
    snapshot's."""
    import contextlib
    import engine
    with contextlib.chdir(folder):
        engine.set_random_seed(7)  # write_solver's random_seed: the solver's initial weights
        net = engine.Net("net.prototxt", engine.TEST)
        if weights:
            net.copy_from(weights)
        return float(np.mean([net.forward()["loss"] for _ in range(batches)]))


def _assert_same_weights(a, b, rtol=2e-5, atol=2e-6):
    assert a.keys() == b.keys()
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("ranks,kind", [(2, "SGD"), (4, "Adam"), (3, "Nesterov")])
def test_synchronous_group_equals_one_process_with_the_whole_batch(tmp_path, ranks, kind):
    """G = 1 with N ranks x batch b and Caffe's record striding gives the weights of one process
    with batch N*b after k iterations (momentum, weight decay, lr steps and all)."""
    iters = 6
    single, multi = tmp_path / "single", tmp_path / "multi"
    for folder, batch in ((single, ranks * RANK_BATCH), (multi, RANK_BATCH)):
        folder.mkdir()
        write_dataset(folder, n=ranks * RANK_BATCH * 3)
        write_solver(folder, batch, iters, kind=kind)
    one = run_single(["train", "-solver", "solver.prototxt"], cwd=single)
    assert one.returncode == 0, one.stderr[-3000:]
    many = run_mpi(ranks, ["train", "-solver", "solver.prototxt"], cwd=multi)
    assert many.returncode == 0, many.stderr[-3000:]
    assert f"{ranks} ranks: 1 group(s) of {ranks} + 0 parameter server(s)" in many.stderr
    a = read_weights(single / f"snap_iter_{iters}.caffemodel")
    b = read_weights(multi / f"snap_iter_{iters}.caffemodel")
    _assert_same_weights(a, b)
    # the logged (group-mean) losses are the single process's losses
    loss = re.compile(r"Iteration (\d+) \([^)]*\), loss = (\S+)")
    la = [float(v) for _, v in loss.findall(one.stderr)]
    lb = [float(v) for _, v in loss.findall(many.stderr)]
    assert len(la) == len(lb) == iters and np.allclose(la, lb, rtol=1e-4)
    # only rank 0 logs and snapshots
    assert many.stderr.count("Optimization Done.") == 1
    assert sorted(p.name for p in multi.glob("snap_*.caffemodel")) == [f"snap_iter_{iters}.caffemodel"]


@pytest.mark.parametrize("ranks,groups,servers", [(5, 2, 1), (5, 4, 1), (3, 2, 1)])
def test_hybrid_trains_through_parameter_servers(tmp_path, ranks, groups, servers):
    write_dataset(tmp_path, n=240)
    iters = 24
    write_solver(tmp_path, RANK_BATCH, iters, kind="SGD", lr=0.05)
    # momentum 0.9 on top of asynchrony's implicit momentum can diverge with 4 groups: the
    # servers lower it by 1 - 1/groups (-momentum_correction)
    res = run_mpi(ranks, ["train", "-solver", "solver.prototxt", "-groups", str(groups),
                          "-servers", str(servers), "-timeline", "trace.json",
                          "-momentum_correction"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    size = (ranks - servers) // groups
    assert f"{groups} group(s) of {size} + {servers} parameter server(s)" in res.stderr
    m = re.search(r"staleness over (\d+) server updates: mean (\S+), max (\d+)", res.stderr)
    assert m, res.stderr[-3000:]
    assert int(m.group(1)) == iters  # the servers applied exactly max_iter updates
    assert 0 <= float(m.group(2)) <= groups  # about groups - 1
    weights = read_weights(tmp_path / f"snap_iter_{iters}.caffemodel")
    assert all(np.all(np.isfinite(b)) for blobs in weights.values() for b in blobs)
    assert _dataset_loss(tmp_path, weights=f"snap_iter_{iters}.caffemodel") < \
        0.9 * _dataset_loss(tmp_path)  # it learned: the whole data set's loss went down
    trace = json.loads((tmp_path / "trace.json").read_text())
    pids = {e["pid"] for e in trace["traceEvents"] if e.get("ph") == "X"}
    assert pids == set(range(ranks - servers))  # every worker recorded its spans
    names = {e["name"] for e in trace["traceEvents"] if e.get("ph") == "X"}
    assert {"compute", "server round trip"} <= names


def test_impossible_layout_is_refused_before_work(tmp_path):
    write_dataset(tmp_path)
    write_solver(tmp_path, RANK_BATCH, 3)
    res = run_mpi(4, ["train", "-solver", "solver.prototxt", "-groups", "2"], cwd=tmp_path,
                  timeout=60)
    assert res.returncode != 0
    assert res.stderr.count("needs at least one parameter server") == 1
    res = run_mpi(4, ["train", "-solver", "solver.prototxt", "-groups", "2", "-servers", "1"],
                  cwd=tmp_path, timeout=60)
    assert res.returncode != 0
    assert "cannot form 2 groups of equal size" in res.stderr
    assert not list(tmp_path.glob("snap_*"))


FAIL_LAYER = """layer { name: "boom" type: "Python" bottom: "ip" top: "ip2"
        python_param { module: "failing_layer" layer: "FailOnRank" param_str: "%s" } }"""

FAIL_MODULE = '''
import os, time
import engine

class FailOnRank(engine.Layer):
    """Identity; on one rank, at one iteration, raise (or hang)."""
    def setup(self, bottom, top):
        self.rank, self.at, self.how = self.param_str.split(",")
        self.calls = 0
    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)
    def forward(self, bottom, top):
        self.calls += 1
        if os.environ.get("PMI_RANK") == self.rank and self.calls == int(self.at):
            if self.how == "raise":
                raise ValueError("the detector data of this batch is corrupt")
            time.sleep(3600)
        top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''


def _failing_setup(tmp_path, rank, how):
    write_dataset(tmp_path, n=200)
    (tmp_path / "failing_layer.py").write_text(FAIL_MODULE)
    write_solver(tmp_path, RANK_BATCH, 50, extra_layers=FAIL_LAYER % f"{rank},3,{how}")
    text = (tmp_path / "net.prototxt").read_text().replace('bottom: "ip" bottom: "label"',
                                                            'bottom: "ip2" bottom: "label"')
    (tmp_path / "net.prototxt").write_text(text)


@pytest.mark.parametrize("ranks,layout", [(3, []), (5, ["-groups", "2", "-servers", "1"])])
def test_a_failing_rank_ends_the_job_quickly(tmp_path, ranks, layout):
    _failing_setup(tmp_path, rank=1, how="raise")
    t0 = time.monotonic()
    res = run_mpi(ranks, ["train", "-solver", "solver.prototxt", *layout], cwd=tmp_path,
                  timeout=90, env={"PYTHONPATH": str(tmp_path)})
    elapsed = time.monotonic() - t0
    assert res.returncode != 0
    assert "rank 1:" in res.stderr and "detector data of this batch is corrupt" in res.stderr
    assert "Traceback" not in res.stderr
    assert elapsed < 60


def test_stall_watchdog_names_the_stuck_rank(tmp_path):
    _failing_setup(tmp_path, rank=2, how="hang")
    res = run_mpi(3, ["train", "-solver", "solver.prototxt", "-stall_timeout", "4"],
                  cwd=tmp_path, timeout=90, env={"PYTHONPATH": str(tmp_path)})
    assert res.returncode != 0
    assert re.search(r"stall: rank\(s\) 2 made no progress for 4 s", res.stderr), res.stderr[-2000:]


def test_hybrid_snapshot_resumes_single_process_and_back(tmp_path):
    write_dataset(tmp_path, n=240)
    write_solver(tmp_path, RANK_BATCH, 12, kind="Adam", snapshot=6, lr=0.01)
    res = run_mpi(5, ["train", "-solver", "solver.prototxt", "-groups", "2", "-servers", "1"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    state = tmp_path / "snap_iter_12.solverstate"
    # a mid-run snapshot at the first update count >= 6 that rank 0 saw (groups interleave)
    middle = [int(p.stem.split("_")[-1]) for p in tmp_path.glob("snap_iter_*.solverstate")]
    assert state.exists() and any(6 <= k < 12 for k in middle), middle
    # the hybrid snapshot's Adam history came from the servers: not all zero
    from engine.solvers.snapshot import read_state
    history = read_state(str(state)).history
    assert any(np.any(values != 0) for _, _, values in history if values is not None)
    # resume single-process from the hybrid snapshot and train on
    text = (tmp_path / "solver.prototxt").read_text().replace("max_iter: 12", "max_iter: 16")
    (tmp_path / "solver.prototxt").write_text(text)
    one = run_single(["train", "-solver", "solver.prototxt", "-snapshot", state.name],
                     cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert (tmp_path / "snap_iter_16.caffemodel").exists()
    # and the single-process snapshot resumes into a hybrid run
    text = text.replace("max_iter: 16", "max_iter: 20")
    (tmp_path / "solver.prototxt").write_text(text)
    back = run_mpi(5, ["train", "-solver", "solver.prototxt", "-groups", "2", "-servers", "1",
                       "-snapshot", "snap_iter_16.solverstate"], cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    assert "Iteration 16" in back.stderr
    assert (tmp_path / "snap_iter_20.caffemodel").exists()
    # and a hybrid run resumes from its own mid-run snapshot
    mid = min(k for k in middle if 6 <= k < 12)
    again = run_mpi(5, ["train", "-solver", "solver.prototxt", "-groups", "2", "-servers", "1",
                        "-snapshot", f"snap_iter_{mid}.solverstate"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Iteration {mid}" in again.stderr and "Optimization Done." in again.stderr


def test_synchronous_resume_is_exact_per_rank(tmp_path):
    """Each rank's data position goes into the snapshot: a resumed 2-rank run ends with the
    weights of an uninterrupted one."""
    straight, resumed = tmp_path / "a", tmp_path / "b"
    for folder in (straight, resumed):
        folder.mkdir()
        write_dataset(folder, n=40)  # the stream wraps around during the run
        write_solver(folder, RANK_BATCH, 8, snapshot=4)
    assert run_mpi(2, ["train", "-solver", "solver.prototxt"], cwd=straight).returncode == 0
    text = (resumed / "solver.prototxt").read_text().replace("max_iter: 8", "max_iter: 4")
    (resumed / "solver.prototxt").write_text(text)
    assert run_mpi(2, ["train", "-solver", "solver.prototxt"], cwd=resumed).returncode == 0
    (resumed / "solver.prototxt").write_text(text.replace("max_iter: 4", "max_iter: 8"))
    res = run_mpi(2, ["train", "-solver", "solver.prototxt", "-snapshot",
                      "snap_iter_4.solverstate"], cwd=resumed)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_weights(read_weights(straight / "snap_iter_8.caffemodel"),
                         read_weights(resumed / "snap_iter_8.caffemodel"), rtol=0, atol=0)


@pytest.mark.parametrize("ranks,layout", [(2, []), (3, ["-groups", "2", "-servers", "1"])])
def test_sigint_stops_every_rank_with_a_snapshot(tmp_path, ranks, layout):
    """Ctrl-C on mpiexec reaches every rank; the ranks agree on the iteration to stop at (sync)
    or each group stops and tells the servers (hybrid); rank 0 writes the final snapshot."""
    import os
    import signal
    import subprocess
    import threading
    from tests.parallel.mpi_helpers import crema_command, mpi_command
    write_dataset(tmp_path, n=240)
    write_solver(tmp_path, RANK_BATCH, 10 ** 7, lr=0.01)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # mpiexec itself must get the SIGINT, so no timeout(1) in front: the watchdog timer below
    # kills the whole launch after 120 s whatever happens
    proc = subprocess.Popen(mpi_command(ranks, crema_command("train", "-solver", "solver.prototxt",
                                                             *layout)),
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    watchdog = threading.Timer(120, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        lines = []
        for line in proc.stderr:  # wait until training runs
            lines.append(line)
            if re.search(r"Iteration [1-9]\d* \(", line):
                break
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the job did not stop after SIGINT")
    finally:
        watchdog.cancel()
    assert proc.returncode != -signal.SIGKILL, "the job hung before training started"
    err = "".join(lines) + rest
    assert proc.returncode == 0, err[-3000:]
    assert err.count("Optimization stopped early.") == 1
    assert list(tmp_path.glob("snap_iter_*.caffemodel"))


def _staleness(stderr):
    m = re.search(r"staleness over (\d+) server updates: mean (\S+), max (\d+)", stderr)
    assert m, stderr[-3000:]
    return float(m.group(2)), int(m.group(3))


def test_max_staleness_bounds_a_straggling_group(tmp_path):
    """Group 1 (rank 1) runs 25x slower: unbounded, its gradients land several updates late;
    with -max_staleness 0 the groups move in lockstep and no gradient is more than G-1 = 1
    update late. Per-rank logs go to -log_dir."""
    write_dataset(tmp_path, n=240)
    write_solver(tmp_path, RANK_BATCH, 30)
    slow = {"CREMA_EMULATE_STRAGGLER": "1:25"}  # the tiny net computes in milliseconds
    free = run_mpi(3, ["train", "-solver", "solver.prototxt", "-groups", "2", "-servers", "1"],
                   cwd=tmp_path, env=slow)
    assert free.returncode == 0, free.stderr[-3000:]
    bound = run_mpi(3, ["train", "-solver", "solver.prototxt", "-groups", "2", "-servers", "1",
                        "-max_staleness", "0", "-log_dir", "logs"], cwd=tmp_path, env=slow)
    assert bound.returncode == 0, bound.stderr[-3000:]
    def contributions(stderr):
        m = re.search(r"contributions per group \[(\d+), (\d+)\]", stderr)
        assert m, stderr[-3000:]
        return int(m.group(1)), int(m.group(2))
    fast, slow = contributions(free.stderr)
    assert fast >= 2 * slow and fast >= slow + 6  # unbounded, the fast group runs ahead
    fast, slow = contributions(bound.stderr)
    assert abs(fast - slow) <= 1  # bounded by 0, the groups take turns
    _, bound_max = _staleness(bound.stderr)
    assert bound_max <= 1
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert logs == ["crema.rank0.log", "crema.rank1.log", "crema.rank2.log"]
    assert "Solving" in (tmp_path / "logs" / "crema.rank1.log").read_text()


def test_momentum_correction_lowers_the_servers_momentum():
    from engine.parallel.server import corrected_momentum
    assert corrected_momentum(0.9, 1) == pytest.approx(0.9)
    assert corrected_momentum(0.9, 2) == pytest.approx(0.4)
    assert corrected_momentum(0.9, 10) == 0.0
