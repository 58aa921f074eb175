"""The `crema` command: Caffe's `caffe` tool (train, test, time, device_query) plus Caffe's extra
scripts (parse_log, plot, draw).

    crema train -solver solver.prototxt [-weights a.caffemodel,b.caffemodel | -snapshot s.solverstate]
    crema test -model net.prototxt -weights net.caffemodel [-iterations 50]
    crema time -model net.prototxt [-iterations 50]
    crema device_query
    crema parse_log train.log out_dir/
    crema plot train.log curves.png [--x iters|seconds]
    crema draw net.prototxt net.svg [--rankdir LR] [--phase TRAIN|TEST]
    crema convert -input SRC -output DB [-backend lmdb|hdf5] [-encoded] [-shuffle] ...
    crema compute_mean -input DB -output mean.binaryproto

Flags are gflags-style as in Caffe: -flag=value, -flag value, --flag=value and --flag value all
work, boolean flags also as -flag / -noflag. Log lines go to stderr in glog's format, as Caffe's do.
Errors print one line `crema: error: <message>` and exit with status 2; -debug (or CREMA_DEBUG=1)
also prints the Python traceback.

-threads N sets the native kernels' threads (engine.set_num_threads).
"""
import logging
import os
import re
import signal
import sys
import time
import traceback

USAGE_HEAD = """crema: command line brew (a Caffe-compatible engine on CPUs)
usage: crema <command> <args>

commands:
  train           train or finetune a model
  test            score a model
  device_query    show CPU information
  time            benchmark model execution time
  parse_log       training log -> .train and .test CSV tables
  plot            training log -> plot of the train and test outputs (needs matplotlib)
  draw            net prototxt -> graph drawing (.dot; .svg, .png, ... need Graphviz 'dot')
  convert         MNIST, numpy arrays or image folders -> LMDB or HDF5
  compute_mean    mean image of a database -> BlobProto (.binaryproto)
  scale           simulate hybrid training at cluster scale (crema scale --help)
  data            generate a data set: crema data hep|climate --help
  demo            a science workload end to end: crema demo hep|climate
  help            show this help
"""

USAGE_EXAMPLES = """
examples:
  crema train -solver solver.prototxt [-weights a.caffemodel[,b.caffemodel]]
  crema train -solver solver.prototxt -snapshot net_iter_1000.solverstate
  mpiexec -n 5 crema train -solver solver.prototxt -groups 2 -servers 1
  crema scale -compare -nodes 128
  crema test -model train_val.prototxt -weights net.caffemodel -iterations 100
  crema time -model train_val.prototxt -iterations 10
  crema parse_log train.log OUT_DIR
  crema plot train.log curves.png --x seconds
  crema draw train_val.prototxt net.svg --rankdir TB --phase TRAIN
  crema convert -input images/ -output train_lmdb -resize_height 32 -resize_width 32 -shuffle
  crema compute_mean -input train_lmdb -output mean.binaryproto
"""

