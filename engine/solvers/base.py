"""Caffe's Solver: builds the train and test nets from a SolverParameter, runs the training loop
(Step/Solve), tests, snapshots and restores. The update rules live in updates.py.

Construction (Caffe's Solver::Init), from a solver file path, prototxt text or a SolverParameter:
- the legacy `solver_type` enum is upgraded to `type`;
- average_loss >= 1 and iter_size >= 1; `snapshot` > 0 needs a writable `snapshot_prefix`;
- random_seed >= 0 seeds engine.rng before any net is built; solver_mode is accepted (crema runs
  on CPUs);
- the train net comes from exactly one of net, net_param, train_net, train_net_param; its NetState
  is phase TRAIN, then the net's own `state`, then `train_state` (protobuf merge: later wins,
  stages add up);
- test nets: test_net_param entries, then test_net files, then (with a general net/net_param) one
  instance of the general net per remaining test_iter entry; each is phase TEST, then the net's
  state, then test_state[i]. test_iter must count the test nets (Caffe's rules); test nets need
  test_interval > 0. Test nets share the train net's parameters by layer name (Caffe's
  ShareTrainedLayersWith, redone before every test);
- `weights` (comma-separated files, Caffe master) are copied into every net ("Finetuning from").
Net file paths are relative to the working directory, as in Caffe; when a relative path does not
exist there but does beside the solver file, that one is used (and logged). A missing file is a
SolverError naming every path tried.

The loop (Caffe's Solver::Step), per iteration:
  clear parameter diffs -> test (every test_interval iterations; at 0 only with
  test_initialization) -> on_start callbacks -> iter_size forward/backward passes (losses averaged,
  diffs accumulate) -> smoothed loss over the last average_loss iterations -> display -> the
  non-finite check (solver.check_finite) -> on_gradients_ready callbacks -> ApplyUpdate (lr,
  clip, normalize, regularize, update rule, before_update callbacks, data -= diff) ->
  iter += 1 -> snapshot every `snapshot` iterations -> the action request.

Action requests (Caffe's SolverAction): `solver.action_request` may be a callable returning
"none", "stop" or "snapshot" (the CLI sets it from SIGINT/SIGHUP handlers). It is polled once per
iteration, after the update: "snapshot" snapshots and continues; "stop" sets requested_early_exit
and leaves the loop. During a test it is polled before every test batch until it answers "none"
(so it should report each request once): "snapshot" snapshots, "stop" interrupts the test ("Test
interrupted.") and then training. A snapshot requested during a test is taken at the end of that
training iteration instead (Caffe takes it at once), so that resuming from it is exact. solve() after a stop still writes the final snapshot when
snapshot_after_train is set (and none was written at that iteration), logs "Optimization stopped
early." and returns without the final display and test - exactly Caffe's order.

Smoothed loss: Caffe restarts the average_loss window at every step() call. crema does too,
except after restore() of a state written by crema: the window saved with the snapshot is
carried into the next step(), so a resumed run logs the same smoothed losses as an uninterrupted
one.
"""
import abc
import logging
import os
import time

import numpy as np
from google.protobuf import text_format

from .. import crema_pb2, kernels, rng
from ..data.sharding import ShardMismatchError
from ..bf16 import PRECISIONS
from ..errors import CremaError, SolverError
from ..layer import TRAIN, TEST
from ..net import Net
from ..schema import read_net_param, read_solver_param
from ..upgrade import solver_needs_upgrade, upgrade_solver_param
from . import snapshot as snap
from .lr_policy import check_policy, learning_rate
from .hooks import CallbackHooks, HookList

_SOLVERS = {}
_ACTIONS = ("none", "stop", "snapshot")


def register_solver(type_name):
    """Class decorator: make `type_name` (SolverParameter.type) build this class."""
    def decorate(cls):
        if type_name in _SOLVERS:
            raise ValueError(f"solver type {type_name!r} registered twice")
        cls.type = type_name
        _SOLVERS[type_name] = cls
        return cls
    return decorate


def solver_type_list():
    return sorted(_SOLVERS)


