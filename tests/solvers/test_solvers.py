"""Solvers against independent numpy implementations of Caffe's update formulas, plus the
training loop's schedule (tests, display, smoothed loss), net construction and errors."""
import io
import logging
import os
import re

import numpy as np
import pytest
from google.protobuf import text_format

import engine
from engine import crema_pb2
from engine.errors import CremaError, SolverError
from engine.logs import GlogFormatter, install_glog_format
from engine.solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                            RMSPropSolver, SGDSolver, get_solver, solver_type_list)

# A 3 -> 2 InnerProduct with EuclideanLoss; data from DummyData (gaussian, redrawn every pass).
# The bias has lr_mult 2 and decay_mult 0.5.
NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  include { phase: TRAIN }
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "gaussian" std: 1 } } }
layer { name: "data" type: "DummyData" top: "x" top: "y"
  include { phase: TEST }
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "constant" value: 0.5 }
                     data_filler { type: "constant" value: -0.25 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0.5 }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "constant" value: 0.1 } } }
layer { name: "copy" type: "Power" bottom: "out" top: "out_copy" include { phase: TEST } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""

LR_MULT = (1.0, 2.0)
DECAY_MULT = (1.0, 0.5)

PARSE_LOG = {  # the regexes of Caffe's tools/extra/parse_log.py
    "iteration": re.compile(r"Iteration (\d+)"),
    "train": re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)"),
    "test": re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)"),
    "lr": re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)"),
}


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    # solve() snapshots after training; without snapshot_prefix Caffe 1.0 writes "_iter_N.*" in
    # the working directory
    monkeypatch.chdir(tmp_path)


def solver_text(extra, net=NET):
    return f"net_param {{ {net} }}\nrandom_seed: 1701\n{extra}"


def recording(solver):
    """Record the (x, y) batch of every training forward pass."""
    batches = []
    layer = solver.net.layer_dict["data"]
    original = layer.forward

    def forward(bottom, top):
        original(bottom, top)
        batches.append((top[0].data.astype(np.float64), top[1].data.astype(np.float64)))
    layer.forward = forward
    return batches


# -- an independent implementation of Caffe's SGD family ---------------------------------------
def euclidean_grads(W, b, x, y):
    out = x @ W.T + b
    d = (out - y) / x.shape[0]
    return d.T @ x, d.sum(axis=0), float(((out - y) ** 2).sum() / (2 * x.shape[0]))