# name: (kind, default, help). Caffe's flags keep Caffe's defaults and wording.
FLAGS = {
    "solver": ("str", "", "The solver definition protocol buffer text file."),
    "model": ("str", "", "The model definition protocol buffer text file."),
    "phase": ("str", "", "Optional; network phase (TRAIN or TEST). Only used for 'time' and "
                         "'test' (and 'draw', where ALL is the default)."),
    "level": ("int", 0, "Optional; network level."),
    "stage": ("str", "", "Optional; network stages (not to be confused with phase), "
                         "separated by ','."),
    "snapshot": ("str", "", "Optional; the snapshot solver state to resume training."),
    "weights": ("str", "", "Optional; the pretrained weights to initialize finetuning, separated "
                           "by ','. Cannot be set simultaneously with snapshot."),
    "iterations": ("int", 50, "The number of iterations to run."),
    "sigint_effect": ("str", "stop", "Optional; action to take when a SIGINT signal is received: "
                                     "snapshot, stop or none."),
    "sighup_effect": ("str", "snapshot", "Optional; action to take when a SIGHUP signal is "
                                         "received: snapshot, stop or none."),
    "check_finite": ("bool", True, "train: stop when the loss or a gradient becomes NaN/Inf, "
                                   "naming the first layer where it appeared."),
    "threads": ("int", 0, "Optional; number of CPU threads for the kernels and BLAS (0: leave "
                          "the default)."),
    "debug": ("bool", False, "Show Python tracebacks on errors (also CREMA_DEBUG=1)."),
    "precision": ("str", "", "train, time: arithmetic of Convolution, Deconvolution and "
                             "InnerProduct, fp32 or bf16 (bf16 operands, fp32 accumulation and "
                             "master weights); train: overrides the solver's precision."),
    "groups": ("int", 1, "train under MPI: synchronous groups of ranks (world = groups x "
                         "group_size + servers); also the solver's parallel { groups }."),
    "servers": ("int", 0, "train under MPI: parameter-server ranks (the last ranks); needed when "
                          "-groups > 1."),
    "bucket_mb": ("str", "25", "train under MPI: gradient bucket size in MB."),
    "first_bucket_mb": ("str", "1", "train under MPI: size of the first (small) bucket in MB."),
    "max_staleness": ("int", -1, "train under MPI: bound on how many updates a group may run "
                                 "ahead of the slowest (-1: unbounded)."),
    "momentum_correction": ("bool", False, "train under MPI: lower the servers' momentum by "
                                           "the implicit momentum of asynchrony (1 - 1/groups)."),
    "log_dir": ("str", "", "train under MPI: also write one log file per rank into this folder."),
    "timeline": ("str", "", "train under MPI: write a Chrome-trace timeline of every rank."),
    "stall_timeout": ("int", 300, "train under MPI: seconds without progress before the job is "
                                  "ended, naming the stalled ranks (0: off)."),
    "gpu": ("str", "", "Not available: crema runs on CPUs."),
    "x": ("str", "iters", "plot: x axis, iters or seconds."),
    "rankdir": ("str", "LR", "draw: direction of the graph layout, LR, RL, TB or BT."),
    "delimiter": ("str", ",", "parse_log: column delimiter of the CSV files."),
    "input": ("str", "", "convert: MNIST folder or pickle, IDX images file, .npy/.npz, or image "
                         "folder; compute_mean: the database."),
    "output": ("str", "", "convert: the database to write; compute_mean: the .binaryproto."),
    "backend": ("str", "lmdb", "convert: the output format, lmdb or hdf5."),
    "encoded": ("bool", False, "convert: store the images encoded (PNG, or the file's own bytes)."),
    "resize_height": ("int", 0, "convert: resize the images to this height (with -resize_width)."),
    "resize_width": ("int", 0, "convert: resize the images to this width (with -resize_height)."),
    "gray": ("bool", False, "convert: read image files as grayscale."),
    "shuffle": ("bool", False, "convert: shuffle the order of the records."),
    "listfile": ("str", "", "convert: lines 'path label', paths relative to the -input folder."),
    "labels": ("str", "", "convert: labels file for an IDX images file or a .npy of images."),
    "split": ("str", "train", "convert: the MNIST split to convert, train or test."),
}

COMMON = ("threads", "debug", "gpu")
COMMANDS = {
    # name: (flags it reads, positional argument names)
    "train": (("solver", "snapshot", "weights", "level", "stage", "sigint_effect",
               "sighup_effect", "check_finite", "groups", "servers", "bucket_mb",
               "first_bucket_mb", "max_staleness", "momentum_correction", "log_dir", "timeline",
               "stall_timeout", "precision") + COMMON, ()),
    "test": (("model", "weights", "iterations", "phase", "level", "stage") + COMMON, ()),
    "time": (("model", "iterations", "phase", "level", "stage", "precision") + COMMON, ()),
    "device_query": (COMMON, ()),
    "parse_log": (("delimiter", "debug"), ("LOGFILE", "OUTDIR")),
    "plot": (("x", "debug"), ("LOGFILE", "OUT")),
    "draw": (("rankdir", "phase", "debug"), ("NET", "OUT")),
    "convert": (("input", "output", "backend", "encoded", "resize_height", "resize_width", "gray",
                 "shuffle", "listfile", "labels", "split", "debug"), ()),
    "compute_mean": (("input", "output", "debug"), ()),
    "help": (("debug",), ()),
}

log = logging.getLogger("crema")


INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
_GFLAGS_INT = re.compile(r"[+-]?[0-9]+|0[xX][0-9a-fA-F]+", re.ASCII)


class UsageError(Exception):
    """Bad command line: unknown command or flag, a missing or malformed value."""


class Flags:
    """Parsed flags: attribute access, plus which ones the command line gave."""

    def __init__(self):
        self.given = set()
        for name, (_, default, _) in FLAGS.items():
            setattr(self, name, default)


def _flag_lines(names):
    lines = []
    for name in names:
        kind, default, text = FLAGS[name]
        shown = {"bool": "", "int": f" (default: {default})",
                 "str": f" (default: \"{default}\")" if default else ""}[kind]
        lines.append(f"  -{name:<15}{text}{shown}")
    return lines


