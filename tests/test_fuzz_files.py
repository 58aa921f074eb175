"""Damaged copies of real files never get past crema as anything but a crema error naming the file.

The files are Caffe's own network and solver definitions (../shared/nets, laid out as in Caffe's
source tree, with small LMDB databases and a mean file where the nets expect them, so a mutant is
built all the way rather than stopped at its first data layer) and the weights, solver states and
`.solverstate.crema` sidecars crema itself writes for a tiny LeNet-like net, in both formats
(binary protobuf and HDF5). Each mutant is one to three edits of the real bytes: flipped bytes,
truncation, inserted or deleted bytes, a duplicated line, two swapped tokens, a number replaced by
a huge one, or invalid UTF-8 inside a word.

Property: loading the mutant the way users do (engine.Net, Net(weights=), net.copy_from,
solver.restore, and a solver file as `crema train` reads it) either works or raises a CremaError
whose message names the mutant. The same mutants also run in one child process, which must exit
normally: a crash in protobuf, HDF5 or crema's native code would kill it.

Reproducible in CI: hypothesis is derandomized and the child's cases come from a fixed seed.
Run this file as a script (python tests/test_fuzz_files.py CASES.json) to be that child.
"""
import contextlib
import json
import logging
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import engine
from engine import crema_pb2
from engine.data import lmdb_io
from engine.errors import CremaError
from engine.schema import read_solver_param

# -- mutations ----------------------------------------------------------------------------------
HUGE_NUMBERS = [b"2147483647", b"2147483648", b"-2147483649", b"4294967296",
                b"9223372036854775807", b"99999999999999999999", b"1e39", b"-1e39", b"1e-50",
                b"nan", b"inf", b"-1", b"0"]
HUGE_VARINT = b"\xff" * 9 + b"\x01"  # 2**64 - 1 as a protobuf varint: a length or count field
INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
_NUMBER = re.compile(rb"-?\b\d+(?:\.\d+)?(?:[eE]-?\d+)?")
_WORD = re.compile(rb"[A-Za-z_]{3,}")


def _flip(raw, rnd):
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(raw))
        raw[i] ^= rnd.randint(1, 255)


def _truncate(raw, rnd):
    del raw[rnd.randrange(len(raw)):]


def _insert(raw, rnd):
    i = rnd.randrange(len(raw) + 1)
    raw[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))


def _delete(raw, rnd):
    i = rnd.randrange(len(raw))
    del raw[i:i + rnd.randint(1, 32)]


def _duplicate_line(raw, rnd):
    lines = bytes(raw).split(b"\n")
    i = rnd.randrange(len(lines))
    lines.insert(i, lines[i])
    raw[:] = b"\n".join(lines)


def _swap_tokens(raw, rnd):
    parts = re.split(rb"(\s+)", bytes(raw))
    tokens = [i for i, p in enumerate(parts) if p and not p.isspace()]
    if len(tokens) < 2:
        return _flip(raw, rnd)
    a, b = rnd.sample(tokens, 2)
    parts[a], parts[b] = parts[b], parts[a]
    raw[:] = b"".join(parts)


def _huge_number(raw, rnd):
    """A number of a text file replaced by a huge (or edge) value; in a binary file, a maximal
    varint written over whatever was there (a length, a count, an integer field)."""
    try:
        raw.decode("utf-8")
        numbers = list(_NUMBER.finditer(raw))
    except UnicodeDecodeError:
        numbers = []
    if numbers:
        m = rnd.choice(numbers)
        raw[m.start():m.end()] = rnd.choice(HUGE_NUMBERS)
    else:
        i = rnd.randrange(len(raw))
        raw[i:i + len(HUGE_VARINT)] = HUGE_VARINT


def _invalid_utf8(raw, rnd):
    """Overwrite a letter of a word (a name, a keyword, a string in a binary file) with bytes
    that are not UTF-8; the byte count changes only when the bad sequence is longer."""
    words = list(_WORD.finditer(raw))
    bad = rnd.choice(INVALID_UTF8)
    if words:
        m = rnd.choice(words)
        i = rnd.randrange(m.start(), m.end())
        raw[i:i + 1] = bad
    else:
        i = rnd.randrange(len(raw) + 1)
        raw[i:i] = bad


MUTATIONS = {"flip": _flip, "truncate": _truncate, "insert": _insert, "delete": _delete,
             "duplicate_line": _duplicate_line, "swap_tokens": _swap_tokens,
             "huge_number": _huge_number, "invalid_utf8": _invalid_utf8}


def mutate(raw, ops, seed):
    rnd = random.Random(seed)
    out = bytearray(raw)
    for op in ops:
        if not out:
            break
        MUTATIONS[op](out, rnd)
    return bytes(out)


# -- the real files -----------------------------------------------------------------------------
SHARED_NETS = Path(os.environ.get("CREMA_SHARED", Path(__file__).resolve().parents[1].parent
                                  / "shared")) / "nets"