def reference_run(cfg, W0, b0, batches, iters):
    kind = cfg["type"]
    iter_size = cfg.get("iter_size", 1)
    params = [W0.astype(np.float64), b0.astype(np.float64)]
    state = {k: [np.zeros_like(p) for p in params] for k in ("a", "b")}
    losses = []
    for it in range(iters):
        grads = [np.zeros_like(p) for p in params]
        loss = 0.0
        for k in range(iter_size):
            x, y = batches[it * iter_size + k]
            gW, gb, l = euclidean_grads(params[0], params[1], x, y)
            grads[0] += gW
            grads[1] += gb
            loss += l
        losses.append(loss / iter_size)
        if cfg.get("lr_policy", "fixed") == "step":
            rate = cfg["base_lr"] * cfg["gamma"] ** (it // cfg["stepsize"])
        else:
            rate = cfg["base_lr"]
        clip = cfg.get("clip_gradients", -1)
        if clip >= 0:
            norm = np.sqrt(sum(float((g * g).sum()) for g in grads))
            if norm > clip:
                grads = [g * (clip / norm) for g in grads]
        grads = [g / iter_size for g in grads]
        wd = cfg.get("weight_decay", 0.0)
        for i, p in enumerate(params):
            decay = wd * DECAY_MULT[i]
            if cfg.get("regularization_type", "L2") == "L2":
                grads[i] = grads[i] + decay * p
            else:
                grads[i] = grads[i] + decay * np.sign(p)
        mom = cfg.get("momentum", 0.0)
        delta = cfg.get("delta", 1e-8)
        for i, p in enumerate(params):
            g, lr = grads[i], rate * LR_MULT[i]
            a, b = state["a"][i], state["b"][i]
            if kind == "SGD":
                a[...] = mom * a + lr * g
                step = a.copy()
            elif kind == "Nesterov":
                old = a.copy()
                a[...] = mom * a + lr * g
                step = a + mom * (a - old)
            elif kind == "AdaGrad":
                a += g ** 2
                step = lr * g / (np.sqrt(a) + delta)
            elif kind == "RMSProp":
                decay = cfg["rms_decay"]
                a[...] = decay * a + (1 - decay) * g ** 2
                step = lr * g / (np.sqrt(a) + delta)
            elif kind == "AdaDelta":
                a[...] = mom * a + (1 - mom) * g ** 2
                u = g * np.sqrt((b + delta) / (a + delta))
                b[...] = mom * b + (1 - mom) * u ** 2
                step = lr * u
            elif kind == "Adam":
                b1, b2 = mom, cfg.get("momentum2", 0.999)
                a[...] = b1 * a + (1 - b1) * g
                b[...] = b2 * b + (1 - b2) * g ** 2
                t = it + 1
                step = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * a / (np.sqrt(b) + delta)
            params[i] = p - step
    return params, losses


def config_text(cfg):
    lines = []
    for key, value in cfg.items():
        if isinstance(value, str):
            lines.append(f'{key}: "{value}"')
        else:
            lines.append(f"{key}: {value!r}")
    return "\n".join(lines)


CONFIGS = {
    "sgd_momentum_l2_step": dict(type="SGD", base_lr=0.1, momentum=0.9, weight_decay=0.01,
                                 lr_policy="step", gamma=0.5, stepsize=2, iter_size=2),
    "sgd_l1_clip": dict(type="SGD", base_lr=0.2, momentum=0.5, weight_decay=0.02,
                        regularization_type="L1", clip_gradients=0.05, lr_policy="fixed"),
    "nesterov": dict(type="Nesterov", base_lr=0.05, momentum=0.9, weight_decay=0.005,
                     lr_policy="fixed", iter_size=2),
    "adagrad": dict(type="AdaGrad", base_lr=0.1, weight_decay=0.001, lr_policy="fixed",
                    iter_size=2),
    "rmsprop": dict(type="RMSProp", base_lr=0.01, rms_decay=0.9, weight_decay=0.001,
                    lr_policy="fixed", iter_size=2, delta=1e-6),
    "adadelta": dict(type="AdaDelta", base_lr=1.0, momentum=0.95, delta=1e-6,
                     weight_decay=0.001, lr_policy="fixed", iter_size=2),
    "adam": dict(type="Adam", base_lr=0.01, momentum=0.9, momentum2=0.999, weight_decay=0.001,
                 lr_policy="step", gamma=0.5, stepsize=3, iter_size=2, clip_gradients=1.0),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_update_rules_match_reference(name, caplog):
    cfg = CONFIGS[name]
    iters = 5
    solver = get_solver(solver_text(config_text(cfg)))
    assert type(solver).type == cfg["type"]
    W0 = solver.net.params["ip"][0].data.copy()
    b0 = solver.net.params["ip"][1].data.copy()
    batches = recording(solver)
    losses = []
    solver.add_callback(on_gradients_ready=lambda: losses.append(float(solver.iteration_loss)))
    with caplog.at_level(logging.INFO, logger="crema"):
        solver.step(iters)
    assert solver.iter == iters
    assert len(batches) == iters * cfg.get("iter_size", 1)
    (W, b), ref_losses = reference_run(cfg, W0, b0, batches, iters)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, W, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(solver.net.params["ip"][1].data, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert not np.allclose(W, W0)  # it did train
    if cfg.get("clip_gradients", -1) >= 0:
        assert re.search(r"Gradient clipping: scaling down gradients \(L2 norm \S+ > \S+\) by "
                         r"scale factor \S+", caplog.text)


def test_classes_and_registry():
    assert solver_type_list() == ["AdaDelta", "AdaGrad", "Adam", "Nesterov", "RMSProp", "SGD"]
    text = solver_text('base_lr: 0.1 lr_policy: "fixed" type: "Adam"')
    assert type(SGDSolver(text)) is SGDSolver  # the class decides, as in pycaffe
    assert type(get_solver(text)) is AdamSolver
    for cls, n_history in [(NesterovSolver, 2), (AdaGradSolver, 2), (RMSPropSolver, 2),
                           (AdaDeltaSolver, 4), (AdamSolver, 4)]:
        s = cls(text)
        assert len(s.history) == n_history
        assert [h.shape for h in s.history[:2]] == [(2, 3), (2,)]
    legacy = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed" solver_type: NESTEROV'))
    assert type(legacy) is NesterovSolver


def test_lr_mult_zero_freezes_parameter():
    net = NET.replace("param { lr_mult: 2 decay_mult: 0.5 }", "param { lr_mult: 0 }")
    solver = get_solver(solver_text('base_lr: 0.5 lr_policy: "fixed" momentum: 0.9', net))
    b0 = solver.net.params["ip"][1].data.copy()
    W0 = solver.net.params["ip"][0].data.copy()
    solver.step(3)
    np.testing.assert_array_equal(solver.net.params["ip"][1].data, b0)
    assert not np.allclose(solver.net.params["ip"][0].data, W0)


def test_smoothed_loss_window():
    solver = get_solver(solver_text('base_lr: 0.05 lr_policy: "fixed" average_loss: 3'))
    seen = []

    def grab():
        seen.append((solver.net.loss, float(solver.smoothed_loss)))
    # before_update: the smoothed loss takes the iteration's loss after on_gradients_ready (where
    # a synchronous group replaces it with the group's mean)
    solver.add_callback(before_update=grab)
    solver.step(7)
    losses = [l for l, _ in seen]
    for k, (_, smoothed) in enumerate(seen):
        window = losses[max(0, k - 2):k + 1]
        assert smoothed == pytest.approx(np.mean(window), rel=1e-5)
    # Caffe restarts the window at every step() call
    seen.clear()
    solver.step(1)
    assert seen[0][1] == pytest.approx(seen[0][0], rel=1e-6)


def test_callbacks_order_and_hook_sees_accumulated_gradients():
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed" iter_size: 2'))
    events = []
    batches = recording(solver)

    def on_gradients_ready():
        # after both passes, before normalization and the update
        W = solver.net.params["ip"][0].data.astype(np.float64)
        b = solver.net.params["ip"][1].data.astype(np.float64)
        expected = sum(euclidean_grads(W, b, x, y)[0] for x, y in batches[-2:])
        np.testing.assert_allclose(solver.net.params["ip"][0].diff, expected, rtol=1e-5)
        events.append(("ready", len(batches)))
    solver.add_callback(lambda: events.append(("start", len(batches))), on_gradients_ready)
    solver.step(2)
    assert events == [("start", 0), ("ready", 2), ("start", 2), ("ready", 4)]


def test_test_nets_and_schedule(caplog):
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9\n'
                                    'test_iter: 2 test_interval: 2 test_compute_loss: true\n'
                                    'display: 1 max_iter: 4'))
    assert len(solver.test_nets) == 1
    test_net = solver.test_nets[0]
    assert [l.name for l in test_net.layers if l.type == "Power"] == ["copy"]
    assert "copy" not in solver.net.layer_dict
    with caplog.at_level(logging.INFO, logger="crema"):
        solver.solve()
    assert sorted(os.listdir(".")) == ["_iter_4.caffemodel", "_iter_4.solverstate",
                                       "_iter_4.solverstate.crema"]
    logged = caplog.text  # what solve() logged (the extra test below may log too)
    tested = [int(m) for m in re.findall(r"Iteration (\d+), Testing net \(#0\)", logged)]
    assert tested == [0, 2, 4]
    assert "Test loss:" in caplog.text
    # the final values, against the weights now (test nets share them)
    W = solver.net.params["ip"][0].data.astype(np.float64)
    b = solver.net.params["ip"][1].data.astype(np.float64)
    assert test_net.params["ip"][0].data is solver.net.params["ip"][0].data
    x = np.full((4, 3), 0.5)
    y = np.full((4, 2), -0.25)
    out = x @ W.T + b
    expected_loss = ((out - y) ** 2).sum() / 8
    result = solver.test(0)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(result["out_copy"], out, rtol=1e-5)
    assert float(solver.test_loss) == pytest.approx(expected_loss, rel=1e-5)
    lines = logged.splitlines()
    test_lines = [PARSE_LOG["test"].search(l) for l in lines]
    test_lines = [m for m in test_lines if m]
    # one line per output element: loss (1) + out_copy (8), numbered 0..8, for each of 3 tests
    assert len(test_lines) == 9 * 3
    assert sorted({int(m.group(1)) for m in test_lines}) == list(range(9))
    assert re.search(r"Test net output #\d+: loss = \S+ \(\* 1 = \S+ loss\)", logged)


def test_test_initialization_false_and_display(caplog):
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed" test_iter: 1 '
                                    'test_interval: 3 test_initialization: false display: 2'))
    with caplog.at_level(logging.INFO, logger="crema"):
        solver.step(5)
    assert re.findall(r"Iteration (\d+), Testing net", caplog.text) == ["3"]
    displayed = re.findall(r"Iteration (\d+) \(\S+ iter/s, \S+s/2 iters\), loss = \S+",
                           caplog.text)
    assert displayed == ["0", "2", "4"]
    assert re.findall(r"Iteration (\d+), lr = 0.1\b", caplog.text) == ["0", "2", "4"]


