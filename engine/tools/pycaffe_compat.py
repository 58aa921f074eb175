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
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass

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

BOOTSTRAP = ("import sys; from engine.tools.pycaffe_compat import install_caffe_alias; "
             "install_caffe_alias(); import pytest; sys.exit(pytest.main(sys.argv[1:]))")


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


def _first_line(message, details):
    """The most telling line: pytest's message unless it is a generic one, else the first
    'E   ...' line of the traceback text."""
    generic = ("collection failure", "failed on setup", "failed on teardown")
    message = (message or "").strip()
    if message and not any(message.startswith(g) for g in generic):
        return message.splitlines()[0]
    for line in (details or "").splitlines():
        if line.startswith("E   "):
            return line[4:].strip()
    return message.splitlines()[0] if message else ""


def parse_junit(path, test_file):
    """Results from a pytest JUnit XML report; ids look like test_net.py::TestNet::test_memory."""
    root = ET.parse(path).getroot()
    results = []
    for case in root.iter("testcase"):
        cls = case.get("classname", "")
        if cls:  # classname is module[.Class]: the module is the file already named
            test_id = "::".join([test_file] + cls.split(".")[1:] + [case.get("name", "")])
        else:    # a file that failed to import (collect) has no test of its own
            test_id = f"{test_file} (import)"
        outcome, reason = "pass", ""
        for tag, name in (("failure", "fail"), ("error", "error"), ("skipped", "skip")):
            node = case.find(tag)
            if node is not None:
                outcome, reason = name, _first_line(node.get("message"), node.text)
                break
        results.append(Result(test_id, outcome, reason))
    return results


def run_test_file(test_path, work_dir, support, timeout, select=None):
    """Run one of Caffe's test files under pytest in a subprocess; returns its Results."""
    name = os.path.basename(test_path)
    report = os.path.join(work_dir, name + ".xml")
    ini = os.path.join(work_dir, "pytest.ini")
    with open(ini, "w") as f:
        f.write("[pytest]\n")  # so that no pytest configuration around the folder applies
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [support, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-c", BOOTSTRAP, test_path, "-q", "-p", "no:cacheprovider",
           "-c", ini, "--rootdir", work_dir, f"--junitxml={report}", "-o", "junit_family=xunit1"]
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
    results = parse_junit(report, name)
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