def usage(command=None):
    """The general usage, or one command's arguments and flags."""
    if command in COMMANDS and command != "help":
        allowed, positionals = COMMANDS[command]
        head = f"usage: crema {command}" + "".join(f" {p}" for p in positionals) + " [flags]"
        return "\n".join([head, "", "flags:"] + _flag_lines(allowed)) + "\n"
    return "\n".join([USAGE_HEAD, "flags (crema help COMMAND lists a command's own):"]
                     + _flag_lines(FLAGS)) + "\n" + USAGE_EXAMPLES


def _bool_value(name, text):
    low = text.lower()
    if low in ("1", "true", "t", "yes", "y"):
        return True
    if low in ("0", "false", "f", "no", "n"):
        return False
    raise UsageError(f"flag -{name} takes true or false, got '{text}'")


def _looks_like_flag(arg):
    if not arg.startswith("-") or arg == "-":
        return False
    try:  # a negative number is a value, not a flag
        float(arg)
        return False
    except ValueError:
        return True


def parse_args(argv):
    """gflags-style parsing. Returns (command, positionals, Flags, extras) where extras are
    the special requests 'help' and 'version'."""
    flags, positionals, extras = Flags(), [], set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":  # the end of the flags, as in gflags
            positionals.extend(argv[i:])
            break
        if not _looks_like_flag(arg):
            positionals.append(arg)
            continue
        body = arg.lstrip("-")
        name, eq, value = body.partition("=")
        if name in ("h", "help", "helpfull"):
            extras.add("help")
            continue
        if name == "version":
            extras.add("version")
            continue
        if name not in FLAGS and name.startswith("no") and FLAGS.get(name[2:], ("",))[0] == "bool":
            if eq:
                raise UsageError(f"flag {arg.split('=')[0]} takes no value")
            setattr(flags, name[2:], False)
            flags.given.add(name[2:])
            continue
        if name not in FLAGS:
            raise UsageError(f"unknown flag -{name} (see 'crema help')")
        kind = FLAGS[name][0]
        if kind == "bool":
            setattr(flags, name, _bool_value(name, value) if eq else True)
            flags.given.add(name)
            continue
        if not eq:
            if i >= len(argv):
                raise UsageError(f"flag -{name} needs a value")
            value = argv[i]
            i += 1
        if kind == "int":
            # gflags' strtoll: decimal with an optional sign, or hex after "0x"; Python's int()
            # would also take "1_000", spaces and non-ASCII digits
            if _GFLAGS_INT.fullmatch(value) is None:
                raise UsageError(f"flag -{name} needs an integer, got '{value}'")
            value = int(value, 16 if value[:2].lower() == "0x" else 10)
            if not INT32_MIN <= value <= INT32_MAX:  # gflags' int32 flags refuse these
                raise UsageError(f"flag -{name}: value {value} is out of range (a 32-bit "
                                 f"integer, {INT32_MIN} to {INT32_MAX})")
        setattr(flags, name, value)
        flags.given.add(name)
    command = positionals.pop(0) if positionals else None
    return command, positionals, flags, extras


def check_command_flags(command, positionals, flags):
    if command not in COMMANDS:
        raise UsageError(f"unknown command '{command}' (commands: {', '.join(COMMANDS)})")
    allowed, names = COMMANDS[command]
    for name in sorted(flags.given):
        if name not in allowed:
            raise UsageError(f"'crema {command}' does not take -{name} (it takes: "
                             f"{', '.join('-' + a for a in allowed)})")
    if len(positionals) != len(names):
        want = " ".join(names) if names else "no arguments"
        if len(positionals) > len(names):
            extra = " ".join(positionals[len(names):])
            raise UsageError(f"'crema {command}' takes {want}; unexpected: {extra}")
        raise UsageError(f"'crema {command}' takes {want}; missing: "
                         f"{' '.join(names[len(positionals):])}")
    if "gpu" in flags.given:
        raise UsageError("crema has no GPU backend: it runs on CPUs; drop -gpu")
    if "iterations" in flags.given and flags.iterations < 1:
        raise UsageError(f"-iterations must be at least 1, got {flags.iterations}")
    if "threads" in flags.given and flags.threads < 1:
        raise UsageError(f"-threads must be at least 1, got {flags.threads}")


# --- logging ---------------------------------------------------------------------------------

def setup_logging():
    """glog-style lines on stderr for the "crema" logger (engine.logs owns the format)."""
    from .logs import install_glog_format
    install_glog_format()
    log.setLevel(logging.INFO)


def _g(x):
    """A float printed as C++ streams print it by default (6 significant digits)."""
    return f"{float(x):.6g}"


