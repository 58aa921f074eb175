"""Run BVLC Caffe's own pycaffe test suite against crema, with `caffe` aliased to `engine`.

    python -m engine.tools.pycaffe_compat --caffe /path/to/caffe [--keep DIR] [-k EXPR]

`--caffe` is a Caffe checkout: a folder with a work tree, or a git directory without one (a bare
or mirrored clone), whose files are then read from its HEAD commit. The tests
(python/caffe/test/test_*.py) and the prototxts that test_draw walks (models/, examples/) are laid
out in a temporary folder with Caffe's layout, but without Caffe's own python/caffe package: the
name `caffe` is served by an import hook (install_caffe_alias) that hands out crema's modules, so
`import caffe; caffe.Net is engine.Net` and `from caffe.proto import caffe_pb2` gives crema's
message classes. Each test file runs in its own pytest subprocess (a crash in one cannot hide the
others' results); the working directory is a scratch folder, as the tests write snapshots there.

Prints one line per test: the test id, pass / fail / error / skip, and the first line of what
went wrong. Exits 1 when any test failed or errored, 0 otherwise. Nothing of Caffe's is kept
unless --keep names a folder to put the laid-out copy in.
"""
import argparse
import importlib
import importlib.abc
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass

TEST_DIR = "python/caffe/test"

# pycaffe module names whose crema counterpart has another name; any other caffe.X is engine.X.
MODULE_RENAMES = {
    "caffe": "engine",
    "caffe._caffe": "engine",        # pycaffe's compiled module: Net, Layer, solvers, helpers
    "caffe.pycaffe": "engine",       # pycaffe's Python additions to Net, all on engine.Net
    "caffe.net_spec": "engine.netspec",
}


def crema_module_name(caffe_name):
    """The crema module that serves pycaffe module `caffe_name` ('caffe.io' -> 'engine.io')."""
    if caffe_name in MODULE_RENAMES:
        return MODULE_RENAMES[caffe_name]
    return "engine" + caffe_name[len("caffe"):]


class _CaffeAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: `caffe` and `caffe.*` are crema's own module objects (not copies), so
    classes, registries and module state are shared with code that imports engine directly."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "caffe" and not fullname.startswith("caffe."):
            return None
        crema_spec = importlib.util.find_spec(crema_module_name(fullname))
        if crema_spec is None:
            return None  # `import caffe.nothing` fails as any missing module does
        return importlib.util.spec_from_loader(
            fullname, self, is_package=crema_spec.submodule_search_locations is not None)

    def create_module(self, spec):
        module = importlib.import_module(crema_module_name(spec.name))
        spec.crema_spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import system stamped the alias spec on crema's module; give it its own back, so
        # that the module still reloads and reports itself as engine.*.
        module.__spec__ = module.__spec__.crema_spec


