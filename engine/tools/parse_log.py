"""Parse a Caffe or crema training log into train and test tables (Caffe's tools/extra/parse_log.py).

    train, test = parse_log("train.log")        # lists of dicts, one per iteration with outputs
    write_csv("train.log", "out/")               # out/train.log.train and out/train.log.test

Columns, as Caffe's script: NumIters, Seconds, LearningRate, then one per net output name in the
order the log first shows them. A row is one iteration that printed outputs ("Train net output
#k: name = v" or "Test net output #k: name = v"). Seconds are measured from the "Solving ..." line
(the first glog timestamp when there is none) using the glog timestamps "Immdd hh:mm:ss.uuuuuu";
glog lines carry no year: the last stamped line is taken to be in the year of the file's
modification time, and a month going backwards means the log crossed into a new year. LearningRate is the rate of the row's iteration:
the "Iteration N, lr = x" line that follows the outputs of iteration N (Caffe's script takes the
last rate printed before the outputs, one display period late); rows with no rate of their own
keep the last one seen, and a first row printed before any rate takes the second row's, as in
Caffe's script.
"""
import csv
import datetime
import math
import os
import re

from ..errors import CremaError
from ..fileio import atomic_write

ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([.\deE+-]+|[-+]?(?:nan|inf))",
                          re.IGNORECASE)
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([.\deE+-]+|[-+]?(?:nan|inf))",
                         re.IGNORECASE)
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")
GLOG_PREFIX = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{1,6})\b")

BASE_COLUMNS = ("NumIters", "Seconds", "LearningRate")


def _stamp_fields(line):
    """(month, day, hour, minute, second, microsecond) of a glog line, or None."""
    m = GLOG_PREFIX.match(line.lstrip())
    if not m:
        return None
    fields = [int(g) for g in m.groups()[:5]]
    return tuple(fields) + (int(m.group(6).ljust(6, "0")),)


def _datetimes(lines, last_year):
    """The datetime of each line (None for lines without a glog prefix). glog stamps have no year:
    the last stamped line is taken to be in `last_year`, and each time the month goes backwards
    between two stamped lines the log crossed into a new year."""
    fields = [_stamp_fields(line) for line in lines]
    offsets, rollovers, previous = [], 0, None
    for f in fields:
        if f is not None:
            if previous is not None and f[0] < previous[0]:
                rollovers += 1
            previous = f
        offsets.append(rollovers)
    out = []
    for f, off in zip(fields, offsets):
        if f is None:
            out.append(None)
            continue
        try:
            out.append(datetime.datetime(last_year - rollovers + off, *f))
        except ValueError:  # Feb 29 in a year that has none: the year guess was wrong
            out.append(None)
    return out


class _Table:
    """Rows of one net (train or test), each started by the first output of a new iteration."""

    def __init__(self, pattern):
        self.pattern = pattern
        self.rows = []
        self.columns = list(BASE_COLUMNS)
        self._row = None

    def feed(self, line, iteration, seconds, lr):
        m = self.pattern.search(line)
        if not m:
            return
        if self._row is None or self._row["NumIters"] != iteration:
            self.flush()
            self._row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": lr}
        name = m.group(2)
        if name not in self.columns:
            self.columns.append(name)
        self._row[name] = float(m.group(3))

    def set_rate(self, iteration, lr):
        if self._row is not None and self._row["NumIters"] == iteration:
            self._row["LearningRate"] = lr

    def flush(self):
        if self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def finish(self):
        self.flush()
        # Caffe's fix_initial_nan_learning_rate: outputs logged before the first "lr =" line.
        if len(self.rows) > 1 and math.isnan(self.rows[0]["LearningRate"]):
            self.rows[0]["LearningRate"] = self.rows[1]["LearningRate"]
        return self.rows


def parse_log(path):
    """Return (train_rows, test_rows, train_columns, test_columns) for the log at `path`."""
    try:
        year = datetime.datetime.fromtimestamp(os.path.getmtime(path)).year
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise CremaError(f"{path}: cannot read the log: {exc.strerror or exc}") from None

    stamps = _datetimes(lines, year)
    # Caffe's script measures from the "Solving" line; fall back to the first stamped line.
    start = next((t for line, t in zip(lines, stamps) if t is not None and "Solving" in line),
                 None)
    if start is None:
        start = next((t for t in stamps if t is not None), None)

    train, test = _Table(TRAIN_OUTPUT), _Table(TEST_OUTPUT)
    iteration, lr = None, float("nan")
    seen_iteration = False
    for line, stamp in zip(lines, stamps):
        m = ITERATION.search(line)
        if m:
            iteration, seen_iteration = int(m.group(1)), True
        if iteration is None or stamp is None:
            # outputs count only after the first "Iteration N", and only on log lines (not a
            # progress bar, a traceback or a resumed run's banner)
            continue
        seconds = (stamp - start).total_seconds()
        m = LEARNING_RATE.search(line)
        if m:
            lr = float(m.group(1))
            # "Iteration N, lr = x" follows the outputs of iteration N: it is their rate.
            train.set_rate(iteration, lr)
            test.set_rate(iteration, lr)
        train.feed(line, iteration, seconds, lr)
        test.feed(line, iteration, seconds, lr)
    if not seen_iteration:
        raise CremaError(f"{path}: no 'Iteration N' lines: not a Caffe or crema training log")
    return train.finish(), test.finish(), train.columns, test.columns


def _cell(value):
    if isinstance(value, int):
        return str(value)
    if value is None:
        return ""
    return repr(float(value))


def write_csv(log_path, out_dir, delimiter=","):
    """Write <out_dir>/<log name>.train and .test; returns their paths."""
    train, test, train_cols, test_cols = parse_log(log_path)
    if not os.path.isdir(out_dir):
        raise CremaError(f"{out_dir}: output folder does not exist")
    base = os.path.basename(log_path)
    written = []
    for suffix, rows, cols in ((".train", train, train_cols), (".test", test, test_cols)):
        out = os.path.join(out_dir, base + suffix)

        def write(tmp, rows=rows, cols=cols):
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
                writer.writerow(cols)
                for row in rows:
                    writer.writerow([_cell(row.get(c)) for c in cols])
        atomic_write(out, write)
        written.append(out)
    return written