def solver_class(type_name):
    """The registered class for SolverParameter.type `type_name`."""
    cls = _SOLVERS.get(type_name)
    if cls is None:
        raise SolverError(f"Unknown solver type: {type_name} (known types: "
                          f"{', '.join(solver_type_list())})")
    return cls


def _read_param(source):
    param, src = read_solver_param(source)
    if solver_needs_upgrade(param):
        param = upgrade_solver_param(param, src.label)
    return param, src


def get_solver(solver, *, log=None, solver_path=None):
    """The solver that `solver` (a path, prototxt text or SolverParameter) asks for with its
    `type` (default "SGD"), as pycaffe's get_solver and Caffe's SolverRegistry. `solver_path`
    names the file an edited SolverParameter came from (for messages and paths beside it)."""
    param, source = _read_param(solver)
    try:
        cls = solver_class(param.type)
    except SolverError as exc:
        raise SolverError(f"{solver_path or source.label}: {exc}") from None
    return cls(solver, log=log, solver_path=solver_path)


def _due(interval, previous, current):
    """Whether a multiple of `interval` lies in (previous, current]: Caffe's `iter % interval ==
    0` when iterations advance one at a time, and still right when they jump (a parameter server
    counts the updates of every group)."""
    return interval > 0 and current // interval > previous // interval


def _g(value):
    """A number as C++'s ostream prints a float (%g, 6 significant digits)."""
    return f"{float(value):g}"