def test_log_lines_match_parse_log(caplog):
    solver = get_solver(solver_text('base_lr: 0.001 lr_policy: "inv" gamma: 0.0001 power: 0.75 '
                                    'display: 1 test_iter: 1 test_interval: 2 max_iter: 2 '
                                    'snapshot_after_train: false'))
    with caplog.at_level(logging.INFO, logger="crema"):
        solver.solve()
    lines = caplog.text.splitlines()
    train = [m for m in map(PARSE_LOG["train"].search, lines) if m]
    lrs = [m for m in map(PARSE_LOG["lr"].search, lines) if m]
    tests = [m for m in map(PARSE_LOG["test"].search, lines) if m]
    assert [(m.group(1), m.group(2)) for m in train] == [("0", "loss"), ("0", "loss")]
    assert len(lrs) == 2 and float(lrs[1].group(1)) == pytest.approx(
        0.001 * (1 + 0.0001) ** -0.75, rel=1e-5)
    float(train[0].group(3)), float(tests[0].group(3))  # the values parse as numbers
    assert any("Optimization Done." in l for l in lines)
    assert re.search(r"Iteration 2, loss = \S+", caplog.text)
    assert "Solving tiny" in caplog.text and "Learning Rate Policy: inv" in caplog.text


def test_multistep_logged_and_current_step(caplog):
    solver = get_solver(solver_text('base_lr: 1 lr_policy: "multistep" gamma: 0.1 '
                                    'stepvalue: 1 stepvalue: 3'))
    with caplog.at_level(logging.INFO, logger="crema"):
        solver.step(4)
    assert solver.current_step == 2
    assert re.findall(r"MultiStep Status: Iteration (\d+), step = (\d+)", caplog.text) == \
        [("1", "1"), ("3", "2")]