# Caffe's tree: examples/mnist holds lenet and mnist_autoencoder, examples/cifar10 cifar10_quick
CAFFE_DIRS = {"lenet": "mnist", "mnist_autoencoder": "mnist", "cifar10_quick": "cifar10"}
NET_FILES = ["examples/mnist/lenet_train_test.prototxt", "examples/mnist/lenet.prototxt",
             "examples/cifar10/cifar10_quick_train_test.prototxt",
             "examples/mnist/mnist_autoencoder.prototxt"]
SOLVER_FILES = ["examples/mnist/lenet_solver.prototxt",
                "examples/cifar10/cifar10_quick_solver.prototxt",
                "examples/mnist/mnist_autoencoder_solver.prototxt"]

TINY_NET = """name: "TinyLeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.00390625 crop_size: 12 mirror: true }
  data_param { source: "@SOURCE@" batch_size: 2 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 6 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

TINY_SOLVER = """# a tiny solver touching most fields crema reads
net: "{net}"
test_iter: 1
test_interval: 100
test_initialization: false
base_lr: 0.01
momentum: 0.9
momentum2: 0.999
delta: 1e-8
weight_decay: 0.0005
regularization_type: "L2"
lr_policy: "multistep"
gamma: 0.5
stepvalue: 10
stepvalue: 20
display: 0
average_loss: 2
iter_size: 1
max_iter: 10
snapshot: 0
snapshot_prefix: "{prefix}"
snapshot_format: BINARYPROTO
random_seed: 7
clip_gradients: 10
type: "Adam"
"""


def build_files(root):
    """Lay out the real files as in Caffe's tree under `root` (with 4-record LMDB databases and a
    mean file) and write the tiny net's definition, solver, weights and solver states (both
    formats, with crema's sidecar) after three iterations. Returns {kind: [absolute paths]} plus
    the tree and the tiny net's and solver's paths."""
    root = Path(root)
    rs = np.random.RandomState(0)
    for name, sub in CAFFE_DIRS.items():
        dest = root / "examples" / sub
        dest.mkdir(parents=True, exist_ok=True)
        for f in (SHARED_NETS / name).iterdir():
            shutil.copy(f, dest / f.name)
    for split in ("train", "test"):
        lmdb_io.write_arrays(str(root / f"examples/mnist/mnist_{split}_lmdb"),
                             rs.randint(0, 256, (4, 1, 28, 28)).astype(np.uint8), np.arange(4))
        lmdb_io.write_arrays(str(root / f"examples/cifar10/cifar10_{split}_lmdb"),
                             rs.randint(0, 256, (4, 3, 32, 32)).astype(np.uint8), np.arange(4))
    mean = crema_pb2.BlobProto()
    mean.shape.dim.extend([1, 3, 32, 32])
    mean.data.extend(rs.uniform(0, 255, 3 * 32 * 32).tolist())
    (root / "examples/cifar10/mean.binaryproto").write_bytes(mean.SerializeToString())

    tiny = root / "tiny"
    tiny.mkdir()
    # the data layer keeps a reading position: the solver states carry layer states
    (tiny / "tiny_net.prototxt").write_text(
        TINY_NET.replace("@SOURCE@", str(root / "examples/mnist/mnist_train_lmdb")))
    solver_path = tiny / "tiny_solver.prototxt"
    solver_path.write_text(TINY_SOLVER.format(net=tiny / "tiny_net.prototxt",
                                              prefix=tiny / "tiny"))
    solver = engine.get_solver(str(solver_path))
    solver.step(3)
    model, state = solver.snapshot()
    solver.param.snapshot_format = crema_pb2.SolverParameter.HDF5
    model_h5, state_h5 = solver.snapshot()
    return {
        "tree": str(root), "tiny_net": str(tiny / "tiny_net.prototxt"),
        "tiny_solver": str(solver_path),
        "net": [str(root / f) for f in NET_FILES],
        "solver": [str(root / f) for f in SOLVER_FILES] + [str(solver_path)],
        "weights": [model, model_h5],
        "state": [state, state_h5],
        "sidecar": [state + ".crema"],
    }


# -- loading a mutant as users do ---------------------------------------------------------------
def load_net(path, files):
    engine.Net(path, engine.TRAIN)
    # mnist_autoencoder's test layers ask for a stage; the other nets ignore it
    engine.Net(path, engine.TEST, stages=["test-on-test"])


def load_solver(path, files):
    """What `crema train -solver PATH` does before its first iteration: read the file (syntax
    errors named here), build the solver with its nets, and run the checks of Solver::Step."""
    read_solver_param(path)
    solver = engine.get_solver(path, solver_path=path)
    solver.step(0)


def load_weights(path, files):
    engine.Net(files["tiny_net"], engine.TEST, weights=path)
    engine.Net(files["tiny_net"], engine.TRAIN).copy_from(path)


def load_state(path, files):
    engine.get_solver(files["tiny_solver"]).restore(path)


def load_sidecar(path, files):
    """`path` is a mutated sidecar; the state it belongs to is copied beside it, intact."""
    state = path[:-len(".crema")]
    shutil.copy(files["state"][0], state)
    engine.get_solver(files["tiny_solver"]).restore(state)


LOADERS = {"net": load_net, "solver": load_solver, "weights": load_weights,
           "state": load_state, "sidecar": load_sidecar}


def mutant_path(directory, original, index):
    """A fresh name that keeps what the loaders read from names: the suffixes of weights and
    states (.h5 selects HDF5) and the `.solverstate.crema` of a sidecar."""
    base = os.path.basename(original)
    stem, dot, suffixes = base.partition(".")
    return os.path.join(directory, f"mutant{index}_{stem}{dot}{suffixes}")


def outcome(kind, path, files):
    """('ok' | 'crema' | 'other', message) of loading the mutant at `path`."""
    try:
        with contextlib.chdir(files["tree"]):  # the nets' relative data paths, as in Caffe
            LOADERS[kind](path, files)
    except CremaError as exc:
        return "crema", str(exc)
    except Exception as exc:  # the finding this test exists for: print all of it
        return "other", "".join(traceback.format_exception(exc))
    return "ok", ""


def check(kind, path, files):
    result, message = outcome(kind, path, files)
    assert result != "other", f"{kind} mutant {path} raised a non-crema exception:\n{message}"
    if result == "crema":
        assert path in message, f"the error for {kind} mutant {path} does not name it: {message}"


# -- in-process property ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    files = build_files(tmp_path_factory.mktemp("caffe"))
    return files, str(tmp_path_factory.mktemp("mutants")), [0]


def _property(kind, max_examples):
    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(which=st.integers(0, 10), seed=st.integers(0, 2 ** 32 - 1),
           ops=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3))
    def prop(fuzz_files, which, seed, ops):
        files, directory, counter = fuzz_files
        originals = files[kind]
        original = originals[which % len(originals)]
        counter[0] += 1
        path = mutant_path(directory, original, counter[0])
        with open(original, "rb") as fh:
            raw = fh.read()
        with open(path, "wb") as fh:
            fh.write(mutate(raw, ops, seed))
        check(kind, path, files)
    return prop


test_mutated_net_files = _property("net", 300)
test_mutated_solver_files = _property("solver", 150)
test_mutated_weights = _property("weights", 200)
test_mutated_solver_states = _property("state", 200)
test_mutated_sidecars = _property("sidecar", 100)


def test_mutants_never_kill_the_process(fuzz_files, tmp_path):
    """One child process loads a fixed-seed batch of mutants of every kind and must exit
    normally, reporting one outcome per case."""
    files, _, _ = fuzz_files
    rnd = random.Random(20260901)
    cases = []
    for i in range(400):
        kind = sorted(LOADERS)[i % len(LOADERS)]
        original = rnd.choice(files[kind])
        path = mutant_path(str(tmp_path), original, i)
        ops = rnd.sample(sorted(MUTATIONS), rnd.randint(1, 3))
        with open(original, "rb") as fh:
            raw = fh.read()
        with open(path, "wb") as fh:
            fh.write(mutate(raw, ops, rnd.randrange(2 ** 32)))
        cases.append({"kind": kind, "path": path})
    manifest = tmp_path / "cases.json"
    manifest.write_text(json.dumps({"files": files, "cases": cases}))
    proc = subprocess.run([sys.executable, __file__, str(manifest)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (f"the child died (status {proc.returncode}); last "
                                  f"outcomes:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), proc.stderr[-3000:]
    for case, res in zip(cases, results):
        assert res["result"] != "other", f"{case}: {res['message']}"
        if res["result"] == "crema":
            assert case["path"] in res["message"], f"{case}: {res['message']}"
    # the batch exercises both outcomes: damage is found, and harmless edits still load
    assert {r["result"] for r in results} == {"ok", "crema"}


def test_hdf5_solver_state_holds_no_variable_length_data(fuzz_files):
    """Found by this fuzzer: libhdf5 loops forever reading a variable-length string from some
    damaged global heaps, so crema writes none (its manifest is a fixed-length string)."""
    files, _, _ = fuzz_files
    variable = []
    with h5py.File(files["state"][1], "r") as fh:
        fh.visititems(lambda name, obj: variable.append(name) if isinstance(obj, h5py.Dataset)
                      and obj.dtype.kind == "O" else None)
        assert "crema/manifest" in fh
    assert variable == []


def _child(manifest):
    """Load every case of the manifest, one JSON line of outcome each. An address-space limit
    turns a runaway allocation into a reported MemoryError rather than a machine out of memory."""
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    logging.disable(logging.CRITICAL)  # the solvers' progress lines would bury the outcomes
    spec = json.loads(Path(manifest).read_text())
    for case in spec["cases"]:
        result, message = outcome(case["kind"], case["path"], spec["files"])
        print(json.dumps({"result": result, "message": message}), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1])