class Solver(abc.ABC):
    """The solver-independent part of Caffe's Solver. Attributes (pycaffe's and more):
    param (SolverParameter), net (the train Net), test_nets (list of Net), iter, current_step,
    history (list of float32 arrays: the update rule's per-parameter state, saved in snapshots),
    smoothed_loss, solver_path (the solver file or None), requested_early_exit, action_request,
    log (the logging.Logger used; default the "crema" logger)."""

    type = None
    history_sets = 1  # history arrays per learnable parameter (AdaDelta and Adam keep two)

    def __init__(self, solver, *, log=None, solver_path=None):
        self.log = log if log is not None else logging.getLogger("crema")
        param, source = read_solver_param(solver)
        self.solver_path = solver_path or source.path
        self._label = solver_path or source.label
        if solver_needs_upgrade(param):
            self.log.info("Attempting to upgrade input file specified using deprecated "
                          "'solver_type' field (enum)': %s", self._label)
            param = upgrade_solver_param(param, self._label)
            self.log.info("Successfully upgraded file specified using deprecated 'solver_type' "
                          "field (enum) to 'type' field (string).")
            self.log.warning("Note that future Caffe releases will only support 'type' field "
                             "(string) for a solver's type.")
        self.param = param
        self.log.info("Initializing solver from parameters: \n%s",
                      text_format.MessageToString(param).rstrip("\n"))
        self._check_common()
        self.check_param()
        self._check_snapshot_write_permissions()
        if param.random_seed >= 0:
            rng.set_random_seed(param.random_seed)
        mode = crema_pb2.SolverParameter.SolverMode.Name(param.solver_mode)
        self.log.info("solver_mode %s: crema runs on CPUs", mode)

        self.hooks = HookList()  # SolverHooks objects (hooks.py); add_callback/add_hooks add
        self._hooks_started = False
        self.global_iter = None  # set by a hook that receives the iteration from elsewhere
        self.data_rank = None  # this process's rank in a parallel job (picks its data position)
        self.rank_layer_states = None  # every rank's layer_states(), gathered for a snapshot
        self.check_finite = True  # stop on a NaN/Inf loss or gradient (see _check_finite)
        self.action_request = None
        self._deferred_snapshot = False  # a snapshot requested during a test
        self.requested_early_exit = False
        self.test_loss = None  # the last test's mean loss, with test_compute_loss
        self.net = None
        self.test_nets = []
        self._init_train_net()
        self._init_test_nets()
        if param.precision not in PRECISIONS:
            raise SolverError(f"{self._label}: precision must be one of "
                              f"{', '.join(PRECISIONS)}, got {param.precision!r}")
        self.set_precision(param.precision)
        self.log.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = np.float32(0)
        self._losses, self._loss_origin, self._pending_window = [], 0, None
        self._iterations_last = 0
        self._timer = time.perf_counter()
        self._check_regularization()
        # The update rule's state, laid out like the parameter arena (one flat buffer per
        # history set); `history` holds per-parameter views for snapshots and pycaffe.
        arena = self.net.arena
        self.history_buffers = [arena.zeros() for _ in range(self.history_sets)]
        self.history = [view for buf in self.history_buffers for view in arena.views(buf)]

    # -- checks -----------------------------------------------------------------------------
    def _check_common(self):
        p = self.param
        if p.average_loss < 1:
            raise SolverError(f"{self._label}: average_loss should be >= 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise SolverError(f"{self._label}: iter_size should be >= 1, got {p.iter_size}")

    def check_param(self):
        """The update rule's own parameter checks (Caffe's constructor_sanity_check)."""

    def _check_snapshot_write_permissions(self):
        p = self.param
        if not p.snapshot:
            return
        if not p.HasField("snapshot_prefix"):
            raise SolverError(f"{self._label}: In solver params, snapshot is specified but "
                              "snapshot_prefix is not")
        # one probe name per process: the ranks of a parallel job probe the same prefix at once
        probe = snap.snapshot_filename(p.snapshot_prefix, 0, f".tempfile.{os.getpid()}")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError:
            raise SolverError(f"{self._label}: Cannot write to snapshot prefix "
                              f"'{p.snapshot_prefix}'. Make sure that the directory exists and is "
                              "writeable.") from None

    def _check_regularization(self):
        p = self.param
        if p.regularization_type in ("L1", "L2"):
            return
        if p.weight_decay and any(m for m in self.net.params_weight_decay):
            raise SolverError(f"{self._label}: Unknown regularization type: "
                              f"{p.regularization_type} (use \"L2\" or \"L1\")")

    # -- nets -------------------------------------------------------------------------------
    def _resolve(self, path, what):
        """`path` as Caffe opens it (relative to the working directory); failing that, relative
        to the solver file's directory."""
        tried = [path]
        if os.path.exists(path):
            return path
        if not os.path.isabs(path) and self.solver_path:
            beside = os.path.join(os.path.dirname(os.path.abspath(self.solver_path)), path)
            tried.append(beside)
            if os.path.exists(beside):
                self.log.info("%s '%s' is not in the working directory; using %s (relative to the "
                              "solver file %s)", what, path, beside, self.solver_path)
                return beside
        raise SolverError(f"{self._label}: {what} '{path}' not found; tried "
                          + " and ".join(os.path.abspath(t) for t in tried))

    def _build_net(self, model, phase, extra_state=None):
        """A Net from a path or NetParameter with Caffe's NetState precedence: the solver's phase,
        then the net's own state, then the solver's train_state/test_state."""
        net_param = read_net_param(model)[0] if isinstance(model, str) else model
        state = crema_pb2.NetState(phase=phase)
        state.MergeFrom(net_param.state)
        if extra_state is not None:
            state.MergeFrom(extra_state)
        try:
            return Net(model, state.phase, level=state.level, stages=list(state.stage))
        except CremaError as exc:
            if self._label not in str(exc):  # the net's own file is named; name the solver too
                exc.args = (f"{self._label}: {exc}",) + exc.args[1:]
            raise

    def _init_train_net(self):
        p = self.param
        fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        names = "net, net_param, train_net, train_net_param"
        if not fields:
            raise SolverError(f"{self._label}: SolverParameter must specify a train net using one "
                              f"of these fields: {names}")
        if len(fields) > 1:
            raise SolverError(f"{self._label}: SolverParameter must not contain more than one of "
                              f"these fields specifying a train_net: {names} (it sets "
                              f"{' and '.join(fields)})")
        field = fields[0]
        if field.endswith("_param"):
            self.log.info("Creating training net specified in %s.", field)
            model = getattr(p, field)
        else:
            path = getattr(p, field)
            self.log.info("Creating training net from %s file: %s", field, path)
            model = self._resolve(path, f"{field} file")
        self.net = self._build_net(model, TRAIN, p.train_state)
        self._load_weights(self.net)

    def _init_test_nets(self):
        p = self.param
        generic = p.HasField("net_param") + p.HasField("net")
        n_specific = len(p.test_net_param) + len(p.test_net)
        n_iter = len(p.test_iter)
        if generic and n_iter < n_specific or not generic and n_iter != n_specific:
            raise SolverError(f"{self._label}: test_iter must be specified for each test network "
                              f"({n_iter} test_iter values for {n_specific} test_net/"
                              "test_net_param entries)")
        n_total = n_specific + (n_iter - n_specific if generic else 0)
        if len(p.test_state) and len(p.test_state) != n_total:
            raise SolverError(f"{self._label}: test_state must be unspecified or specified once "
                              f"per test net ({len(p.test_state)} test_state for {n_total} test "
                              "nets)")
        if n_total and p.test_interval <= 0:
            raise SolverError(f"{self._label}: test nets need test_interval > 0, got "
                              f"{p.test_interval}")
        sources = []
        for net_param in p.test_net_param:
            sources.append(("test_net_param", net_param))
        for path in p.test_net:
            sources.append((f"test_net file: {path}", self._resolve(path, "test_net file")))
        for _ in range(n_total - n_specific):
            if p.HasField("net_param"):
                sources.append(("net_param", p.net_param))
            else:
                sources.append((f"net file: {p.net}", self._resolve(p.net, "net file")))
        self.test_nets = []
        for i, (label, model) in enumerate(sources):
            self.log.info("Creating test net (#%d) specified by %s", i, label)
            net = self._build_net(model, TEST, p.test_state[i] if len(p.test_state) else None)
            self._load_weights(net)
            net.share_with(self.net)
            self.test_nets.append(net)

    def _load_weights(self, net):
        for entry in self.param.weights:
            for name in entry.split(","):
                name = name.strip()
                self.log.info("Finetuning from %s", name)
                net.copy_from(self._resolve(name, "weights file"))

    # -- callbacks and requests -------------------------------------------------------------
    def add_callback(self, on_start=None, on_gradients_ready=None, before_update=None):
        """pycaffe's add_callback, plus one hook: on_start() runs at the start of every
        iteration (after the test, before the forward passes); on_gradients_ready() after the
        backward passes of all iter_size batches, before clipping, normalization, regularization
        and the update; before_update() once the update rule has turned every diff into the step
        to subtract, just before `data -= diff`. For every hook point see add_hooks."""
        self.hooks.add(CallbackHooks(on_start, on_gradients_ready, before_update))

    def add_hooks(self, hooks):
        """Add a SolverHooks object (engine/solvers/hooks.py: on_init, on_start,
        on_gradients_ready, apply_update, before_update, after_update, on_test, on_snapshot,
        on_display); returns it."""
        return self.hooks.add(hooks)

    def _check_finite(self, loss):
        """Stop with a SolverError when the loss or a parameter gradient is NaN/Inf, naming the
        iteration and the first layer (in forward order) whose top data or parameter diff is
        non-finite. The cheap test (the loss, and one native pass over the diff arena) runs every
        iteration; the layer-by-layer search only once something is wrong."""
        if np.isfinite(loss) and kernels.all_finite(self.net.arena.diff):
            return
        net = self.net
        culprit = "no layer's top or parameter diff (the loss weights?)"
        for name, layer, tops in zip(net._layer_names, net.layers, net._top_blobs):
            bad_top = next((t for t, blob in zip(net.top_names[name], tops)
                            if not np.all(np.isfinite(blob.data))), None)
            if bad_top is not None:
                culprit = f"the top '{bad_top}' of layer '{name}' ({layer.type})"
                break
            bad_param = next((i for i, blob in enumerate(layer.blobs)
                              if not np.all(np.isfinite(blob.diff))), None)
            if bad_param is not None:
                culprit = f"the diff of parameter {bad_param} of layer '{name}' ({layer.type})"
                break
        raise SolverError(f"Iteration {self.iter}: training diverged (loss = {float(loss):g}); "
                          f"the first non-finite values are in {culprit}. Lower base_lr or "
                          "check the data; set solver.check_finite = False (crema train "
                          "-check_finite=false) to train on regardless")

    def set_precision(self, precision):
        """The train and test nets' Convolution/InnerProduct arithmetic: "fp32" or "bf16"
        (engine/bf16.py; the solver's master weights and update stay float32)."""
        for net in [self.net] + list(self.test_nets):
            net.set_precision(precision)
        if precision != "fp32":
            self.log.info("Precision %s: convolutions and inner products in bf16 with float32 "
                          "accumulation", precision)
        self.precision = precision

    def share_weights(self, net):
        """Make `net` use the train net's parameters by layer name (pycaffe's share_weights)."""
        net.share_with(self.net)

    def _requested_action(self):
        if self.action_request is None:
            return "none"
        action = self.action_request()
        action = "none" if action is None else str(action).lower()
        if action not in _ACTIONS:
            raise SolverError(f"action_request returned {action!r}; expected one of "
                              f"{', '.join(_ACTIONS)}")
        return action

    # -- training ---------------------------------------------------------------------------
    def step(self, iters):
        """Run `iters` training iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        average_loss = p.average_loss
        window = self._pending_window
        self._pending_window = None
        if window is not None and window[2] <= start_iter and len(window[0]) <= average_loss:
            self._losses = [np.float32(x) for x in window[0]]
            self.smoothed_loss, self._loss_origin = np.float32(window[1]), window[2]
        else:
            self._losses, self.smoothed_loss, self._loss_origin = [], np.float32(0), start_iter
        self._timer = time.perf_counter()
        self._iterations_last = start_iter

        # Caffe CHECKs the policy at the first learning-rate computation; here before any
        # iteration runs (a solver made only to test or inspect needs no policy)
        check_policy(p, self._label)
        if not self._hooks_started:
            self._hooks_started = True
            self.hooks.on_init(self)
        previous = self.iter - 1  # iterations in (previous, iter] are due for display and tests
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if _due(p.test_interval, previous, self.iter) \
                    and (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_early_exit:
                    break  # a stop was requested while testing
            self.hooks.on_start(self)
            self.display_now = _due(p.display, previous, self.iter) and self.hooks.on_display(self)
            loss = np.float32(0)
            for _ in range(p.iter_size):
                loss += np.float32(self.net.forward_backward())
            # hooks may replace the loss (the mean over a synchronous group)
            self.iteration_loss = np.float32(loss / np.float32(p.iter_size))
            self.hooks.on_gradients_ready(self)
            loss = self.iteration_loss
            self._update_smoothed_loss(loss, average_loss)
            if self.display_now:
                self._display()
            if self.check_finite:
                self._check_finite(loss)
            if not self.hooks.apply_update(self):
                self.apply_update()
            self.hooks.after_update(self)
            previous = self.iter
            # the number of updates applied so far (a parameter server's count, when it has one)
            self.iter = self.iter + 1 if self.global_iter is None else int(self.global_iter)

            request = self._requested_action()
            if (_due(p.snapshot, previous, self.iter) or request == "snapshot"
                    or self._deferred_snapshot):
                self._deferred_snapshot = False
                self._snapshot_if_allowed()
            if request == "stop":
                self.requested_early_exit = True
                break

    def _snapshot_if_allowed(self):
        if self.hooks.on_snapshot(self):
            return self.snapshot()
        return None

    def _update_smoothed_loss(self, loss, average_loss):
        """Caffe's UpdateSmoothedLoss: the mean of the last `average_loss` losses, kept
        incrementally in float as Caffe does."""
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = np.float32((self.smoothed_loss * np.float32(size - 1) + loss)
                                            / np.float32(size))
        else:
            idx = (self.iter - self._loss_origin) % average_loss
            self.smoothed_loss = np.float32(
                self.smoothed_loss + (loss - self._losses[idx]) / np.float32(average_loss))
            self._losses[idx] = loss

    def _display(self):
        p = self.param
        now = time.perf_counter()
        lapse = np.float32(now - self._timer)
        per_s = np.float32((self.iter - self._iterations_last) / (lapse if lapse else 1.0))
        self.log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, _g(per_s),
                      _g(lapse), p.display, _g(self.smoothed_loss))
        self._timer = now
        self._iterations_last = self.iter
        self._log_outputs(self.net, "Train", {name: self.net.blobs[name].data
                                              for name in self.net.outputs})

    def _log_outputs(self, net, kind, values):
        """'    <kind> net output #k: name = v (* w = l loss)', one line per output element."""
        index = 0
        for name, data in values.items():
            weight = np.float32(net.blob_loss_weights.get(name, 0.0))
            for v in np.asarray(data, dtype=np.float32).ravel():
                extra = f" (* {_g(weight)} = {_g(np.float32(weight * v))} loss)" if weight else ""
                self.log.info("    %s net output #%d: %s = %s%s", kind, index, name, _g(v), extra)
                index += 1

    @property
    def lr(self):
        """pycaffe's SGDSolver.lr: the learning rate the next update uses (the lr policy at the
        current iteration), read without logging or moving the multistep position."""
        return float(learning_rate(self.param, self.iter, self.current_step)[0])

    @abc.abstractmethod
    def apply_update(self):
        """Turn the accumulated diffs into the parameter update (Caffe's ApplyUpdate)."""

    def solve(self, resume_file=None):
        """Train to max_iter (Caffe's Solver::Solve), resuming from `resume_file` if given."""
        p = self.param
        self.log.info("Solving %s", self.net.name)
        self.log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            self.log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self._snapshot_if_allowed()
        if self.requested_early_exit:
            self.log.info("Optimization stopped early.")
            return
        # One more forward pass, only to display the loss after the last update.
        if p.display and self.iter % p.display == 0 and self.hooks.on_display(self):
            self.net.forward()
            self._update_smoothed_loss(np.float32(self.net.loss), p.average_loss)
            self.log.info("Iteration %d, loss = %s", self.iter, _g(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self.log.info("Optimization Done.")

    # -- testing ----------------------------------------------------------------------------
    def test_all(self):
        """Test every test net in turn until a stop is requested; returns their results."""
        results = []
        if not self.hooks.on_test(self):
            return results
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(i))
        return results

    def test(self, test_net_id=0):
        """Caffe's Solver::Test: test_iter[i] forward passes of test net i; every element of every
        output blob is averaged over the passes and logged. Returns {output name: mean} (a float
        for one-element outputs, a float32 array shaped like the blob otherwise); with
        test_compute_loss the mean loss is logged and kept in `self.test_loss`. An interrupted
        test returns {}."""
        p = self.param
        if not 0 <= test_net_id < len(self.test_nets):
            raise SolverError(f"no test net #{test_net_id}: this solver has "
                              f"{len(self.test_nets)} test net(s)")
        self.log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        n_iter = p.test_iter[test_net_id]
        scores = None
        loss = np.float32(0)
        for i in range(n_iter):
            request = self._requested_action()
            while request != "none":
                if request == "snapshot":
                    # Deferred to the end of this training iteration: a snapshot taken mid-test
                    # would record a random state that a resumed run cannot reproduce.
                    self._deferred_snapshot = True
                elif request == "stop":
                    self.requested_early_exit = True
                request = self._requested_action()
            if self.requested_early_exit:
                break
            outputs = net.forward()
            if p.test_compute_loss:
                loss += np.float32(net.loss)
            values = {name: np.asarray(outputs[name], dtype=np.float32) for name in net.outputs}
            if scores is None:
                scores = {name: v.copy() for name, v in values.items()}
            else:
                for name, v in values.items():
                    scores[name] += v
        if self.requested_early_exit:
            self.log.info("Test interrupted.")
            return {}
        if p.test_compute_loss:
            self.test_loss = np.float32(loss / np.float32(n_iter)) if n_iter else loss
            self.log.info("Test loss: %s", _g(self.test_loss))
        means = {name: (s / np.float32(n_iter)).astype(np.float32)
                 for name, s in (scores or {}).items()}
        self._log_outputs(net, "Test", means)
        return {name: (float(m.ravel()[0]) if m.size == 1 else m) for name, m in means.items()}

    # -- snapshots --------------------------------------------------------------------------
    def _filename(self, extension):
        return snap.snapshot_filename(self.param.snapshot_prefix, self.iter, extension)

    def snapshot(self):
        """Write the weights and the solver state (Caffe's Snapshot); returns both paths."""
        p = self.param
        if p.snapshot_format == crema_pb2.SolverParameter.HDF5:
            model = self._filename(".caffemodel.h5")
            self.log.info("Snapshotting to HDF5 file %s", model)
        elif p.snapshot_format == crema_pb2.SolverParameter.BINARYPROTO:
            model = self._filename(".caffemodel")
            self.log.info("Snapshotting to binary proto file %s", model)
        else:
            raise SolverError(f"Unsupported snapshot format {p.snapshot_format}")
        self.net.save(model, write_diff=p.snapshot_diff)
        state = self._snapshot_state(model)
        return model, state

    def _snapshot_state(self, model):
        extras = self._extras()
        if self.param.snapshot_format == crema_pb2.SolverParameter.HDF5:
            path = self._filename(".solverstate.h5")
            self.log.info("Snapshotting solver state to HDF5 file %s", path)
            snap.write_state_hdf5(path, self.iter, model, self.history, self.current_step, extras)
        else:
            path = self._filename(".solverstate")
            self.log.info("Snapshotting solver state to binary proto file %s", path)
            snap.write_extras_npz(snap.extras_path(path), extras)
            snap.write_state_binary(path, self.iter, model, self.history, self.current_step)
        return path

    def layer_states(self):
        """[(layer index, layer name, state_dict())] of the train net's layers that keep a
        state (data positions), for snapshots."""
        return [(index, layer.name, layer.state_dict()) for index, layer in
                enumerate(self.net.layers) if callable(getattr(layer, "state_dict", None))]

    @staticmethod
    def _encode_layer_states(states, arrays):
        layers = []
        for index, name, state in states:
            items = {}
            for key, value in state.items():
                if isinstance(value, np.ndarray):
                    if value.dtype.kind not in "biuf":
                        raise SolverError(f"layer '{name}' state_dict()['{key}']: arrays "
                                          f"must be numeric or boolean, got dtype {value.dtype}")
                    ref = f"a{len(arrays)}"
                    arrays[ref] = value
                    items[key] = {"array": ref}
                elif isinstance(value, (bool, int, float, str, np.generic)) or value is None:
                    items[key] = {"value": value.item() if isinstance(value, np.generic)
                                  else value}
                else:
                    raise SolverError(f"layer '{name}' state_dict()['{key}']: cannot save "
                                      f"a {type(value).__name__} (use numpy arrays or numbers)")
            layers.append({"index": index, "name": name, "items": items})
        return layers

    def _extras(self):
        """crema's additions to the state: random stream, layer states, smoothed-loss window.
        In a synchronous parallel job rank 0 also keeps every rank's layer states ("ranks")."""
        arrays = {}
        manifest = {
            "format": snap.EXTRAS_FORMAT,
            "iter": self.iter,
            "rng": rng.get_state(),
            "layers": self._encode_layer_states(self.layer_states(), arrays),
            "loss_window": {"losses": [float(x) for x in self._losses],
                            "smoothed": float(self.smoothed_loss),
                            "origin": self._loss_origin,
                            "average_loss": self.param.average_loss},
        }
        if self.rank_layer_states is not None:
            manifest["ranks"] = [self._encode_layer_states(states, arrays)
                                 for states in self.rank_layer_states]
        return manifest, arrays

    def restore(self, state_path):
        """Load a solver state (Caffe's Restore; '.h5' names are HDF5): iteration, current_step,
        history, and the weights of `learned_net` (as written; failing that, beside the state
        file); plus crema's extras when present. Everything is checked before anything changes."""
        state_path = os.fspath(state_path)
        state = snap.read_state(state_path)
        if len(state.history) != len(self.history):
            raise SolverError(
                f"{state_path}: Incorrect length of history blobs: the state holds "
                f"{len(state.history)}, this {self.type} solver needs {len(self.history)} "
                f"({self.history_sets} per learnable parameter, "
                f"{len(self.net.learnable_params)} parameters)")
        history = []
        for i, ((shape, legacy, values), current) in enumerate(zip(state.history, self.history)):
            target = current.shape
            fits = shape == target or (legacy and len(target) <= 4
                                       and (1,) * (4 - len(target)) + tuple(target) == shape)
            if not fits:
                raise SolverError(f"{state_path}: history blob {i} has shape {shape} in the file, "
                                  f"the solver's is {target} (parameter "
                                  f"{i % len(self.net.learnable_params)})")
            if values is not None and values.size != current.size:
                raise SolverError(f"{state_path}: history blob {i} holds {values.size} values for "
                                  f"shape {shape}")
            history.append(None if values is None else values.reshape(target))
        if not state.learned_net:
            # Caffe would resume with whatever weights the net has; a state without its
            # weights file cannot resume the run it came from
            raise SolverError(f"{state_path}: the solver state names no weights file "
                              "(learned_net is empty or missing); it cannot resume training")
        model = self._resolve_learned_net(state.learned_net, state_path)
        self.net.copy_from(model)
        self.iter = int(state.iter)
        self.current_step = int(state.current_step)
        self.log.info("SGDSolver: restoring history")
        for current, values in zip(self.history, history):
            if values is not None:
                current[...] = values
        self._pending_window = None
        if state.extras is not None:
            self._apply_extras(state.extras, state_path)
        else:
            self.log.info("%s has no crema extras: restored Caffe's solver state only (random "
                          "stream and data positions continue from here)", state_path)
        for net in self.test_nets:
            net.share_with(self.net)

    def _resolve_learned_net(self, learned, state_path):
        tried = [learned]
        if os.path.exists(learned):
            return learned
        directory = os.path.dirname(os.path.abspath(state_path))
        for candidate in (os.path.join(directory, learned),
                          os.path.join(directory, os.path.basename(learned))):
            if candidate in tried:
                continue
            tried.append(candidate)
            if os.path.exists(candidate):
                self.log.info("learned_net '%s' not found as written; using %s (beside the "
                              "state file)", learned, candidate)
                return candidate
        raise SolverError(f"{state_path}: learned_net '{learned}' not found; tried "
                          + " and ".join(os.path.abspath(t) for t in tried))

    def _apply_extras(self, extras, where):
        manifest, arrays = extras
        if manifest.get("format") != snap.EXTRAS_FORMAT or manifest.get("iter") != self.iter:
            self.log.warning("%s: crema extras are for iteration %s (format %s), the state for "
                             "%d; ignoring them", where, manifest.get("iter"),
                             manifest.get("format"), self.iter)
            return
        try:
            rng.set_state(manifest["rng"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SolverError(f"{where}: cannot restore the random generator state: {exc}") from None
        entries = manifest.get("layers", [])
        ranks = manifest.get("ranks")
        if ranks is not None and self.data_rank is not None:
            if self.data_rank >= len(ranks):
                raise SolverError(f"{where}: the snapshot holds data positions of {len(ranks)} "
                                  f"ranks; this is rank {self.data_rank} (resume with the "
                                  "same number of ranks, or without the sidecar)")
            entries = ranks[self.data_rank]
        for entry in entries:
            index, name = entry["index"], entry["name"]
            layer = self.net.layers[index] if index < len(self.net.layers) else None
            load = getattr(layer, "load_state_dict", None)
            if layer is None or layer.name != name or not callable(load):
                self.log.warning("%s: saved state of layer '%s' (#%d) has no matching layer with "
                                 "load_state_dict in the train net; skipped", where, name, index)
                continue
            state = {}
            for key, item in entry["items"].items():
                if "array" in item:
                    if item["array"] not in arrays:
                        raise SolverError(f"{where}: crema extras lack array {item['array']} "
                                          f"(layer '{name}' key '{key}')")
                    state[key] = np.array(arrays[item["array"]])
                else:
                    state[key] = item["value"]
            try:
                load(state)
            except ShardMismatchError as exc:
                # a snapshot of a job with another number of ranks (a hybrid run continued in
                # one process, or back): its positions stride the stream differently
                self.log.warning("%s: %s; this run reads layer '%s' from the start of its "
                                 "stream instead", where, exc, name)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise SolverError(f"{where}: the saved state of layer '{name}' is damaged "
                                  f"({type(exc).__name__}: {exc})") from None
        window = manifest.get("loss_window")
        if window and window.get("average_loss") == self.param.average_loss:
            self._pending_window = (window["losses"], window["smoothed"], window["origin"])