def test_action_request_stop_and_snapshot(tmp_path, caplog):
    prefix = tmp_path / "run"
    solver = get_solver(solver_text(f'base_lr: 0.1 lr_policy: "fixed" max_iter: 10 '
                                    f'snapshot_prefix: "{prefix}"'))
    requests = iter(["none", "snapshot", "none", "stop"])
    solver.action_request = lambda: next(requests, "none")
    with caplog.at_level(logging.INFO, logger="crema"):
        solver.solve()
    assert solver.iter == 4 and solver.requested_early_exit
    assert "Optimization stopped early." in caplog.text
    assert "Optimization Done." not in caplog.text
    names = sorted(os.listdir(tmp_path))
    assert "run_iter_2.caffemodel" in names and "run_iter_4.solverstate" in names
    solver.action_request = lambda: "bogus"
    with pytest.raises(SolverError, match="bogus"):
        solver.step(1)


def test_stop_requested_during_test_interrupts(caplog):
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed" test_iter: 3 '
                                    'test_interval: 1'))
    solver.action_request = iter(["none", "none", "stop"] + ["none"] * 10).__next__
    with caplog.at_level(logging.INFO, logger="crema"):
        solver.step(5)
    # polled before each of the 3 test batches: the stop comes before the third one
    assert "Test interrupted." in caplog.text
    assert solver.iter == 0 and solver.requested_early_exit
    assert not re.search(r"Test net output", caplog.text)


def test_train_and_test_state(tmp_path):
    net = """
    name: "staged"
    layer { name: "in" type: "DummyData" top: "x" top: "y"
      dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
      inner_product_param { num_output: 2 } }
    layer { name: "extra" type: "Power" bottom: "out" top: "p" include { stage: "deep" } }
    layer { name: "low" type: "Power" bottom: "out" top: "q" include { max_level: 0 } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
    """
    text = (f'net_param {{ {net} state {{ stage: "deep" }} }} base_lr: 0.1 lr_policy: "fixed" '
            'train_state { level: 2 } test_iter: 1 test_iter: 1 test_interval: 10 '
            'test_state { } test_state { stage: "x" level: 0 }')
    solver = get_solver(text)
    names = lambda n: [l.name for l in n.layers]
    assert "extra" in names(solver.net) and "low" not in names(solver.net)
    assert len(solver.test_nets) == 2
    assert solver.test_nets[0].phase == engine.TEST
    assert "extra" in names(solver.test_nets[1]) and "low" in names(solver.test_nets[1])


