"""Every input Caffe refuses is refused (issue 9), with a crema error that names the file and
says what is wrong.

Solver definitions: every CHECK Caffe makes on solver parameters (src/caffe/solver.cpp,
solvers/sgd_solver.cpp, include/caffe/sgd_solvers.hpp, solver_factory.hpp, util/upgrade_proto.cpp)
given in a solver FILE; where Caffe CHECKs only at the first iteration (the learning-rate policy),
the refusal comes before any iteration runs. Files: damaged solver states (binary, HDF5,
crema's .solverstate.crema sidecar) and weights (binary, HDF5), solver states that do not fit the
solver or name no weights, prototxt with a non-repeated field given twice, V1 files with names
that are not UTF-8. Command-line flags: gflags' int32 range and empty -weights entries. Sizes:
a blob of more than INT_MAX elements.

Tests beside the code (tests/solvers/test_snapshot.py, test_solvers.py, test_lr_policy.py,
tests/cli/test_cli.py, tests/net/test_weights.py) cover several of these with solvers given as
text; here each one comes from a file, and the message must name it.
"""
import json
import re

import h5py
import numpy as np
import pytest

import engine
from engine import crema_pb2
from engine.data import lmdb_io
from engine.errors import CremaError, PrototxtError, SolverError, WeightsError

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # probes and snapshots never land in the test run's directory


def raises_naming(error_cls, path, *what):
    """pytest.raises for `error_cls` whose message names `path` and contains each of `what`
    (plain substrings)."""
    pattern = "(?s)" + re.escape(str(path)) + "".join(".*" + re.escape(w) for w in what)
    return pytest.raises(error_cls, match=pattern)


def solver_file(tmp_path, text, name="solver.prototxt"):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    path = tmp_path / name
    path.write_text(text.replace("@NET@", str(net)))
    return str(path)


# -- solver definitions: Caffe's CHECKs ----------------------------------------------------------
# (Caffe's site, the solver text (@NET@: a valid net file), what the message must say).
# Sites in the policy rows are sgd_solver.cpp's GetLearningRate; the rest as given.
SOLVER_REFUSALS = [
    ("solver.cpp:48 average_loss >= 1",
     'net: "@NET@" base_lr: 0.1 average_loss: 0', "average_loss should be >= 1"),
    ("solver.cpp:82 a train net is given",
     "base_lr: 0.1", "must specify a train net"),
    ("solver.cpp:84 one train net only",
     'net: "@NET@" train_net: "@NET@" base_lr: 0.1', "must not contain more than one"),
    ("solver.cpp:126 not both net and net_param",
     'net: "@NET@" net_param { name: "n" } base_lr: 0.1', "must not contain more than one"),
    ("solver.cpp:132 test_iter for each test net (with a generic net)",
     'net: "@NET@" test_net: "@NET@" test_net: "@NET@" test_iter: 1 test_interval: 5',
     "test_iter must be specified for each test network"),
    ("solver.cpp:135 test_iter for each test net",
     'train_net: "@NET@" test_net: "@NET@" test_interval: 5',
     "test_iter must be specified for each test network"),
    ("solver.cpp:146 test_state once per test net",
     'net: "@NET@" test_iter: 1 test_iter: 1 test_interval: 5 test_state { stage: "a" }',
     "test_state must be unspecified or specified once per test net"),
    ("solver.cpp:150 test_interval > 0 with test nets",
     'net: "@NET@" test_iter: 1', "test_interval > 0"),
    ("solver.cpp:440 snapshot needs snapshot_prefix",
     'net: "@NET@" snapshot: 10', "snapshot is specified but snapshot_prefix is not"),
    ("solver.cpp:448 a writable snapshot prefix",
     'net: "@NET@" snapshot: 10 snapshot_prefix: "/nonexistent/dir/run"',
     "Cannot write to snapshot prefix '/nonexistent/dir/run'"),
    ("sgd_solvers.hpp:76 AdaGrad takes no momentum",
     'net: "@NET@" type: "AdaGrad" momentum: 0.9', "Momentum cannot be used with AdaGrad"),
    ("sgd_solvers.hpp:96 RMSProp takes no momentum",
     'net: "@NET@" type: "RMSProp" momentum: 0.9', "Momentum cannot be used with RMSProp"),
    ("sgd_solvers.hpp:98 rms_decay >= 0",
     'net: "@NET@" type: "RMSProp" rms_decay: -0.1', "rms_decay should lie between 0 and 1"),
    ("sgd_solvers.hpp:100 rms_decay < 1",
     'net: "@NET@" type: "RMSProp" rms_decay: 1', "rms_decay should lie between 0 and 1"),
    ("sgd_solver.cpp:181 a known regularization type",
     'net: "@NET@" weight_decay: 0.1 regularization_type: "L3"',
     "Unknown regularization type: L3"),
    ("upgrade_proto.cpp:1043 not both solver_type and type",
     'net: "@NET@" solver_type: ADAM type: "Adam"', "both the old solver_type"),
]