def install_caffe_alias():
    """Make `import caffe` (and its submodules) give crema's modules in this process. Idempotent;
    returns the engine package."""
    if not any(isinstance(finder, _CaffeAlias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CaffeAlias())
    return importlib.import_module("caffe")


# --- reading a Caffe checkout ------------------------------------------------------------------

class CaffeTree:
    """Files of a Caffe checkout: a folder with a work tree, or a git directory (read at HEAD)."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise SystemExit(f"--caffe {root}: no such folder")
        self.is_git = not os.path.isdir(os.path.join(self.root, TEST_DIR)) and \
            os.path.isfile(os.path.join(self.root, "HEAD"))
        if not self.is_git and not os.path.isdir(os.path.join(self.root, TEST_DIR)):
            raise SystemExit(f"--caffe {root}: neither a Caffe work tree (no {TEST_DIR}) nor a "
                             "git directory (no HEAD)")

    def _git(self, *args):
        return subprocess.run(["git", f"--git-dir={self.root}", *args], check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout

    def list(self, folder):
        """Paths (relative, '/'-separated) of the files under `folder`."""
        if self.is_git:
            out = self._git("ls-tree", "-r", "-z", "--name-only", "HEAD", "--", folder)
            return [p for p in out.decode().split("\0") if p]
        base = os.path.join(self.root, folder)
        paths = []
        for cwd, _, names in os.walk(base):
            for name in names:
                paths.append(os.path.relpath(os.path.join(cwd, name), self.root).replace(os.sep, "/"))
        return sorted(paths)

    def read(self, path):
        if self.is_git:
            return self._git("show", f"HEAD:{path}")
        with open(os.path.join(self.root, path), "rb") as f:
            return f.read()

    def extract(self, paths, dest):
        """Copy `paths` into `dest`, keeping the checkout's layout."""
        if not paths:
            return
        if self.is_git:  # one git call for all of them
            with tarfile.open(fileobj=io.BytesIO(self._git("archive", "--format=tar", "HEAD",
                                                           "--", *paths))) as tar:
                tar.extractall(dest, filter="data")
            return
        for path in paths:
            target = os.path.join(dest, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(self.root, path), target)


def lay_out_tests(tree, dest):
    """Lay Caffe's test files and the prototxts test_draw reads into `dest`; returns the test
    files' paths (relative to dest)."""
    tests = [p for p in tree.list(TEST_DIR)
             if os.path.basename(p).startswith("test_") and p.endswith(".py")]
    if not tests:
        raise SystemExit(f"--caffe {tree.root}: no {TEST_DIR}/test_*.py")
    prototxts = [p for folder in ("models", "examples") for p in tree.list(folder)
                 if p.endswith(".prototxt")]
    tree.extract(tests + prototxts, dest)
    os.makedirs(os.path.join(dest, "models"), exist_ok=True)  # test_draw asserts both exist
    os.makedirs(os.path.join(dest, "examples"), exist_ok=True)
    return sorted(tests)


# `six` is a Python 2/3 bridge some of Caffe's tests import; when it is not installed the runner
# provides the few names they use.
SIX_STAND_IN = '''"""Stand-in for the `six` package (Python 3 only), written by crema's pycaffe_compat."""
PY2, PY3 = False, True
string_types, text_type, binary_type, integer_types = (str,), str, bytes, (int,)
def itervalues(d, **kw): return iter(d.values(**kw))
def iteritems(d, **kw): return iter(d.items(**kw))
def iterkeys(d, **kw): return iter(d.keys(**kw))
'''

# The pytest subprocess: argv[1] is the JSON report's path, the rest are pytest's arguments.
BOOTSTRAP = ("import sys; from engine.tools.pycaffe_compat import install_caffe_alias, "
             "ResultRecorder; install_caffe_alias(); import pytest; "
             "sys.exit(pytest.main(sys.argv[2:], plugins=[ResultRecorder(sys.argv[1])]))")


def support_folder(dest):
    """A folder for PYTHONPATH with what the tests import besides caffe (six, when missing)."""
    os.makedirs(dest, exist_ok=True)
    if importlib.util.find_spec("six") is None:
        with open(os.path.join(dest, "six.py"), "w") as f:
            f.write(SIX_STAND_IN)
    return dest


# --- running and reporting ---------------------------------------------------------------------

@dataclass
class Result:
    test_id: str
    outcome: str      # pass, fail, error, skip
    reason: str = ""  # first line of the failure, error or skip message


def first_error_line(text):
    """The line that says what went wrong in a pytest failure text: the first 'E   ...' line
    (the exception), else the last non-empty line."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith("E   "):
            return line[4:].strip()
    return lines[-1].strip() if lines else ""


class ResultRecorder:
    """pytest plugin: one Result per test (and per file that fails to import), written as JSON
    to `path` at the end of the session."""

    def __init__(self, path):
        self.path = path
        self.results = {}  # node id -> Result, in the order tests report

    def _set(self, nodeid, outcome, reason=""):
        self.results[nodeid] = Result(nodeid, outcome, reason)

    def pytest_collectreport(self, report):
        if report.failed:
            self._set(f"{report.nodeid} (import)", "error", first_error_line(report.longreprtext))

    def pytest_runtest_logreport(self, report):
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self._set(report.nodeid, "skip", reason.removeprefix("Skipped: "))
        elif report.failed:
            outcome = "fail" if report.when == "call" else "error"
            self._set(report.nodeid, outcome, first_error_line(report.longreprtext))
        elif report.when == "call":
            self._set(report.nodeid, "pass")

    def pytest_sessionfinish(self):
        with open(self.path, "w") as f:
            json.dump([asdict(r) for r in self.results.values()], f)


def run_test_file(test_path, work_dir, support, timeout, select=None):
    """Run one of Caffe's test files under pytest in a subprocess (working directory
    `work_dir`); returns its Results, with ids relative to the test's folder."""
    name = os.path.basename(test_path)
    report = os.path.join(work_dir, name + ".json")
    ini = os.path.join(work_dir, "pytest.ini")
    with open(ini, "w") as f:
        f.write("[pytest]\n")  # so that no pytest configuration around the folder applies
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [support, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-c", BOOTSTRAP, report, test_path, "-q", "-p", "no:cacheprovider",
           "-c", ini, "--rootdir", os.path.dirname(test_path)]
    if select:
        cmd += ["-k", select]
    try:
        proc = subprocess.run(cmd, cwd=work_dir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [Result(name, "error", f"timed out after {timeout} s")]
    if not os.path.exists(report):
        tail = proc.stdout.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return [Result(name, "error", f"pytest exited {proc.returncode}: {tail[0]}")]
    with open(report) as f:
        results = [Result(**r) for r in json.load(f)]
    if not results and proc.returncode not in (0, 5):
        return [Result(name, "error", f"pytest exited {proc.returncode} with no test result")]
    return results


def format_table(results):
    width = max([len(r.test_id) for r in results] + [len("test")])
    lines = [f"{'test':<{width}}  {'result':<6}  reason", f"{'-' * width}  ------  ------"]
    for r in results:
        lines.append(f"{r.test_id:<{width}}  {r.outcome:<6}  {r.reason}".rstrip())
    counts = {k: sum(r.outcome == k for r in results) for k in ("pass", "fail", "error", "skip")}
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
                 f"{counts['skip']} skipped (of {len(results)})")
    return "\n".join(lines)


def run_suite(caffe_root, keep=None, select=None, timeout=600):
    tree = CaffeTree(caffe_root)
    scratch = tempfile.mkdtemp(prefix="crema-pycaffe-")
    try:
        root = keep or os.path.join(scratch, "caffe")
        os.makedirs(root, exist_ok=True)
        tests = lay_out_tests(tree, root)
        support = support_folder(os.path.join(scratch, "support"))
        results = []
        for test in tests:
            work = os.path.join(scratch, "work", os.path.basename(test)[:-3])
            os.makedirs(work)
            results += run_test_file(os.path.join(root, test), work, support, timeout, select)
        return results
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m engine.tools.pycaffe_compat",
                                 description="Run Caffe's pycaffe tests against crema.")
    ap.add_argument("--caffe", required=True,
                    help="a Caffe checkout: a work tree, or a git directory read at HEAD")
    ap.add_argument("--keep", help="lay Caffe's test files out here and keep them")
    ap.add_argument("-k", dest="select", help="pytest -k expression to run only some tests")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per test file")
    args = ap.parse_args(argv)
    results = run_suite(args.caffe, keep=args.keep, select=args.select, timeout=args.timeout)
    print(format_table(results))
    return 1 if any(r.outcome in ("fail", "error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