def test_net_file_relative_to_solver_file(tmp_path, monkeypatch, caplog):
    models = tmp_path / "models"
    models.mkdir()
    (models / "net.prototxt").write_text(NET)
    (models / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\ntest_iter: 1\ntest_interval: 5\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with caplog.at_level(logging.INFO, logger="crema"):
        solver = get_solver(str(models / "solver.prototxt"))
    assert solver.solver_path == str(models / "solver.prototxt")
    assert len(solver.test_nets) == 1
    assert "relative to the solver file" in caplog.text
    # Caffe's rule first: a file that exists relative to the working directory wins
    monkeypatch.chdir(models)
    solver = get_solver("solver.prototxt")
    assert solver.net.name == "tiny"


def test_missing_net_file_names_both_paths(tmp_path, monkeypatch):
    (tmp_path / "solver.prototxt").write_text('net: "nope/net.prototxt"\nbase_lr: 0.1\n')
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(SolverError) as info:
        get_solver(str(tmp_path / "solver.prototxt"))
    message = str(info.value)
    assert os.path.join(str(tmp_path.parent), "nope", "net.prototxt") in message
    assert os.path.join(str(tmp_path), "nope", "net.prototxt") in message


@pytest.mark.parametrize("text, message", [
    ('base_lr: 0.1 type: "Bogus"', "Unknown solver type: Bogus"),
    ('base_lr: 0.1 train_net: "a.prototxt"', "more than one"),
    ('type: "AdaGrad" momentum: 0.9', "Momentum cannot be used with AdaGrad"),
    ('type: "RMSProp" momentum: 0.9', "Momentum cannot be used with RMSProp"),
    ('type: "RMSProp" rms_decay: 1.0', "rms_decay should lie between 0 and 1"),
    ('weight_decay: 0.1 regularization_type: "L3"', "Unknown regularization type: L3"),
    ("test_iter: 1", "test_interval"),
    ("test_state { } test_iter: 1 test_iter: 1 test_interval: 1", "test_state"),
    ("average_loss: 0", "average_loss"),
    ("iter_size: 0", "iter_size"),
    ("snapshot: 10", "snapshot_prefix"),
    ('snapshot: 10 snapshot_prefix: "/nonexistent/dir/x"', "Cannot write to snapshot prefix"),
])
def test_bad_solver_definitions(text, message):
    with pytest.raises(SolverError, match=re.escape(message)):
        get_solver(solver_text(text))


def test_no_net_and_test_iter_mismatch():
    with pytest.raises(SolverError, match="must specify a train net"):
        get_solver('base_lr: 0.1')
    with pytest.raises(SolverError, match="test_iter must be specified for each test network"):
        get_solver(f'train_net_param {{ {NET} }} test_net_param {{ {NET} }}')


def test_unknown_lr_policy_fails_at_first_update():
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "cosine"'))
    with pytest.raises(SolverError, match="Unknown learning rate policy"):
        solver.step(1)


def test_bad_solver_text_is_a_crema_error():
    with pytest.raises(CremaError):
        get_solver("base_lr: [")


def test_glog_format():
    stream = io.StringIO()
    logger = logging.getLogger("crema.test_glog")
    logger.propagate = False
    handler = install_glog_format(logger, stream)
    assert install_glog_format(logger, stream) is handler  # not twice
    try:
        logger.info("Iteration 5, lr = 0.01")
        logger.warning("careful")
        logger.error("bad\nsecond line")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    pattern = r"^%s\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ test_solvers\.py:\d+\] %s$"
    assert re.match(pattern % ("I", re.escape("Iteration 5, lr = 0.01")), lines[0])
    assert re.match(pattern % ("W", "careful"), lines[1])
    assert re.match(pattern % ("E", "bad"), lines[2]) and lines[3] == "second line"
    assert PARSE_LOG["lr"].search(lines[0]).group(1) == "0.01"
    record = logging.LogRecord("x", logging.CRITICAL, "f.py", 1, "m", None, None)
    assert GlogFormatter().format(record).startswith("F")


def test_before_update_hook_sees_the_steps_before_they_are_applied():
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9'))
    seen = []

    def before_update():
        w = solver.net.params["ip"][0]
        seen.append((w.data.copy(), w.diff.copy()))
    solver.add_callback(before_update=before_update)
    solver.step(2)
    assert len(seen) == 2
    # the data has not moved yet when the hook runs, and it then moves by exactly the step
    np.testing.assert_array_equal(seen[1][0], seen[0][0] - seen[0][1])
    np.testing.assert_array_equal(solver.net.params["ip"][0].data, seen[1][0] - seen[1][1])


@pytest.mark.parametrize("extra", ['weight_decay: 0.01', 'weight_decay: 0.01 '
                                   'regularization_type: "L1"', 'iter_size: 3', ''])
def test_native_sgd_update_gives_the_numpy_rule_floats(extra, monkeypatch):
    """Plain SGD runs as one native pass over the arena; it must give the numpy rule's floats,
    bit for bit, whether it subtracts the step itself (apply) or leaves it to the caller."""
    param = text_format.Parse(f'type: "SGD" base_lr: 0.1 momentum: 0.9 {extra}',
                              crema_pb2.SolverParameter())
    rng = np.random.default_rng(11)
    n = 5000
    scale = np.float32(10.0) ** rng.integers(-5, 2, n).astype(np.float32)
    data0 = rng.standard_normal(n).astype(np.float32) * scale
    diffs = [rng.standard_normal(n).astype(np.float32) * scale for _ in range(3)]
    lr_mult = rng.choice([0.0, 1.0, 2.0], n).astype(np.float32)
    decay_mult = rng.choice([0.0, 1.0, 0.5], n).astype(np.float32)

    def run(apply):
        data, history = data0.copy(), np.zeros(n, np.float32)
        steps = []
        for it, d in enumerate(diffs):
            diff = d.copy()
            if not SGDSolver.compute_update(param, data, diff, [history], lr_mult, decay_mult,
                                            np.float32(0.01), it, apply=apply):
                data -= diff
            steps.append(diff)
        return data, history, steps

    native = [run(True), run(False)]
    monkeypatch.setenv("CREMA_KERNELS", "reference")  # the numpy rule
    data, history, steps = run(True)
    for got in native:
        np.testing.assert_array_equal(got[0].view(np.uint32), data.view(np.uint32))
        np.testing.assert_array_equal(got[1].view(np.uint32), history.view(np.uint32))
        for mine, theirs in zip(got[2], steps):
            np.testing.assert_array_equal(mine.view(np.uint32), theirs.view(np.uint32))


def test_non_finite_gradient_stops_before_the_update():
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9'))
    before = [p.data.copy() for p in solver.net.params["ip"]]

    def poison():
        solver.net.params["ip"][1].diff[1] = np.float32(np.inf)
    solver.add_callback(on_gradients_ready=poison)
    with pytest.raises(SolverError, match=r"Iteration 0: training diverged \(loss = [\d.e+-]+\); "
                                          r"the first non-finite values are in the diff of "
                                          r"parameter 1 of layer 'ip' \(InnerProduct\)"):
        solver.step(1)
    for param, old in zip(solver.net.params["ip"], before):
        np.testing.assert_array_equal(param.data, old)  # nothing applied


NAN_NET = NET.replace(
    'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"',
    'layer { name: "root" type: "Power" bottom: "x" top: "xr" power_param { power: 0.5 } }\n'
    'layer { name: "ip" type: "InnerProduct" bottom: "xr" top: "out"')


def test_non_finite_loss_stops_naming_iteration_and_first_layer():
    # sqrt of gaussian inputs: the negative half turns into NaN in the Power layer's top
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed"', net=NAN_NET))
    before = solver.net.params["ip"][0].data.copy()
    with pytest.raises(SolverError, match=r"Iteration 0: training diverged \(loss = nan\); the "
                                          r"first non-finite values are in the top 'xr' of layer "
                                          r"'root' \(Power\)"):
        solver.step(3)
    np.testing.assert_array_equal(solver.net.params["ip"][0].data, before)  # nothing applied
    solver.check_finite = False
    solver.step(2)
    assert solver.iter == 2 and np.isnan(solver.net.params["ip"][0].data).all()


def test_overflowing_loss_names_the_loss_layer():
    solver = get_solver(solver_text('base_lr: 0.1 lr_policy: "fixed"'))
    solver.net.params["ip"][1].data[...] = np.float32(3e38)  # finite outputs, the loss overflows
    with pytest.raises(SolverError, match=r"Iteration 0: training diverged \(loss = inf\); the "
                                          r"first non-finite values are in the top 'loss' of "
                                          r"layer 'loss' \(EuclideanLoss\)"):
        with np.errstate(over="ignore"):
            solver.step(1)