POLICY_REFUSALS = [
    ("sgd_solver.cpp:33 step: stepsize > 0", 'lr_policy: "step" gamma: 0.1',
     'lr_policy "step" needs stepsize > 0'),
    ("sgd_solver.cpp:35 step: gamma >= 0", 'lr_policy: "step" gamma: -0.1 stepsize: 10',
     'lr_policy "step" needs gamma >= 0'),
    ("sgd_solver.cpp:39 exp: gamma >= 0", 'lr_policy: "exp" gamma: -1',
     'lr_policy "exp" needs gamma >= 0'),
    ("sgd_solver.cpp:42 inv: gamma >= 0", 'lr_policy: "inv" gamma: -0.5 power: 0.75',
     'lr_policy "inv" needs gamma >= 0'),
    ("sgd_solver.cpp:53 multistep: gamma >= 0", 'lr_policy: "multistep" gamma: -2 stepvalue: 5',
     'lr_policy "multistep" needs gamma >= 0'),
    ("sgd_solver.cpp:61 sigmoid: gamma >= 0", 'lr_policy: "sigmoid" gamma: -1 stepsize: 5',
     'lr_policy "sigmoid" needs gamma >= 0'),
    ("sgd_solver.cpp:62 sigmoid: stepsize > 0", 'lr_policy: "sigmoid" gamma: 0.1 stepsize: 0',
     'lr_policy "sigmoid" needs stepsize > 0'),
    ("sgd_solver.cpp:67 a known policy", 'lr_policy: "cosine"',
     'Unknown learning rate policy: "cosine"'),
    # Caffe divides by zero or runs its steps out of order here; crema refuses
    ("poly: max_iter > 0", 'lr_policy: "poly" power: 2', 'lr_policy "poly" needs max_iter > 0'),
    ("multistep: increasing stepvalue", 'lr_policy: "multistep" gamma: 0.1 stepvalue: 10 '
     'stepvalue: 5', "needs increasing stepvalue entries"),
]


@pytest.mark.parametrize("site, text, message", SOLVER_REFUSALS,
                         ids=[row[0] for row in SOLVER_REFUSALS])
def test_solver_definition_refused_naming_the_file(tmp_path, site, text, message):
    path = solver_file(tmp_path, text)
    with raises_naming(SolverError, path, message):
        engine.get_solver(path)


@pytest.mark.parametrize("site, text, message", POLICY_REFUSALS,
                         ids=[row[0] for row in POLICY_REFUSALS])
def test_learning_rate_policy_refused_before_the_first_iteration(tmp_path, site, text, message):
    path = solver_file(tmp_path, f'net: "@NET@" base_lr: 0.1 {text}')
    solver = engine.get_solver(path)
    weights = [b.data.copy() for b in solver.net.learnable_params]
    with raises_naming(SolverError, path, message):
        solver.step(1)
    assert solver.iter == 0
    for before, blob in zip(weights, solver.net.learnable_params):
        np.testing.assert_array_equal(blob.data, before)


def test_unknown_solver_type_is_refused(tmp_path):
    """solver_factory.hpp:76 (the registry's CHECK), listing the known types."""
    path = solver_file(tmp_path, 'net: "@NET@" type: "Bogus"')
    with raises_naming(SolverError, path, "Unknown solver type: Bogus", "Adam", "SGD"):
        engine.get_solver(path)


def test_unknown_snapshot_format_is_refused_by_the_parser(tmp_path):
    """solver.cpp:431 (Unsupported snapshot format) cannot be reached from a file: the enum
    refuses any other value when the file is read."""
    path = solver_file(tmp_path, 'net: "@NET@" snapshot_format: 7')
    with raises_naming(PrototxtError, f"{path}:1:", "snapshot_format"):
        engine.get_solver(path)


