"""The installed `crema` command, run as a subprocess the way a user runs it (cwd = a temp folder).

One small training run (module fixture) feeds the train, resume, weights, test, time and
parse_log tests; a Python layer that sleeps makes a slower net for the signal tests.
"""
import csv
import glob
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

CREMA = shutil.which("crema")

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  include { phase: TRAIN not_stage: "const" }
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "data" type: "DummyData" top: "data" top: "label"
  include { phase: TRAIN stage: "const" }
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 1 } } }
layer { name: "data" type: "DummyData" top: "data" top: "label" include { phase: TEST }
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
base_lr: 0.05 lr_policy: "step" gamma: 0.5 stepsize: 10 momentum: 0.9 weight_decay: 0.001
max_iter: {max_iter} display: 5 test_interval: 10 test_iter: 2
snapshot: {snapshot} snapshot_prefix: "snap/tiny" random_seed: 3
"""

SLEEP_LAYER = """import time
import engine


class Sleep(engine.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        time.sleep(0.004)
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff
"""

SLOW_NET = """name: "slow"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "sleep" type: "Python" bottom: "data" top: "slept"
  python_param { module: "sleep_layer" layer: "Sleep" } }
layer { name: "ip" type: "InnerProduct" bottom: "slept" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

SLOW_SOLVER = """net: "net.prototxt"
type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed"
max_iter: {max_iter} display: 10 test_interval: 40 test_iter: 1 snapshot: 0
snapshot_prefix: "slow" random_seed: 11
"""

ITER_LINE = re.compile(r"Iteration (\d+) \(.* iter/s, .*s/\d+ iters\), loss = ")
GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


def crema(args, cwd, timeout=120, env=None):
    assert CREMA, "the `crema` console script is not installed (pip install -e .)"
    return subprocess.run([CREMA] + [str(a) for a in args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert "Traceback" not in res.stderr


def assert_error(res, *fragments):
    """Exit status 2 and one line `crema: error: ...` naming every fragment, no traceback."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, f"exit {res.returncode}: {res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("crema: error: "), res.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_tiny(folder, max_iter=20, snapshot=10):
    (folder / "net.prototxt").write_text(NET)
    (folder / "solver.prototxt").write_text(
        SOLVER.replace("{max_iter}", str(max_iter)).replace("{snapshot}", str(snapshot)))
    (folder / "snap").mkdir(exist_ok=True)


def read_model(path):
    """{layer name: [arrays]} of a .caffemodel, read with crema's own proto module."""
    from engine import crema_pb2
    net = crema_pb2.NetParameter()
    net.ParseFromString(open(path, "rb").read())
    return {lp.name: [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in lp.blobs]
            for lp in net.layer if lp.blobs}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 20-iteration run of the tiny net: (folder, completed process)."""
    folder = tmp_path_factory.mktemp("train")
    write_tiny(folder)
    res = crema(["train", "-solver", "solver.prototxt"], folder)
    assert_ok(res)
    (folder / "train.log").write_text(res.stderr)
    return folder, res


# --- train ---------------------------------------------------------------------------------

def test_train_logs_like_caffe_and_snapshots(trained):
    folder, res = trained
    log = res.stderr
    iters = [int(m.group(1)) for m in ITER_LINE.finditer(log)]
    assert iters[:4] == [0, 5, 10, 15], iters
    for needle in ("Train net output #0: loss = ", "Test net output #0: loss = ", "lr = ",
                   "Snapshotting to binary proto file", "Starting Optimization",
                   "Optimization Done."):
        assert needle in log, needle
    assert log.count("Starting Optimization") == 1
    assert log.count("Optimization Done.") == 1
    assert log.rstrip().endswith("Optimization Done.")
    # glog lines (multi-line messages, such as the solver parameters, continue without a prefix)
    for line in log.splitlines():
        if re.search(r"Iteration \d+|net output #|Optimization|Snapshotting|lr = ", line):
            assert GLOG.match(line), line
    for it in (10, 20):
        for ext in ("caffemodel", "solverstate"):
            assert (folder / "snap" / f"tiny_iter_{it}.{ext}").is_file()
    # the learning rate follows the step policy: 0.05, then 0.025 from iteration 10
    lrs = [float(x) for x in re.findall(r"lr = ([0-9.e+-]+)", log)]
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.025)


def test_resume_from_snapshot_matches_uninterrupted_run(trained, tmp_path):
    folder, _ = trained
    write_tiny(tmp_path)
    for path in (folder / "snap").glob("tiny_iter_10.*"):  # with crema's .solverstate.crema
        shutil.copy(path, tmp_path / "snap")
    res = crema(["train", "-solver", "solver.prototxt", "-snapshot",
                 "snap/tiny_iter_10.solverstate"], tmp_path)
    assert_ok(res)
    assert "Resuming from snap/tiny_iter_10.solverstate" in res.stderr
    iters = [int(m.group(1)) for m in ITER_LINE.finditer(res.stderr)]
    assert iters and iters[0] == 10 and 0 not in iters
    resumed = (tmp_path / "snap" / "tiny_iter_20.caffemodel").read_bytes()
    assert resumed == (folder / "snap" / "tiny_iter_20.caffemodel").read_bytes()


def test_weights_finetune_into_train_and_test_nets(trained, tmp_path):
    folder, _ = trained
    write_tiny(tmp_path, max_iter=0, snapshot=0)
    weights = folder / "snap" / "tiny_iter_20.caffemodel"
    res = crema(["train", "-solver", "solver.prototxt", "-weights", weights], tmp_path)
    assert_ok(res)
    # with max_iter 0 the snapshot after training holds the start of finetuning: the weights
    start = read_model(tmp_path / "snap" / "tiny_iter_0.caffemodel")
    given = read_model(weights)
    assert start.keys() == given.keys() == {"ip"}
    for a, b in zip(start["ip"], given["ip"]):
        np.testing.assert_array_equal(a, b)
    # the test net got them too: its (constant-data) loss equals what `crema test` reports
    train_test_loss = re.findall(r"Test net output #0: loss = ([0-9.e+-]+)", res.stderr)
    scored = crema(["test", "-model", "net.prototxt", "-weights", weights, "-iterations", 2],
                   tmp_path)
    assert_ok(scored)
    test_loss = re.findall(r"\] loss = ([0-9.e+-]+) \(\* 1 = ", scored.stderr)
    assert train_test_loss and test_loss
    assert float(train_test_loss[-1]) == pytest.approx(float(test_loss[0]), rel=1e-5)


def test_stage_and_solver_folder(tmp_path):
    """-stage reaches the train net (its "const" data layer replaces the random one), and the net
    file named relative to the solver's folder is found from another working directory."""
    (tmp_path / "sub").mkdir()
    write_tiny(tmp_path / "sub", max_iter=0, snapshot=0)
    (tmp_path / "snap").mkdir()
    res = crema(["train", "-solver", "sub/solver.prototxt", "-stage", "const,other"], tmp_path)
    assert_ok(res)
    train_loss = re.search(r"Iteration 0, loss = ([0-9.e+-]+)", res.stderr).group(1)
    test_loss = re.search(r"Test net output #0: loss = ([0-9.e+-]+)", res.stderr).group(1)
    assert train_loss == test_loss  # both nets now see the same constant data
    assert (tmp_path / "snap" / "tiny_iter_0.caffemodel").is_file()
    res = crema(["train", "-solver", "sub/solver.prototxt"], tmp_path)
    assert_ok(res)
    assert re.search(r"Iteration 0, loss = ([0-9.e+-]+)", res.stderr).group(1) != train_loss


def test_threads_flag(trained):
    folder, _ = trained
    res = crema(["device_query", "-threads", "1"], folder)
    assert_ok(res)
    assert re.search(r"Threads: +1\b", res.stderr), res.stderr
    res = crema(["test", "-threads=1", "-model", "net.prototxt", "-weights",
                 "snap/tiny_iter_20.caffemodel", "-iterations", "1"], folder)
    assert_ok(res)
    assert "Loss: " in res.stderr
    assert_error(crema(["device_query", "-threads", "0"], folder), "-threads")


def test_weights_and_snapshot_together_is_an_error(trained):
    folder, _ = trained
    res = crema(["train", "-solver", "solver.prototxt", "-weights", "snap/tiny_iter_10.caffemodel",
                 "-snapshot", "snap/tiny_iter_10.solverstate"], folder)
    assert_error(res, "snapshot", "weights", "not both")


# --- test, time, device_query ----------------------------------------------------------------

def test_test_command_prints_batches_and_means(trained):
    folder, _ = trained
    res = crema(["test", "-model", "net.prototxt", "-weights", "snap/tiny_iter_20.caffemodel",
                 "-iterations", "3"], folder)
    assert_ok(res)
    batches = re.findall(r"Batch (\d+), loss = ([0-9.e+-]+)", res.stderr)
    assert [int(b) for b, _ in batches] == [0, 1, 2]
    mean = float(re.search(r"\] loss = ([0-9.e+-]+) \(\* 1 = ([0-9.e+-]+) loss\)",
                           res.stderr).group(1))
    assert mean == pytest.approx(np.mean([float(v) for _, v in batches]), rel=1e-5)
    assert float(re.search(r"Loss: ([0-9.e+-]+)", res.stderr).group(1)) == pytest.approx(mean,
                                                                                        rel=1e-5)
    assert "\r" not in res.stderr  # no progress bar when stderr is not a terminal


def test_test_command_progress_bar_on_a_terminal(trained):
    folder, _ = trained
    master, slave = pty.openpty()
    proc = subprocess.Popen([CREMA, "test", "-model", "net.prototxt", "-weights",
                             "snap/tiny_iter_20.caffemodel", "-iterations", "3"],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    assert "3/3" in text and "\r[" in text and "Loss: " in text


def test_time_command(trained):
    folder, _ = trained
    res = crema(["time", "-model", "net.prototxt", "-iterations", "3"], folder)
    assert_ok(res)
    log = res.stderr
    for name in ("data", "ip", "loss"):
        assert re.search(rf"\] +{name}\tforward: [0-9.e+-]+ ms\.", log), name
        assert re.search(rf"\] +{name}\tbackward: [0-9.e+-]+ ms\.", log), name
    for needle in ("Average Forward pass: ", "Average Backward pass: ",
                   "Average Forward-Backward: ", "Total Time: ", "*** Benchmark ends ***"):
        assert needle in log, needle
    assert len(re.findall(r"Iteration: \d forward-backward time: ", log)) == 3
    # InnerProduct work is counted (2 * 4 * 3 * 2 flops forward); data and loss layers are not
    assert re.search(r"ip\tforward: [0-9.e+-]+ ms\. \([0-9.e+-]+ GFLOP/s", log)
    assert not re.search(r"loss\tforward: .*GFLOP/s", log)
    import engine.kernels
    if hasattr(engine.kernels, "peak_gflops"):  # the share of the CPU's measured peak
        assert re.search(r"ip\tforward: [0-9.e+-]+ ms\. \([0-9.e+-]+ GFLOP/s, [0-9.e+-]+% of peak\)",
                         log)
        assert re.search(r"Peak: [0-9.e+-]+ GFLOP/s \(", log)


def test_time_precision(trained):
    """-precision reaches the timed net (it was once accepted and ignored)."""
    folder, _ = trained
    res = crema(["time", "-model", "net.prototxt", "-iterations", "2", "-precision", "bf16"],
                folder)
    assert_ok(res)
    assert "Precision: bf16" in res.stderr
    res = crema(["time", "-model", "net.prototxt", "-iterations", "2", "-precision", "fp8"],
                folder)
    assert res.returncode != 0 and "flag -precision takes fp32 or bf16, got 'fp8'" in res.stderr


def test_time_flop_counts():
    import engine
    from engine.cli import layer_flops
    net = engine.Net("""name: "f"
        layer { name: "in" type: "Input" top: "x" top: "t"
          input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 5 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
          convolution_param { num_output: 4 kernel_size: 3 group: 1 } }
        layer { name: "deconv" type: "Deconvolution" bottom: "c" top: "d"
          convolution_param { num_output: 6 kernel_size: 2 stride: 2 group: 2 } }
        layer { name: "ip" type: "InnerProduct" bottom: "d" top: "y" inner_product_param { num_output: 5 } }
        layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
        layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "l" }
        """, engine.TRAIN)
    conv_f, conv_b = layer_flops(net, 1)
    assert conv_f == 2 * (2 * 4 * 6 * 6) * (3 * 3 * 3)  # top values x (C_in x k x k)
    assert conv_b == conv_f  # weight gradient only: the input needs none
    deconv_f, deconv_b = layer_flops(net, 2)
    assert deconv_f == 2 * (2 * 4 * 6 * 6) * (3 * 2 * 2)  # bottom values x (C_out/group x k x k)
    assert deconv_b == 2 * deconv_f  # weight and bottom gradients
    ip_f, _ = layer_flops(net, 3)
    assert ip_f == 2 * 2 * (6 * 12 * 12) * 5
    assert layer_flops(net, 4) == (0.0, 0.0)


def test_device_query():
    res = crema(["device_query"], os.getcwd())
    assert_ok(res)
    import engine.kernels
    info = engine.kernels.cpu_info()
    assert f"Logical cores:                 {info['logical_cores']}" in res.stderr
    assert f"ISA in use:                    {info['isa']}" in res.stderr
    assert "CPU vendor:" in res.stderr and "CPU model:" in res.stderr
    if hasattr(engine, "get_num_threads"):
        assert re.search(rf"Threads: +{engine.get_num_threads()}\n", res.stderr)


# --- extras ----------------------------------------------------------------------------------

def test_parse_log_writes_caffe_style_csv(trained, tmp_path):
    folder, _ = trained
    res = crema(["parse_log", folder / "train.log", tmp_path], tmp_path)
    assert_ok(res)
    with open(tmp_path / "train.log.train") as fh:
        train = list(csv.reader(fh))
    with open(tmp_path / "train.log.test") as fh:
        test = list(csv.reader(fh))
    assert train[0] == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert test[0] == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert [int(r[0]) for r in train[1:]] == [0, 5, 10, 15]
    assert [int(r[0]) for r in test[1:]] == [0, 10, 20]
    seconds = [float(r[1]) for r in train[1:]]
    assert seconds == sorted(seconds) and seconds[0] >= 0
    assert [float(r[2]) for r in train[1:]] == pytest.approx([0.05, 0.05, 0.025, 0.025])
    log_losses = [float(x) for x in re.findall(r"Train net output #0: loss = ([0-9.e+-]+)",
                                               (folder / "train.log").read_text())]
    assert [float(r[3]) for r in train[1:]] == pytest.approx(log_losses)


def test_parse_log_reads_a_caffe_log(tmp_path):
    caffe_log = """I0101 10:00:00.000000  1 solver.cpp:48] Initializing solver from parameters:
I0101 10:00:01.000000  1 solver.cpp:280] Solving LeNet
I0101 10:00:01.500000  1 solver.cpp:337] Iteration 0, Testing net (#0)
I0101 10:00:02.000000  1 solver.cpp:404]     Test net output #0: accuracy = 0.1
I0101 10:00:02.000000  1 solver.cpp:404]     Test net output #1: loss = 2.3 (* 1 = 2.3 loss)
I0101 10:00:02.250000  1 solver.cpp:228] Iteration 0, loss = 2.31
I0101 10:00:02.250000  1 solver.cpp:244]     Train net output #0: loss = 2.31 (* 1 = 2.31 loss)
I0101 10:00:02.250000  1 sgd_solver.cpp:106] Iteration 0, lr = 0.01
I0101 10:00:12.250000  1 solver.cpp:228] Iteration 100, loss = 0.25
I0101 10:00:12.250000  1 solver.cpp:244]     Train net output #0: loss = 0.25 (* 1 = 0.25 loss)
I0101 10:00:12.250000  1 sgd_solver.cpp:106] Iteration 100, lr = 0.0099
"""
    (tmp_path / "caffe.log").write_text(caffe_log)
    assert_ok(crema(["parse_log", "caffe.log", "."], tmp_path))
    train = list(csv.reader(open(tmp_path / "caffe.log.train")))
    test = list(csv.reader(open(tmp_path / "caffe.log.test")))
    # A row's rate is the one printed for its iteration ("Iteration 100, lr = 0.0099" follows
    # the outputs of iteration 100; Caffe's script would give that row the previous rate).
    assert train == [["NumIters", "Seconds", "LearningRate", "loss"],
                     ["0", "1.25", "0.01", "2.31"],
                     ["100", "11.25", "0.0099", "0.25"]]
    assert test == [["NumIters", "Seconds", "LearningRate", "accuracy", "loss"],
                    ["0", "1.0", "0.01", "0.1", "2.3"]]


def test_plot(trained, tmp_path):
    folder, _ = trained
    probe = subprocess.run([sys.executable, "-c", "import matplotlib"], capture_output=True)
    res = crema(["plot", folder / "train.log", "curves.png", "--x", "seconds"], tmp_path)
    if probe.returncode == 0:
        assert_ok(res)
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert_error(res, "matplotlib", "pip install matplotlib")


def test_plot_without_matplotlib(trained, tmp_path):
    """A `matplotlib` that fails to import stands for a missing one."""
    folder, _ = trained
    stub = tmp_path / "stub" / "matplotlib"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "stub"))
    res = crema(["plot", folder / "train.log", "out.png"], tmp_path, env=env)
    assert_error(res, "pip install matplotlib")


def test_draw_dot_and_rendering(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET.replace('name: "tiny"', 'name: "tiny \\"net\\""'))
    res = crema(["draw", "net.prototxt", "net.dot", "--rankdir", "TB", "--phase", "TEST"],
                tmp_path)
    assert_ok(res)
    dot = (tmp_path / "net.dot").read_text()
    assert dot.startswith('digraph "tiny \\"net\\"" {') and "rankdir=TB;" in dot
    assert dot.count("(DummyData)") == 1  # only the TEST data layer
    assert '"blob_data" -> "layer1_data_DummyData"' not in dot
    assert re.search(r'"layer\d_ip_InnerProduct" -> "blob_ip"', dot)
    assert '"blob_label" -> "layer4_loss_EuclideanLoss"' in dot
    assert 'fillcolor="#CC33FF"' in dot  # InnerProduct colour, as Caffe's draw_net
    # rendering runs Graphviz `dot`: a stand-in records its arguments and input
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text('#!/bin/sh\necho "$@" > args.txt\ncat > input.dot\n'
                              'for a; do out="$a"; done\necho "<svg/>" > "$out"\n')
    (fake / "dot").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert_ok(crema(["draw", "net.prototxt", "net.svg"], tmp_path, env=env))
    assert (tmp_path / "net.svg").read_text() == "<svg/>\n"
    assert (tmp_path / "args.txt").read_text().startswith("-Tsvg -o ")
    assert "rankdir=LR;" in (tmp_path / "input.dot").read_text()
    # without `dot` on PATH: one line naming the program
    no_dot = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                             if p and not os.access(os.path.join(p, "dot"), os.X_OK))
    res = crema(["draw", "net.prototxt", "other.png"], tmp_path, env=dict(os.environ, PATH=no_dot))
    assert_error(res, "'dot'", "Graphviz")
    assert not (tmp_path / "other.png").exists()


# --- usage and errors ------------------------------------------------------------------------

def test_usage_help_and_version(tmp_path):
    for args in ([], ["help"], ["--help"]):
        res = crema(args, tmp_path)
        assert_ok(res)
        for command in ("train", "test", "time", "device_query", "parse_log", "plot", "draw"):
            assert f"\n  {command} " in res.stdout
    res = crema(["help", "train"], tmp_path)
    assert_ok(res)
    assert res.stdout.startswith("usage: crema train [flags]")
    assert "-sigint_effect" in res.stdout and "-model" not in res.stdout
    import engine
    res = crema(["--version"], tmp_path)
    assert_ok(res)
    assert res.stdout.strip() == f"crema {engine.__version__}"


def test_error_paths(tmp_path):
    assert_error(crema(["frobnicate"], tmp_path), "unknown command 'frobnicate'")
    assert_error(crema(["train", "-solver", "missing/solver.prototxt"], tmp_path),
                 "missing/solver.prototxt")
    assert_error(crema(["train", "-solvr=s.prototxt"], tmp_path), "unknown flag -solvr")
    assert_error(crema(["train"], tmp_path), "-solver")
    assert_error(crema(["test", "-model", "net.prototxt", "-iterations", "x"], tmp_path),
                 "-iterations", "'x'")
    assert_error(crema(["test", "-solver", "s.prototxt"], tmp_path), "does not take -solver")
    assert_error(crema(["train", "-solver"], tmp_path), "-solver needs a value")
    assert_error(crema(["time", "-gpu", "0", "-model", "m"], tmp_path), "GPU")
    (tmp_path / "bad_solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.1\n'
                                                  'max_iter: ten\n')
    assert_error(crema(["train", "-solver", "bad_solver.prototxt"], tmp_path),
                 "bad_solver.prototxt:3:")
    (tmp_path / "bad_net.prototxt").write_text('name: "x"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    (tmp_path / "w.caffemodel").write_bytes(b"")
    assert_error(crema(["test", "-model", "bad_net.prototxt", "-weights", "w.caffemodel"],
                       tmp_path), "bad_net.prototxt:4:")
    assert_error(crema(["train", "-solver", "s", "-sigint_effect", "explode"], tmp_path),
                 "explode")
    # -debug shows the traceback as well
    res = crema(["train", "-solver", "bad_solver.prototxt", "-debug"], tmp_path)
    assert res.returncode == 2 and "Traceback" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("crema: error: ")


def test_flag_forms(trained):
    folder, _ = trained
    for form in (["-iterations=1"], ["--iterations", "1"], ["--iterations=1"], ["-iterations", "1"]):
        res = crema(["test", "-model=net.prototxt", "--weights", "snap/tiny_iter_20.caffemodel"]
                    + form, folder)
        assert_ok(res)
        assert "Running for 1 iterations." in res.stderr


# --- signals ---------------------------------------------------------------------------------

def _start_slow(folder, max_iter, extra=()):
    folder.mkdir(exist_ok=True)
    (folder / "net.prototxt").write_text(SLOW_NET)
    (folder / "sleep_layer.py").write_text(SLEEP_LAYER)
    (folder / "solver.prototxt").write_text(SLOW_SOLVER.replace("{max_iter}", str(max_iter)))
    log = open(folder / "train.log", "w")
    proc = subprocess.Popen([CREMA, "train", "-solver", "solver.prototxt", *extra], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    return proc


def _wait_for(predicate, proc, what, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _last_iteration(folder):
    found = re.findall(r"Iteration (\d+) \(", (folder / "train.log").read_text())
    return int(found[-1]) if found else -1


def test_sigint_snapshot_then_kill_resumes_bit_identically(tmp_path):
    max_iter = 300
    ref = _start_slow(tmp_path / "ref", max_iter)
    folder = tmp_path / "run"
    proc = _start_slow(folder, max_iter, ["-sigint_effect", "snapshot"])
    _wait_for(lambda: _last_iteration(folder) >= 50, proc, "iteration 50")
    proc.send_signal(signal.SIGINT)
    state = _wait_for(lambda: glob.glob(str(folder / "slow_iter_*.solverstate")), proc,
                      "the snapshot that SIGINT asks for")
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run should still have been going"
    assert len(state) == 1
    snap_iter = int(re.search(r"_iter_(\d+)\.solverstate$", state[0]).group(1))
    assert 50 <= snap_iter < max_iter
    res = crema(["train", "-solver", "solver.prototxt", "-snapshot", os.path.basename(state[0])],
                folder)
    assert_ok(res)
    assert ref.wait(timeout=120) == 0
    final = f"slow_iter_{max_iter}.caffemodel"
    assert (folder / final).read_bytes() == (tmp_path / "ref" / final).read_bytes()


def test_sighup_snapshots_and_sigint_stops(tmp_path):
    folder = tmp_path / "run"
    proc = _start_slow(folder, 2000)  # default effects: SIGHUP snapshot, SIGINT stop
    _wait_for(lambda: _last_iteration(folder) >= 20, proc, "iteration 20")
    proc.send_signal(signal.SIGHUP)
    first = _wait_for(lambda: glob.glob(str(folder / "slow_iter_*.solverstate")), proc,
                      "the snapshot that SIGHUP asks for")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    log = (folder / "train.log").read_text()
    assert "Optimization stopped early" in log and "Optimization Done." in log
    states = sorted(glob.glob(str(folder / "slow_iter_*.solverstate")))
    iters = sorted(int(re.search(r"_iter_(\d+)\.", s).group(1)) for s in states)
    assert len(iters) == 2 and 20 <= iters[0] < iters[1] < 2000, iters
    assert first[0] in states


# -- convert / compute_mean ---------------------------------------------------------------------
def _write_class_folder(root):
    from PIL import Image
    g = np.random.default_rng(8)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(g.integers(0, 256, (4, 6, 3), dtype=np.uint8)).save(root / cls / f"{k}.png")


def test_convert_and_compute_mean_commands(tmp_path):
    from engine import crema_pb2
    from engine.data import lmdb_io
    from engine.io import blobproto_to_array
    _write_class_folder(tmp_path / "imgs")
    res = crema(["convert", "-input", "imgs", "-output", "db", "-resize_height", "3",
                 "-resize_width", "2", "-shuffle"], tmp_path)
    assert_ok(res)
    assert "db: 4 records" in res.stdout and "label 1: b" in res.stderr
    assert "\r[" not in res.stderr  # no progress bar when stderr is not a terminal
    arrays = [lmdb_io.datum_to_array(d) for _, d in lmdb_io.read_datums(tmp_path / "db")]
    assert all(a.shape == (3, 3, 2) for a in arrays)
    res = crema(["compute_mean", "-input", "db", "-output", "mean.binaryproto"], tmp_path)
    assert_ok(res)
    want = np.mean(arrays, axis=0)
    blob = crema_pb2.BlobProto()
    blob.ParseFromString((tmp_path / "mean.binaryproto").read_bytes())
    mean = blobproto_to_array(blob)
    assert mean.shape == (1, 3, 3, 2)
    np.testing.assert_allclose(mean[0], want, rtol=1e-6)
    for c in range(3):
        assert f"mean_value channel [{c}]: {want[c].mean():.6g}" in res.stdout
    res = crema(["convert", "-input", "imgs", "-output", "d.h5", "-backend", "hdf5", "-gray"],
                tmp_path)
    assert_ok(res)
    import h5py
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["data"].shape == (4, 1, 4, 6)


def test_convert_progress_bar_on_a_terminal(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2, 2), np.uint8))
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([CREMA, "convert", "-input", "x.npy", "-output", "db"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        slave = None
        err = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    assert b"3/3" in err and b"\r[" in err


def test_convert_and_compute_mean_errors(tmp_path):
    assert_error(crema(["convert", "-input", "x.npy"], tmp_path), "needs -output")
    assert_error(crema(["convert", "-input", "none", "-output", "o"], tmp_path), "'none'",
                 "does not exist")
    np.save(tmp_path / "x.npy", np.zeros((3, 2, 2), np.uint8))
    assert_error(crema(["convert", "-input", "x.npy", "-output", "o", "-backend", "leveldb"],
                       tmp_path), "-backend must be lmdb or hdf5")
    assert_ok(crema(["convert", "-input", "x.npy", "-output", "o"], tmp_path))
    assert_error(crema(["convert", "-input", "x.npy", "-output", "o"], tmp_path), "already exists")
    assert_error(crema(["compute_mean", "-input", "missing", "-output", "m"], tmp_path),
                 "does not exist")
    assert_error(crema(["compute_mean", "-input", "o", "-output", "m", "-shuffle"], tmp_path),
                 "does not take -shuffle")
    assert not (tmp_path / "m").exists()


def test_train_stops_on_divergence_unless_told_not_to(tmp_path):
    write_tiny(tmp_path, max_iter=6, snapshot=0)
    solver = (tmp_path / "solver.prototxt").read_text().replace("base_lr: 0.05", "base_lr: 1e30")
    (tmp_path / "solver.prototxt").write_text(solver)
    res = crema(["train", "-solver", "solver.prototxt"], tmp_path)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert last.startswith("crema: error: ") and "training diverged" in last, last
    assert re.search(r"Iteration [1-5]: training diverged", last), last
    assert "layer 'ip' (InnerProduct)" in last or "layer 'loss' (EuclideanLoss)" in last, last
    res = crema(["train", "-solver", "solver.prototxt", "-check_finite=false"], tmp_path)
    assert_ok(res)


def test_integer_flags_are_range_checked_as_gflags_does(capsys):
    from engine.cli import main
    assert main(["test", "-model", "m.prototxt", "-iterations", "99999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert "-iterations" in err and "out of range" in err


def test_empty_weights_entry_is_refused(capsys, tmp_path):
    from engine.cli import main
    assert main(["test", "-model", "m.prototxt", "-weights", "a.caffemodel,,b.caffemodel"]) == 2
    assert "-weights has an empty entry" in capsys.readouterr().err
