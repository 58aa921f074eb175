"""Helpers for the MPI tests: each test launches `mpiexec -n N python -m engine.cli ...` (the
mpiexec the `mpich` wheel puts beside the interpreter), oversubscribed on this machine, under a
timeout so that nothing can hang the suite."""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def _mpi_ready():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    if MPIEXEC is None:
        return "no mpiexec found (pip install mpich)"
    return None


REASON = _mpi_ready()
needs_mpi = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def crema_command(*args):
    return [sys.executable, "-m", "engine.cli", *args]


def mpi_command(n, argv, timeout=None):
    """`mpiexec -n N argv...`; with `timeout`, bounded by coreutils' timeout (SIGTERM at
    `timeout` seconds, SIGKILL 10 s later), so that a hung rank cannot outlive the test even if
    the test process dies. Without it the caller bounds the launch itself."""
    bound = ["timeout", "-k", "10", str(int(timeout))] if timeout else []
    return [*bound, MPIEXEC, "-n", str(n), *argv]


def run_mpi(n, args, cwd, timeout=120, env=None, argv=None):
    """Run `crema args...` (or `argv`) on n ranks; returns CompletedProcess (text). Kills the
    whole launch on timeout and fails the test."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.update(env or {})
    cmd = mpi_command(n, argv or crema_command(*args), timeout)
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full_env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout + 15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} ran past {timeout} s\nstdout:\n{out}\nstderr:\n{err[-4000:]}")
    if proc.returncode in (124, 137):  # coreutils timeout ended it
        pytest.fail(f"{' '.join(cmd)} ran past {timeout} s\nstderr:\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_single(args, cwd, timeout=120):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(crema_command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def write_dataset(folder, n=96, c=2, h=6, w=6, classes=3, seed=0):
    """A learnable little classification set in HDF5 (class = which quadrant is bright)."""
    g = np.random.default_rng(seed)
    labels = g.integers(0, classes, n)
    data = g.normal(0, 0.3, (n, c, h, w)).astype(np.float32)
    for i, y in enumerate(labels):
        data[i, :, : h // 2 + (y % 2), (y // 2) * (w // 2):] += 1.0
    path = Path(folder) / "train.h5"
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = labels.astype(np.float32)
    (Path(folder) / "train.txt").write_text(f"{path}\n")
    return path


NET = """name: "tiny"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param {{ source: "train.txt" batch_size: {batch} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
{extra}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


def write_solver(folder, batch, max_iter, kind="SGD", snapshot=0, extra_layers="", lr=0.05,
                 more=""):
    folder = Path(folder)
    (folder / "net.prototxt").write_text(NET.format(batch=batch, extra=extra_layers))
    momentum = {"SGD": 0.9, "Nesterov": 0.9, "Adam": 0.9, "AdaDelta": 0.95}.get(kind, 0.0)
    text = (f'net: "net.prototxt"\ntype: "{kind}"\nbase_lr: {lr}\nmomentum: {momentum}\n'
            f'weight_decay: 0.001\nlr_policy: "step"\ngamma: 0.5\nstepsize: 3\n'
            f'max_iter: {max_iter}\ndisplay: 1\nrandom_seed: 7\nsnapshot_prefix: "snap"\n'
            f'snapshot: {snapshot}\n{more}')
    (folder / "solver.prototxt").write_text(text)
    return folder / "solver.prototxt"


def read_weights(path):
    import contextlib
    import engine
    with contextlib.chdir(Path(path).parent):  # the net's data source is relative
        net = engine.Net("net.prototxt", engine.TEST)
        net.copy_from(str(path))
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