# -- a non-repeated field given twice ----------------------------------------------------------
def test_duplicated_field_in_a_solver_file_is_refused(tmp_path):
    path = solver_file(tmp_path, 'net: "@NET@"\nbase_lr: 0.1\nbase_lr: 0.2\n')
    with raises_naming(PrototxtError, f"{path}:3:", 'multiple "base_lr" fields'):
        engine.get_solver(path)


def test_duplicated_field_in_a_net_file_is_refused(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("num_output: 2", "num_output: 2\n  num_output: 3"))
    with raises_naming(PrototxtError, f"{path}:7:", 'multiple "num_output" fields'):
        engine.Net(str(path), engine.TEST)


# -- solver states -------------------------------------------------------------------------------
def snapshot(tmp_path, fmt="BINARYPROTO", kind="SGD"):
    """A solver (momentum SGD or Adam) after one iteration and its snapshot: (solver file,
    weights path, state path)."""
    path = solver_file(tmp_path, f'net: "@NET@" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 '
                                 f'type: "{kind}" '
                                 f'snapshot_prefix: "{tmp_path}/run" snapshot_format: {fmt}')
    solver = engine.get_solver(path)
    solver.step(1)
    model, state = solver.snapshot()
    return path, model, state


def corrupt(path, how):
    raw = open(path, "rb").read()
    damaged = {"truncated": raw[:len(raw) // 2], "garbage": bytes(range(256)) * 4,
               "empty": b""}[how]
    with open(path, "wb") as fh:
        fh.write(damaged)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_damaged_solver_state_is_refused_naming_it(tmp_path, fmt, how):
    solver_path, _, state = snapshot(tmp_path, fmt)
    corrupt(state, how)
    solver = engine.get_solver(solver_path)
    with raises_naming(SolverError, state):
        solver.restore(state)
    assert solver.iter == 0


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_sidecar_is_refused_naming_it(tmp_path, how):
    solver_path, _, state = snapshot(tmp_path)
    corrupt(state + ".crema", how)
    with raises_naming(SolverError, state + ".crema", "cannot read crema extras"):
        engine.get_solver(solver_path).restore(state)


def test_sidecar_with_a_damaged_array_header_is_refused_naming_it(tmp_path):
    """A whole zip archive (checksums right) whose .npy header does not parse: numpy's loader
    raises the tokenizer's own error. Found by tests/test_fuzz_files.py."""
    import zipfile
    solver_path, _, state = snapshot(tmp_path)
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, "
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(12)
    with zipfile.ZipFile(state + ".crema", "w") as archive:
        archive.writestr("manifest.npy", npy)
    with raises_naming(SolverError, state + ".crema", "cannot read crema extras"):
        engine.get_solver(solver_path).restore(state)


def test_sidecar_with_a_damaged_manifest_is_refused_naming_it(tmp_path):
    """A manifest that still parses as JSON but lacks what the solver reads."""
    solver_path, _, state = snapshot(tmp_path)
    sidecar = state + ".crema"
    with np.load(sidecar) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["manifest"] = np.array('{"format": 1, "iter": 1, "rng": {}, "loss_window": {}}')
    with open(sidecar, "wb") as fh:
        np.savez(fh, **arrays)
    with raises_naming(SolverError, sidecar, "'loss_window' is not a window of losses"):
        engine.get_solver(solver_path).restore(state)


DATA_NET = """name: "reader"
layer { name: "data" type: "Data" top: "x" top: "label"
  data_param { source: "@DB@" batch_size: 2 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss" }
"""


@pytest.mark.parametrize("damage", [{"value": "abc"}, {"value": None}, {"value": float("nan")},
                                    None], ids=["text", "null", "nan", "missing"])
def test_sidecar_with_a_damaged_layer_state_is_refused_naming_it(tmp_path, damage):
    """The data layer's saved reading position, damaged (or missing) inside a manifest that
    is otherwise whole."""
    db = str(tmp_path / "db")
    lmdb_io.write_arrays(db, np.zeros((4, 1, 2, 3), np.uint8), np.arange(4))
    net = tmp_path / "reader.prototxt"
    net.write_text(DATA_NET.replace("@DB@", db))
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(f'net: "{net}" base_lr: 0.1 lr_policy: "fixed" '
                           f'snapshot_prefix: "{tmp_path}/run"')
    solver = engine.get_solver(str(solver_path))
    solver.step(1)
    _, state = solver.snapshot()
    sidecar = state + ".crema"
    with np.load(sidecar) as data:
        arrays = {k: data[k] for k in data.files}
    manifest = json.loads(str(arrays["manifest"]))
    items = manifest["layers"][0]["items"]
    if damage is None:
        del items["offset"]
    else:
        items["offset"] = damage
    arrays["manifest"] = np.array(json.dumps(manifest))
    with open(sidecar, "wb") as fh:
        np.savez(fh, **arrays)
    with raises_naming(SolverError, state, "layer 'data'"):
        engine.get_solver(str(solver_path)).restore(state)


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_history_of_other_shapes_is_refused(tmp_path, fmt):
    """Caffe's FromProto would reshape the history to the file's shapes and train on with
    them; crema refuses a state whose history does not fit the parameters."""
    solver_path, model, state = snapshot(tmp_path, fmt)
    if fmt == "HDF5":
        with h5py.File(state, "r+") as fh:
            del fh["history/0"]
            fh["history/0"] = np.zeros((3, 2), np.float32)
    else:
        msg = crema_pb2.SolverState()
        msg.ParseFromString(open(state, "rb").read())
        del msg.history[0].shape.dim[:]
        msg.history[0].shape.dim.extend([3, 2])
        open(state, "wb").write(msg.SerializeToString())
    solver = engine.get_solver(solver_path)
    with raises_naming(SolverError, state, "history blob 0 has shape (3, 2)", "(2, 3)"):
        solver.restore(state)
    assert solver.iter == 0


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_history_of_another_solver_type_is_refused(tmp_path, fmt):
    """sgd_solver.cpp:334 and :356: Incorrect length of history blobs."""
    _, _, state = snapshot(tmp_path, fmt)  # momentum SGD: one history blob per parameter
    adam = engine.get_solver(solver_file(tmp_path, 'net: "@NET@" type: "Adam"', "adam.prototxt"))
    with raises_naming(SolverError, state, "Incorrect length of history blobs", "holds 2",
                       "needs 4"):
        adam.restore(state)


def test_hdf5_state_without_history_is_refused(tmp_path):
    """sgd_solver.cpp:354: Error reading history."""
    solver_path, _, state = snapshot(tmp_path, "HDF5")
    with h5py.File(state, "r+") as fh:
        del fh["history"]
    with raises_naming(SolverError, state, "no group 'history'"):
        engine.get_solver(solver_path).restore(state)


@pytest.mark.parametrize("learned_net", [None, ""])
@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_state_with_empty_or_missing_learned_net_is_refused(tmp_path, fmt, learned_net):
    solver_path, _, state = snapshot(tmp_path, fmt)
    if fmt == "HDF5":
        with h5py.File(state, "r+") as fh:
            del fh["learned_net"]
            if learned_net is not None:
                fh["learned_net"] = np.bytes_(b"")
    else:
        msg = crema_pb2.SolverState()
        msg.ParseFromString(open(state, "rb").read())
        msg.ClearField("learned_net")
        if learned_net is not None:
            msg.learned_net = learned_net
        open(state, "wb").write(msg.SerializeToString())
    solver = engine.get_solver(solver_path)
    with raises_naming(SolverError, state, "learned_net is empty or missing"):
        solver.restore(state)
    assert solver.iter == 0


def test_state_whose_learned_net_is_not_utf8_is_refused_naming_it(tmp_path):
    """A path of bytes that are not UTF-8 is looked for as those bytes, as Caffe opens it."""
    solver_path, _, state = snapshot(tmp_path)
    msg = crema_pb2.SolverState()
    msg.ParseFromString(open(state, "rb").read())
    raw = bytearray(msg.SerializeToString())
    name = msg.learned_net.encode()
    at = raw.index(name) + len(name) - 1
    raw[at] = 0xFF  # the last byte of the weights' name
    open(state, "wb").write(bytes(raw))
    with raises_naming(SolverError, state, "learned_net", "not found"):
        engine.get_solver(solver_path).restore(state)


# -- weights -------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["truncated", "garbage"])
@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_damaged_weights_are_refused_naming_the_file(tmp_path, suffix, how):
    net = engine.Net(NET, engine.TEST)
    path = str(tmp_path / f"w{suffix}")
    net.save(path)
    corrupt(path, how)
    before = [b.data.copy() for b in net.learnable_params]
    with raises_naming(WeightsError, path):
        net.copy_from(path)
    with raises_naming(WeightsError, path):
        engine.Net(NET, engine.TEST, weights=path)
    for b, data in zip(net.learnable_params, before):
        np.testing.assert_array_equal(b.data, data)


def _length_delimited(field, payload):
    return bytes([(field << 3) | 2, len(payload)]) + payload


def test_v1_weights_with_a_name_that_is_not_utf8_are_refused(tmp_path):
    """A V1 `layers` entry (NetParameter field 2) whose name (V1LayerParameter field 4) holds
    bytes that are not UTF-8: the upgrade to V2 cannot name the layer."""
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(_length_delimited(1, b"n") + _length_delimited(2, _length_delimited(
        4, b"\xff\xfebad")))
    net = engine.Net(NET, engine.TEST)
    with raises_naming(WeightsError, path, "not valid UTF-8"):
        net.copy_from(str(path))


def test_v1_net_file_with_a_name_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "v1.prototxt"
    path.write_bytes(b'name: "v1"\ninput: "x"\ninput_dim: 1\ninput_dim: 2\n'
                     b'layers {\n  name: "r\xffelu"\n  type: RELU\n  bottom: "x"\n  top: "x"\n}\n')
    with raises_naming(PrototxtError, f"{path}:6", "invalid UTF-8"):
        engine.Net(str(path), engine.TEST)


# -- command-line flags ----------------------------------------------------------------------------
def _int_flags():
    from engine.cli import FLAGS
    return sorted(name for name, (kind, _, _) in FLAGS.items() if kind == "int")


@pytest.mark.parametrize("value", ["2147483648", "-2147483649", "99999999999999999999"])
@pytest.mark.parametrize("flag", _int_flags())
def test_integer_flags_out_of_int32_range_are_refused(flag, value):
    """gflags' int32 flags refuse a value that does not fit, as `caffe` does."""
    from engine.cli import UsageError, parse_args
    with pytest.raises(UsageError, match=rf"-{flag}: value {value} is out of range"):
        parse_args(["train", f"-{flag}", value])
    # the bounds themselves are values
    for edge in ("2147483647", "-2147483648"):
        assert getattr(parse_args(["train", f"-{flag}={edge}"])[2], flag) == int(edge)


@pytest.mark.parametrize("value", ["1_000", " 12", "1.5", "\u0661\u0662", "", "0x", "-0x10"])
def test_integer_flags_take_what_gflags_parses(value):
    """Decimal with an optional sign, or hex after 0x (strtoll); not Python's wider int()."""
    from engine.cli import UsageError, parse_args
    with pytest.raises(UsageError, match="-iterations needs an integer"):
        parse_args(["test", "-iterations", value])
    assert parse_args(["test", "-iterations=0x10"])[2].iterations == 16
    assert parse_args(["test", "-iterations=+7"])[2].iterations == 7


@pytest.mark.parametrize("command", ["train", "test"])
def test_empty_weights_entry_is_refused(tmp_path, capsys, command):
    from engine.cli import main
    solver = solver_file(tmp_path, 'net: "@NET@"')
    args = (["train", "-solver", solver] if command == "train"
            else ["test", "-model", str(tmp_path / "net.prototxt")])
    assert main(args + ["-weights", "a.caffemodel,,b.caffemodel"]) == 2
    assert "-weights has an empty entry in 'a.caffemodel,,b.caffemodel'" in capsys.readouterr().err


# -- sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("where, edit", [
    ("input", ("dim: 4 dim: 3", "dim: 65536 dim: 32768")),
    ("parameter", ("num_output: 2", "num_output: 1073741824")),
])
def test_blob_over_int_max_elements_is_refused_at_build_time(tmp_path, where, edit):
    """Caffe's Blob::Reshape CHECKs count <= INT_MAX; crema refuses before allocating."""
    path = tmp_path / "big.prototxt"
    path.write_text(NET.replace(*edit))
    layer = {"input": "'data' (type DummyData)", "parameter": "'ip' (type InnerProduct)"}[where]
    with raises_naming(CremaError, path, layer, "more than Caffe's limit of 2147483647"):
        engine.Net(str(path), engine.TEST)