# --- shared helpers --------------------------------------------------------------------------

def _require_file(path, what):
    if not os.path.exists(path):
        raise UsageError(f"{what} file not found: {path}")
    if os.path.isdir(path):
        raise UsageError(f"{what} is a folder, not a file: {path}")


def _split_list(value, flag=None):
    """A comma-separated flag value as a list; with `flag` named, an empty entry ('a,,b') is
    refused rather than skipped."""
    items = [s.strip() for s in value.split(",")] if value else []
    if flag and any(not item for item in items):
        raise UsageError(f"flag -{flag} has an empty entry in '{value}' (separate files by "
                         "single commas)")
    return [item for item in items if item]


def _phase(flags, default):
    import engine
    if not flags.phase:
        return default
    phase = flags.phase.upper()
    if phase == "TRAIN":
        return engine.TRAIN
    if phase == "TEST":
        return engine.TEST
    raise UsageError(f"-phase must be TRAIN or TEST, got '{flags.phase}'")


def _build_net(flags, default_phase):
    import engine
    if not flags.model:
        raise UsageError("need a model definition: -model NET.prototxt")
    _require_file(flags.model, "model")
    return engine.Net(flags.model, _phase(flags, default_phase), level=flags.level,
                      stages=_split_list(flags.stage))


def apply_threads(flags):
    """-threads N: engine.set_num_threads(N) (the native kernels' OpenMP threads). A crema
    without it gets OMP_NUM_THREADS=N in its environment instead, which reaches libraries that
    read it when they start (and any process this one starts)."""
    n = flags.threads
    if not n:
        return
    import engine
    setter = getattr(engine, "set_num_threads", None)
    if setter is not None:
        setter(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


# --- train -----------------------------------------------------------------------------------

ACTIONS = ("stop", "snapshot", "none")


class SignalHandler:
    """Caffe's SignalHandler: SIGINT and SIGHUP only set a flag; the solver asks once per
    iteration (solver.action_request) and gets the effect configured for the signal that came.
    The previous handlers come back on close()."""

    def __init__(self, sigint_effect, sighup_effect):
        self.effects = {signal.SIGINT: sigint_effect, signal.SIGHUP: sighup_effect}
        self.pending = {signal.SIGINT: False, signal.SIGHUP: False}
        self.previous = {}
        for sig in self.effects:
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.pending[signum] = True

    def __call__(self):
        for sig in (signal.SIGINT, signal.SIGHUP):  # Caffe checks SIGINT first
            if self.pending[sig]:
                self.pending[sig] = False
                return self.effects[sig]
        return "none"

    def close(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _effect(flags, name):
    value = getattr(flags, name)
    if value not in ACTIONS:
        raise UsageError(f"invalid signal effect \"{value}\" for -{name} (use {', '.join(ACTIONS)})")
    return value


def cmd_train(flags):
    """Caffe's `caffe train`. The solver is built from the solver file itself (so its messages
    name the file and net paths may also be found beside it); -level/-stage go into train_state,
    which needs an edited SolverParameter. -weights are copied into the train and test nets after
    construction (Caffe 1.0's CopyLayers), -snapshot resumes through solver.solve(resume_file)."""
    if not flags.solver:
        raise UsageError("need a solver definition to train: -solver SOLVER.prototxt")
    if flags.snapshot and flags.weights:
        raise UsageError("give a snapshot to resume training or weights to finetune but not both")
    sigint_effect = _effect(flags, "sigint_effect")
    sighup_effect = _effect(flags, "sighup_effect")
    _require_file(flags.solver, "solver")
    precision = _precision(flags) if flags.precision else None
    weights = _split_list(flags.weights, "weights")
    for w in weights:
        _require_file(w, "weights")
    if flags.snapshot:
        _require_file(flags.snapshot, "snapshot")
    import engine.solvers
    from .schema import read_solver_param
    param, _ = read_solver_param(flags.solver)  # syntax errors name the file here
    stages = _split_list(flags.stage)
    edits = flags.level or stages or ((weights or flags.snapshot) and len(param.weights))
    if edits:
        param.train_state.level = flags.level
        param.train_state.stage.extend(stages)
        if weights or flags.snapshot:
            del param.weights[:]  # the command line's -weights (or -snapshot) replace the file's
    log.info("Use CPU.")
    handler = SignalHandler(sigint_effect, sighup_effect)

    def make_solver():
        # solver_path keeps messages naming the file and lets net paths resolve beside it
        solver = engine.solvers.get_solver(param if edits else flags.solver,
                                           solver_path=flags.solver)
        solver.action_request = handler
        solver.check_finite = flags.check_finite
        if precision:
            solver.set_precision(precision)
        for w in weights:
            log.info("Finetuning from %s", w)
            for net in [solver.net] + list(solver.test_nets):
                net.copy_from(w)
        if flags.snapshot:
            log.info("Resuming from %s", flags.snapshot)
        log.info("Starting Optimization")
        return solver

    try:
        parallel = parallel_settings(flags, param)
        if parallel is None:
            solver = make_solver()
            solver.solve(resume_file=flags.snapshot or None)
        else:
            from .parallel.train import train_parallel
            solver = train_parallel(make_solver, resume_file=flags.snapshot or None, **parallel)
            if solver is None:
                return 0  # a parameter server
    finally:
        handler.close()
    if solver.requested_early_exit:
        # Caffe's Solve logs "Optimization Done." itself unless it stopped early; caffe.cpp then
        # logs it again. Here it is logged once either way.
        log.info("Optimization Done.")
    return 0


def parallel_settings(flags, param):
    """The parallel job's settings (solver's `parallel` message, then the flags), or None when
    this is a plain single-process run (no launcher, no parallel flags)."""
    from .parallel.train import mpi_world_size_from_env
    from .parallel.topology import check_layout
    p = param.parallel
    asked = bool({"groups", "servers"} & flags.given) or param.HasField("parallel")
    world = mpi_world_size_from_env()
    if world is None and not asked:
        return None  # a plain run; under mpiexec (even -n 1) the parallel trainer runs
    launched = world is not None
    world = world or 1

    def number(name, default):
        try:
            value = float(getattr(flags, name)) if name in flags.given else float(default)
        except ValueError:
            raise UsageError(f"flag -{name} needs a number, got '{getattr(flags, name)}'") \
                from None
        if value <= 0:
            raise UsageError(f"-{name} must be positive, got {value:g}")
        return value

    settings = {
        "groups": flags.groups if "groups" in flags.given else p.groups,
        "servers": flags.servers if "servers" in flags.given else p.servers,
        "bucket_mb": number("bucket_mb", p.bucket_mb),
        "first_bucket_mb": number("first_bucket_mb", p.first_bucket_mb),
        "max_staleness": flags.max_staleness if "max_staleness" in flags.given
        else p.max_staleness,
        "momentum_correction": flags.momentum_correction or p.momentum_correction,
        "threads": flags.threads or p.threads_per_rank,
        "log_dir": flags.log_dir,
        "timeline": flags.timeline or p.timeline,
        "stall_timeout": flags.stall_timeout if "stall_timeout" in flags.given
        else p.stall_timeout,
    }
    settings["timeline_path"] = settings.pop("timeline")
    # refuse an impossible layout before any MPI work (every rank computes the same answer)
    check_layout(world, settings["groups"], settings["servers"])
    if not launched and settings["groups"] == 1 and settings["servers"] == 0:
        return None
    return settings


# --- test ------------------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal. Log lines clear it
    first (clear()), and it is drawn again after them."""

    def __init__(self, total, stream=None):
        self.stream = stream or sys.stderr
        self.total = total
        self.enabled = self.stream.isatty()
        self.shown = False

    def show(self, done):
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / self.total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
        self.stream.flush()
        self.shown = True

    def clear(self):
        if self.enabled and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def cmd_test(flags):
    if not flags.model:
        raise UsageError("need a model definition to score: -model NET.prototxt")
    if not flags.weights:
        raise UsageError("need model weights to score: -weights NET.caffemodel")
    weights = _split_list(flags.weights, "weights")
    for w in weights:
        _require_file(w, "weights")
    import engine
    net = _build_net(flags, engine.TEST)
    for w in weights:
        net.copy_from(w)
    log.info("Use CPU.")
    n = flags.iterations
    log.info("Running for %d iterations.", n)
    scores, score_names, loss = [], [], 0.0
    progress = Progress(n)
    for i in range(n):
        out = net.forward()
        loss += net.loss
        progress.clear()
        idx = 0
        for name in net.outputs:
            for score in out[name].ravel().tolist():
                if i == 0:
                    scores.append(score)
                    score_names.append(name)
                else:
                    scores[idx] += score
                log.info("Batch %d, %s = %s", i, name, _g(score))
                idx += 1
        progress.show(i + 1)
    progress.clear()
    log.info("Loss: %s", _g(loss / n))
    for name, total in zip(score_names, scores):
        mean = total / n
        weight = net.blob_loss_weights.get(name, 0.0)
        extra = f" (* {_g(weight)} = {_g(weight * mean)} loss)" if weight else ""
        log.info("%s = %s%s", name, _g(mean), extra)
    return 0


# --- time ------------------------------------------------------------------------------------

def layer_flops(net, i):
    """(forward, backward) FLOPs of layer i: 2 * multiply-adds for Convolution, Deconvolution
    and InnerProduct; 0 for every other layer. Backward counts the weight gradient when the
    layer's weights learn and the bottom gradient when the bottom needs one."""
    layer = net.layers[i]
    if layer.type not in ("Convolution", "Deconvolution", "InnerProduct") or not layer.blobs:
        return 0.0, 0.0
    name = net.layer_params[i].name
    bottom, top = net.blobs[net.bottom_names[name][0]], net.blobs[net.top_names[name][0]]
    weight = layer.blobs[0]
    if layer.type == "Convolution":
        # each top value: (input channels per group) x kernel multiply-adds
        macs = top.count * (weight.count // weight.shape[0])
    elif layer.type == "Deconvolution":
        # each bottom value scatters into (output channels per group) x kernel values
        macs = bottom.count * (weight.count // weight.shape[0])
    else:
        num_output = layer.param.inner_product_param.num_output or 1
        macs = (top.count // num_output) * weight.count
    fwd = 2.0 * macs
    need_bottom = bool(net.bottom_need_backward[i][:1] == [True])
    learns = bool(getattr(layer, "param_propagate_down", [False])[:1] == [True])
    return fwd, fwd * (int(need_bottom) + int(learns))


def _peak_gflops():
    """(single-thread peak GFLOP/s, threads) from engine.kernels.peak_gflops() and
    engine.get_num_threads(); (None, threads) when the kernels cannot measure a peak."""
    import engine
    from . import kernels
    getter = getattr(engine, "get_num_threads", None)
    threads = int(getter()) if getter is not None else 1
    peak = getattr(kernels, "peak_gflops", None)
    if peak is None:
        return None, threads
    value = peak()
    return (float(value) if value else None), threads


def _rate(flops, ms, peak):
    if not flops or ms <= 0:
        return ""
    gflops = flops / (ms * 1e-3) / 1e9
    text = f" ({gflops:.3g} GFLOP/s"
    if peak:
        text += f", {100.0 * gflops / peak:.3g}% of peak"
    return text + ")"


def _precision(flags):
    from .bf16 import PRECISIONS
    if flags.precision not in PRECISIONS:
        raise UsageError(f"flag -precision takes {' or '.join(PRECISIONS)}, got "
                         f"'{flags.precision}'")
    return flags.precision


def cmd_time(flags):
    import engine
    net = _build_net(flags, engine.TRAIN)
    log.info("Use CPU.")
    if flags.precision:
        net.set_precision(_precision(flags))
        log.info("Precision: %s", flags.precision)
    n = flags.iterations
    log.info("Performing Forward")
    net.forward()
    log.info("Initial loss: %s", _g(net.loss))
    log.info("Performing Backward")
    net.backward()

    layers = net.layers
    names = list(net.layer_dict.keys()) if len(net.layer_dict) == len(layers) else \
        [lp.name for lp in net.layer_params]
    # the passes a solver iteration runs (net.forward_backward: fused layers included, layers
    # that need no backward skipped), timed per layer by the net itself
    fwd_s, bwd_s = [0.0] * len(layers), [0.0] * len(layers)
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", n)
    clock = time.perf_counter
    total_start = clock()
    for j in range(n):
        iter_start = clock()
        net.forward_backward(fwd_s, bwd_s)
        log.info("Iteration: %d forward-backward time: %s ms.", j + 1,
                 _g((clock() - iter_start) * 1e3))
    total_ms = (clock() - total_start) * 1e3
    forward_total, backward_total = sum(fwd_s) * 1e6, sum(bwd_s) * 1e6
    fwd_us, bwd_us = [t * 1e6 for t in fwd_s], [t * 1e6 for t in bwd_s]
    single, threads = _peak_gflops()
    peak = single * threads if single else None  # the share is of all the threads' peak
    log.info("Average time per layer: ")
    for i, name in enumerate(names):
        f_ms, b_ms = fwd_us[i] / 1000 / n, bwd_us[i] / 1000 / n
        f_flops, b_flops = layer_flops(net, i)
        log.info("%10s\tforward: %s ms.%s", name, _g(f_ms), _rate(f_flops, f_ms, peak))
        log.info("%10s\tbackward: %s ms.%s", name, _g(b_ms), _rate(b_flops, b_ms, peak))
    log.info("Average Forward pass: %s ms.", _g(forward_total / 1000 / n))
    log.info("Average Backward pass: %s ms.", _g(backward_total / 1000 / n))
    log.info("Average Forward-Backward: %s ms.", _g(total_ms / n))
    log.info("Total Time: %s ms.", _g(total_ms))
    if peak:
        log.info("Peak: %s GFLOP/s (%s GFLOP/s measured on one thread x %d threads)",
                 _g(peak), _g(single), threads)
    log.info("*** Benchmark ends ***")
    return 0


# --- device_query ----------------------------------------------------------------------------

def cmd_device_query(flags):
    from . import kernels
    info = kernels.cpu_info()
    log.info("Querying CPU")
    log.info("CPU vendor:                    %s", info.get("vendor", "unknown"))
    log.info("CPU model:                     %s", info.get("model", "unknown"))
    log.info("Logical cores:                 %s", info.get("logical_cores", os.cpu_count()))
    log.info("ISAs of the CPU:               %s", " ".join(info.get("cpu_isas", [])) or "none")
    log.info("ISAs built in:                 %s", " ".join(info.get("built_isas", [])) or "none")
    log.info("ISAs usable:                   %s", " ".join(info.get("usable_isas", [])) or "none")
    log.info("ISA in use:                    %s", info.get("isa", "none"))
    log.info("Kernels:                       %s", info.get("kernels", "unknown"))
    for key in sorted(set(info) - {"vendor", "model", "logical_cores", "cpu_isas", "built_isas",
                                   "usable_isas", "isa", "kernels"}):
        log.info("%-30s %s", key.replace("_", " ") + ":", info[key])
    import engine
    getter = getattr(engine, "get_num_threads", None)
    if getter is not None:
        log.info("Threads:                       %s", getter())
    elif os.environ.get("OMP_NUM_THREADS"):
        log.info("Threads:                       %s (OMP_NUM_THREADS)",
                 os.environ["OMP_NUM_THREADS"])
    single, _ = _peak_gflops()
    if single:
        log.info("Peak per thread (measured):    %s GFLOP/s", _g(single))
    return 0


# --- extras ----------------------------------------------------------------------------------

def cmd_parse_log(flags, logfile, outdir):
    from .tools.parse_log import write_csv
    _require_file(logfile, "log")
    if len(flags.delimiter) != 1:
        raise UsageError(f"-delimiter must be one character, got '{flags.delimiter}'")
    for path in write_csv(logfile, outdir, delimiter=flags.delimiter):
        print(path)
    return 0


def cmd_plot(flags, logfile, out):
    from .tools.plot import plot_log
    _require_file(logfile, "log")
    if flags.x not in ("iters", "seconds"):
        raise UsageError(f"--x must be iters or seconds, got '{flags.x}'")
    print(plot_log(logfile, out, x=flags.x))
    return 0


def cmd_draw(flags, net, out):
    from .tools.draw import RANKDIRS, draw_net_to_file
    _require_file(net, "net")
    if flags.rankdir not in RANKDIRS:
        raise UsageError(f"--rankdir must be one of {', '.join(RANKDIRS)}, got '{flags.rankdir}'")
    phase = (flags.phase or "ALL").upper()
    if phase not in ("TRAIN", "TEST", "ALL"):
        raise UsageError(f"--phase must be TRAIN, TEST or ALL, got '{flags.phase}'")
    print(draw_net_to_file(net, out, rankdir=flags.rankdir, phase=phase))
    return 0


def _input_output(flags, command, what):
    if not flags.input or not flags.output:
        missing = " and ".join(f"-{n}" for n in ("input", "output") if not getattr(flags, n))
        raise UsageError(f"'crema {command}' needs {missing} ({what})")


def cmd_convert(flags):
    from .data.convert import convert, load_source
    _input_output(flags, "convert", "-input SRC -output DB")
    if flags.backend.lower() not in ("lmdb", "hdf5"):
        raise UsageError(f"-backend must be lmdb or hdf5, got '{flags.backend}'")
    if flags.split not in ("train", "test"):
        raise UsageError(f"-split must be train or test, got '{flags.split}'")
    source = load_source(flags.input, labels=flags.labels or None,
                         listfile=flags.listfile or None, split=flags.split)
    progress = Progress(max(len(source), 1))
    n = convert(source, flags.output, backend=flags.backend, encoded=flags.encoded,
                resize_height=flags.resize_height, resize_width=flags.resize_width,
                gray=flags.gray, shuffle=flags.shuffle, progress=lambda d, t: progress.show(d))
    progress.clear()
    for label, name in enumerate(source.classes or ()):
        log.info("label %d: %s", label, name)
    log.info("Processed %d files.", n)
    print(f"{flags.output}: {n} records")
    return 0


def cmd_compute_mean(flags):
    from .data.convert import compute_mean
    _input_output(flags, "compute_mean", "-input DB -output mean.binaryproto")
    progress = Progress(1)

    def show(done, total):
        progress.total = total
        progress.show(done)
    mean = compute_mean(flags.input, flags.output, progress=show)
    progress.clear()
    log.info("Write to %s", flags.output)
    log.info("Number of channels: %d", mean.shape[0])
    for c in range(mean.shape[0]):  # Caffe's per-channel means, ready for mean_value
        print(f"mean_value channel [{c}]: {float(mean[c].mean(dtype='float64')):.6g}")
    return 0


# --- main ------------------------------------------------------------------------------------

def _version():
    from . import __version__
    return __version__


# Commands with their own argparse parsers (their flags are not Caffe's gflags): a module with
# main(argv), or {subcommand: module}.
SUBPROGRAMS = {
    "scale": "engine.scale.cli",
    "data": {"hep": "engine.data.hep.cli", "climate": "engine.data.climate.cli"},
    "demo": {"hep": "engine.apps.hep", "climate": "engine.apps.climate"},
}


def _subprogram(argv):
    import importlib
    target = SUBPROGRAMS[argv[0]]
    rest = argv[1:]
    if isinstance(target, dict):
        if not rest or rest[0] not in target:
            raise UsageError(f"'crema {argv[0]}' needs one of: {', '.join(target)} (e.g. "
                             f"crema {argv[0]} {next(iter(target))} --help)")
        target, rest = target[rest[0]], rest[1:]
    return importlib.import_module(target).main(rest)


def run(argv):
    if argv and argv[0] in SUBPROGRAMS:
        return _subprogram(argv)
    command, positionals, flags, extras = parse_args(argv)
    if "version" in extras:
        print(f"crema {_version()}")
        return 0
    if command is None or command == "help" or "help" in extras:
        topic = positionals[0] if command == "help" and positionals else command
        if topic not in (None, "help") and topic not in COMMANDS:
            raise UsageError(f"unknown command '{topic}' (commands: {', '.join(COMMANDS)})")
        print(usage(topic), end="")
        return 0
    check_command_flags(command, positionals, flags)
    apply_threads(flags)
    setup_logging()
    handler = {"train": cmd_train, "test": cmd_test, "time": cmd_time,
               "device_query": cmd_device_query, "parse_log": cmd_parse_log,
               "plot": cmd_plot, "draw": cmd_draw, "convert": cmd_convert,
               "compute_mean": cmd_compute_mean}[command]
    return handler(flags, *positionals)


def _wants_debug(argv):
    if os.environ.get("CREMA_DEBUG", "") not in ("", "0"):
        return True
    return any(a.lstrip("-") in ("debug", "debug=true", "debug=1") for a in argv)


def _one_line(message):
    return " ".join(str(message).split()) or "unknown error"


def main(argv=None):
    """Entry point of the `crema` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = _wants_debug(argv)
    from .errors import CremaError
    try:
        return run(argv)
    except (UsageError, CremaError) as exc:
        error, status, message = exc, 2, str(exc)
    except OSError as exc:
        error, status = exc, 2
        message = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exception(exc)
        print("crema: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from .net import PYTHON_LAYER_NOTE
        notes = [n[len(PYTHON_LAYER_NOTE):] for n in getattr(exc, "__notes__", [])
                 if n.startswith(PYTHON_LAYER_NOTE)]
        error, status = exc, 1
        if notes:  # raised by the user's Python layer: name it, with the layer's context
            message = f"{notes[0]} ({type(exc).__name__}: {exc})"
        else:  # a bug in crema: say so, in one line unless debugging
            message = (f"internal error: {type(exc).__name__}: {exc}"
                       + ("" if debug else " (run with -debug for the traceback)"))
    sys.stdout.flush()
    if debug:
        traceback.print_exception(error)
    from .parallel.faults import abort_job, active_rank
    from .parallel.topology import TopologyError
    if isinstance(error, TopologyError):
        # every rank finds the same layout error: rank 0 says it, all leave normally
        rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
        if rank in ("", "0"):
            print(f"crema: error: {_one_line(message)}", file=sys.stderr)
        return status
    if active_rank() is not None:
        abort_job(_one_line(message), status)  # ends every rank of the job; does not return
    print(f"crema: error: {_one_line(message)}", file=sys.stderr)
    return status

if __name__ == "__main__":
    sys.exit(main())
