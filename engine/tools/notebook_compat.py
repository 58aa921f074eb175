"""Run the code cells of four of BVLC Caffe's example notebooks against crema, on local stand-ins.

    python -m engine.tools.notebook_compat --caffe /path/to/caffe --out DIR [--only NAME ...]

Notebooks: examples/00-classification.ipynb, 01-learning-lenet.ipynb, net_surgery.ipynb and
02-fine-tuning.ipynb, read from the Caffe checkout given by --caffe (a work tree or a git
directory, see pycaffe_compat.CaffeTree). `caffe` is crema (pycaffe_compat.install_caffe_alias).

Under DIR/caffe the tool lays out a small Caffe root: the files the notebooks read that are part
of the checkout (prototxts, example images, the ImageNet mean .npy, style names) and stand-ins,
made here, for everything the notebooks download or build with Caffe's scripts:
- models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel: CaffeNet (deploy.prototxt
  of the checkout) with random weights scaled to unit activations, zero biases, written by crema;
- data/ilsvrc12/synset_words.txt (1000 made-up class names) and imagenet_mean.binaryproto (a
  constant BGR mean, 3x256x256);
- examples/mnist/mnist_{train,test}_lmdb: digits drawn with Pillow's font at random sizes and
  places, with noise (1000 and 500 Datum records, as Caffe's convert_mnist_data writes);
- data/flickr_style/{train,test}.txt and images/: 5 "styles" of coloured noise images.

Each notebook runs in its own Python process (working directory DIR/caffe/examples, as the
notebooks expect; TMPDIR under DIR; matplotlib's Agg backend, figures saved as PNG under
DIR/figures). Cells run in order in one namespace, like a kernel, and a failing cell does not stop
the next ones. On the way:
- Python 2 source (print statements, iteritems, xrange, ...) is translated with lib2to3;
- IPython magics: `%matplotlib` is dropped, `%timeit STMT` times STMT (best of 3), `%%time`
  times the cell; other magics are dropped (noted);
- shell lines (`!cmd`): `cat` and `diff` are done in Python, `wget -O FILE` gets the stand-in cat
  image, Caffe's download/convert scripts are not run (their output is a stand-in), anything else
  is not run (noted);
- `caffe.set_device(...)` / `caffe.set_mode_gpu()` lines are dropped: crema runs on CPUs;
- a few cells are edited to keep the run short or Python-3 valid: SUBSTITUTIONS lists each edit
  with its reason, and the report names every one applied.

Prints, per notebook, every code cell ("cell N" is its index in the notebook's list of cells):
ran / skipped / failed, with the error or the notes. Exits 1 if a cell failed.
"""
import argparse
import ast
import contextlib
import difflib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from .pycaffe_compat import CaffeTree, install_caffe_alias

NOTEBOOKS = ("00-classification", "01-learning-lenet", "net_surgery", "02-fine-tuning")

CAFFENET_DEPLOY = "models/bvlc_reference_caffenet/deploy.prototxt"
CAFFENET_WEIGHTS = "models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel"

# Files the notebooks read that a Caffe checkout has.
CHECKOUT_FILES = [f"examples/{name}.ipynb" for name in NOTEBOOKS] + [
    CAFFENET_DEPLOY,
    "examples/images/cat.jpg",
    "examples/images/cat_gray.jpg",
    "python/caffe/imagenet/ilsvrc_2012_mean.npy",
    "examples/net_surgery/conv.prototxt",
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt",
    "examples/mnist/lenet_auto_solver.prototxt",
    "examples/finetune_flickr_style/style_names.txt",
]


@dataclass(frozen=True)
class Substitution:
    cell: int     # index in the notebook's list of cells
    old: str      # text of the cell's source to replace (must occur)
    new: str
    reason: str


SUBSTITUTIONS = {
    "00-classification": [
        Substitution(12, "net.blobs['data'].reshape(50,", "net.blobs['data'].reshape(5,",
                     "batch 50 -> 5 to keep CaffeNet's CPU time short"),
    ],
    "01-learning-lenet": [
        Substitution(28, "niter = 200", "niter = 40",
                     "200 -> 40 training iterations (LeNet on a CPU)"),
        Substitution(28, "for test_it in range(100):", "for test_it in range(10):",
                     "100 -> 10 test batches per test (the stand-in test set has 500 images)"),
        Substitution(28, "correct / 1e4", "correct / 1e3",
                     "accuracy over the 10 x 100 images tested"),
        Substitution(36, "test_interval = niter / 10", "test_interval = niter // 10",
                     "Python 2 integer division (a float index fails in Python 3)"),
    ],
    "02-fine-tuning": [
        Substitution(8, "delimiter='\\n'", "delimiter='\\t'",
                     "numpy >= 1.23 refuses a newline delimiter; a tab reads each line whole, "
                     "as the notebook means"),
        Substitution(10, "tempfile.NamedTemporaryFile(delete=False)",
                     "tempfile.NamedTemporaryFile(mode='w', delete=False)",
                     "Python 2 wrote str to the binary temporary file"),
        Substitution(14, "batch_size=50", "batch_size=10",
                     "batch 50 -> 10 to keep CaffeNet's CPU time short"),
        Substitution(28, "tempfile.NamedTemporaryFile(delete=False)",
                     "tempfile.NamedTemporaryFile(mode='w', delete=False)",
                     "Python 2 wrote str to the binary temporary file"),
        Substitution(32, "niter = 200", "niter = 5",
                     "200 -> 5 training iterations per solver (CaffeNet on a CPU)"),
        Substitution(37, "test_iters=10", "test_iters=2",
                     "10 -> 2 test batches per evaluation"),
    ],
}

# Caffe scripts that download or build data, and what the tool put in place instead.
STAND_IN_SCRIPTS = {
    "download_model_binary.py": f"{CAFFENET_WEIGHTS} (random weights)",
    "get_ilsvrc_aux.sh": "data/ilsvrc12/synset_words.txt and imagenet_mean.binaryproto",
    "get_mnist.sh": "examples/mnist/mnist_{train,test}_lmdb (drawn digits)",
    "create_mnist.sh": "examples/mnist/mnist_{train,test}_lmdb (drawn digits)",
    "assemble_data.py": "data/flickr_style/{train,test}.txt and images",
}

GPU_CALL = re.compile(r"^\s*caffe\.(set_mode_gpu\(\)|set_device\(\s*\d+\s*\))\s*(#.*)?$")


# --- stand-ins --------------------------------------------------------------------------------

def write_random_weights(deploy, out, seed=0, pixel_std=50.0):
    """A caffemodel for the net of `deploy` with random weights and zero biases, scaled layer by
    layer so that each layer's output has unit standard deviation on inputs like the notebooks'
    (mean-subtracted pixels, std `pixel_std`): with unscaled weights the activations grow by
    orders of magnitude through CaffeNet and fine-tuning from them diverges at once."""
    import engine
    net = engine.Net(deploy, engine.TEST)
    rng = np.random.default_rng(seed)
    for name in net.inputs:
        blob = net.blobs[name]
        blob.reshape(1, *blob.shape[1:])
        blob.data[...] = rng.normal(0.0, pixel_std, blob.shape)
    for name, blobs in net.params.items():
        weights = blobs[0].data
        weights[...] = rng.standard_normal(weights.shape, dtype=np.float32)
        for bias in blobs[1:]:
            bias.data[...] = 0
        net.forward(end=name)
        std = float(net.blobs[net.top_names[name][0]].data.std())
        if std > 0:
            weights /= std
    net.save(out)
    return out


def write_synset_words(path, count=1000):
    with open(path, "w") as f:
        for i in range(count):
            f.write(f"n{i:08d} stand-in class {i}\n")


def write_mean_binaryproto(path, size=256, bgr=(104.0, 117.0, 123.0)):
    """Caffe's mean file layout: a BlobProto 1x3xHxW, here a constant per channel."""
    from engine.io import array_to_blobproto
    mean = np.empty((1, 3, size, size), np.float32)
    mean[0] = np.asarray(bgr, np.float32)[:, None, None]
    with open(path, "wb") as f:
        f.write(array_to_blobproto(mean).SerializeToString())


def draw_digits(count, seed):
    """(count, 28, 28) uint8 images of the digits 0-9 and their labels: each digit is drawn with
    Pillow's default font, scaled to 14-22 pixels high, placed at a random offset, with noise."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default()
    glyphs = []
    for digit in range(10):
        canvas = Image.new("L", (32, 32))
        ImageDraw.Draw(canvas).text((4, 4), str(digit), fill=255, font=font)
        glyphs.append(canvas.crop(canvas.getbbox()))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = np.zeros((count, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        glyph = glyphs[label]
        height = int(rng.integers(14, 23))
        width = max(4, round(glyph.width * height / glyph.height))
        scaled = np.asarray(glyph.resize((width, height), Image.BILINEAR))
        y, x = rng.integers(0, 28 - height + 1), rng.integers(0, 28 - width + 1)
        images[i, y:y + height, x:x + width] = scaled
        noise = rng.integers(0, 40, (28, 28))
        images[i] = np.clip(images[i].astype(np.int32) + noise, 0, 255)
    return images, labels


def write_digit_lmdbs(folder, train=1000, test=500):
    from engine.data.lmdb_io import write_arrays
    for name, count, seed in (("mnist_train_lmdb", train, 1), ("mnist_test_lmdb", test, 2)):
        images, labels = draw_digits(count, seed)
        write_arrays(os.path.join(folder, name), images, labels, overwrite=True)


def write_style_images(folder, classes=5, train=30, test=20, size=48):
    """data/flickr_style: JPEG images whose colour cast depends on the label, and Caffe's image
    lists (absolute path, label), as assemble_data.py writes them."""
    from PIL import Image
    rng = np.random.default_rng(3)
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    hues = rng.uniform(40, 215, (classes, 3))
    for split, count in (("train", train), ("test", test)):
        lines = []
        for i in range(count):
            label = i % classes
            pixels = hues[label] + rng.normal(0, 30, (size, size, 3))
            path = os.path.join(images, f"{split}_{i:03d}.jpg")
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
            lines.append(f"{path} {label}\n")
        with open(os.path.join(folder, f"{split}.txt"), "w") as f:
            f.writelines(lines)


def make_caffe_root(tree, root):
    """Lay out the checkout's files and the stand-ins under `root`."""
    tree.extract(CHECKOUT_FILES, root)
    def folder(path):
        full = os.path.join(root, path)
        os.makedirs(full, exist_ok=True)
        return full
    write_random_weights(os.path.join(root, CAFFENET_DEPLOY), os.path.join(root, CAFFENET_WEIGHTS))
    write_synset_words(os.path.join(folder("data/ilsvrc12"), "synset_words.txt"))
    write_mean_binaryproto(os.path.join(folder("data/ilsvrc12"), "imagenet_mean.binaryproto"))
    write_digit_lmdbs(folder("examples/mnist"))
    write_style_images(folder("data/flickr_style"))
    folder("models/finetune_flickr_style")  # the fine-tuning solvers' snapshot prefix


# --- turning a notebook cell into Python 3 -------------------------------------------------------

@dataclass
class Cell:
    index: int
    source: str


def code_cells(notebook):
    """The code cells of a notebook (nbformat 4 JSON, or its dict)."""
    if isinstance(notebook, str):
        notebook = json.loads(notebook)
    cells = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            cells.append(Cell(index, "".join(source) if isinstance(source, list) else source))
    return cells


def _logical_lines(source):
    """Lines, with shell lines continued by a trailing backslash joined to the next."""
    lines, pending = [], None
    for line in source.split("\n"):
        if pending is not None:
            pending = pending[:-1].rstrip() + " " + line.strip()
        elif line.lstrip().startswith("!"):
            pending = line
        else:
            lines.append(line)
            continue
        if not pending.endswith("\\"):
            lines.append(pending)
            pending = None
    if pending is not None:
        lines.append(pending.rstrip("\\"))
    return lines


def translate_magics(source):
    """(Python source, notes, python_lines): IPython shell lines and magics replaced by calls to
    the runner's helpers (__crema_shell__, __crema_timeit__) or `pass`, GPU calls dropped.
    python_lines counts the lines that were Python to begin with (not comments or blank)."""
    notes, out, python_lines = [], [], 0
    lines = _logical_lines(source)
    if lines and lines[0].startswith("%%"):
        magic = lines[0][2:].split()[0] if lines[0][2:].strip() else ""
        if magic == "time":
            notes.append("%%time: the cell is timed")
            lines = ["__crema_time_cell__ = True"] + lines[1:]
        else:
            notes.append(f"%%{magic} dropped")
            lines = lines[1:]
    for line in lines:
        stripped = line.lstrip()
        indent = line[:len(line) - len(stripped)]
        if stripped.startswith("!"):
            out.append(f"{indent}__crema_shell__({stripped[1:].strip()!r})")
        elif stripped.startswith("%"):
            name, _, rest = stripped[1:].partition(" ")
            if name == "timeit":
                out.append(f"{indent}__crema_timeit__({rest.strip()!r})")
                notes.append(f"%timeit {rest.strip()}: timed, best of 3")
            else:
                out.append(f"{indent}pass")
                notes.append(f"%{name} dropped" + (" (figures go to PNG files)"
                                                    if name == "matplotlib" else ""))
        elif GPU_CALL.match(line):
            out.append(f"{indent}pass")
            notes.append(f"{stripped.split('#')[0].strip()} dropped: crema runs on CPUs")
        else:
            if stripped and not stripped.startswith("#"):
                python_lines += 1
            out.append(line)
    return "\n".join(out) + "\n", notes, python_lines


def to_python3(code):
    """Python 2 source -> Python 3 with lib2to3 (the standard library's, up to Python 3.12).
    Returns (code, note); code that lib2to3 cannot read, or a Python without it, is returned
    as it is."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lib2to3 import pgen2, refactor
    except ImportError:
        return code, "not translated from Python 2: this Python has no lib2to3"
    fixers = [f for f in refactor.get_fixers_from_package("lib2to3.fixes")
              if not f.endswith(".fix_import")]  # no files around to tell relative imports
    try:
        translated = str(refactor.RefactoringTool(fixers).refactor_string(code, "<cell>"))
    except (pgen2.parse.ParseError, pgen2.tokenize.TokenError):
        return code, None  # not Python 2 (or not Python): run it as it is
    if translated == code:
        return code, None
    return translated, "Python 2 source translated by lib2to3"


def apply_substitutions(cell, substitutions):
    """(source, notes, missing): the cell with this notebook's edits for it applied."""
    source, notes, missing = cell.source, [], []
    for sub in substitutions:
        if sub.cell != cell.index:
            continue
        if sub.old not in source:
            missing.append(sub)
            continue
        source = source.replace(sub.old, sub.new)
        notes.append(f"edited {sub.old!r} -> {sub.new!r}: {sub.reason}")
    return source, notes, missing


# --- running --------------------------------------------------------------------------------------

@dataclass
class CellResult:
    index: int
    status: str                              # ran, skipped, failed
    error: str = ""                          # first line of the exception, when failed
    notes: list = field(default_factory=list)
    seconds: float = 0.0


class Shell:
    """What a cell's `!cmd` lines do here (see the module docstring)."""

    def __init__(self, stand_in_image):
        self.stand_in_image = stand_in_image
        self.notes = []
        self.ran = []  # commands done in Python

    def __call__(self, command):
        words = command.split()
        program = os.path.basename(words[0]) if words else ""
        if program == "cat" and len(words) == 2:
            with open(words[1]) as f:
                print(f.read(), end="")
            self.ran.append(command)
            self.notes.append(f"!{command}: done in Python")
        elif program == "diff" and len(words) == 3:
            with open(words[1]) as a, open(words[2]) as b:
                print("".join(difflib.unified_diff(a.readlines(), b.readlines(), words[1],
                                                   words[2])), end="")
            self.ran.append(command)
            self.notes.append(f"!{command}: done in Python (unified diff)")
        elif program == "wget" and "-O" in words[:-1]:
            target = words[words.index("-O") + 1]
            shutil.copyfile(self.stand_in_image, target)
            self.ran.append(command)
            self.notes.append(f"!{command}: no network; {target} is a copy of "
                              f"{os.path.basename(self.stand_in_image)}")
        elif program in STAND_IN_SCRIPTS:
            self.notes.append(f"!{command}: not run; stand-in {STAND_IN_SCRIPTS[program]}")
        elif program == "python" and len(words) > 1 and \
                os.path.basename(words[1]) in STAND_IN_SCRIPTS:
            self.notes.append(f"!{command}: not run; stand-in "
                              f"{STAND_IN_SCRIPTS[os.path.basename(words[1])]}")
        else:
            self.notes.append(f"!{command}: not run (no emulation)")


def run_code(code, filename, namespace):
    """exec the code; a final expression's value is printed (as a notebook shows Out[n])."""
    tree = ast.parse(code, filename)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
        if value is not None:
            print(repr(value))


def _timeit(namespace):
    def timeit(statement):
        code = compile(statement, "<timeit>", "exec")
        times = []
        for _ in range(3):
            start = time.perf_counter()
            exec(code, namespace)
            times.append(time.perf_counter() - start)
        print(f"1 loop, best of 3: {min(times):.3g} s per loop")
    return timeit


def _save_figures(figures_dir, prefix):
    if "matplotlib.pyplot" not in sys.modules:
        return
    plt = sys.modules["matplotlib.pyplot"]
    for k, number in enumerate(plt.get_fignums()):
        os.makedirs(figures_dir, exist_ok=True)
        plt.figure(number).savefig(os.path.join(figures_dir, f"{prefix}-{k}.png"), dpi=60)
    plt.close("all")


def run_cells(name, cells, substitutions, *, stand_in_image, figures_dir=None, output=None):
    """Run code cells in order in one namespace; returns [CellResult]. `output` (a text file)
    gets each cell's printed output."""
    namespace = {"__name__": "__main__"}
    results = []
    for cell in cells:
        source, notes, missing = apply_substitutions(cell, substitutions)
        if missing:
            results.append(CellResult(cell.index, "failed", "the notebook changed: edit "
                                      f"{missing[0].old!r} does not apply", notes))
            continue
        code, magic_notes, python_lines = translate_magics(source)
        notes += magic_notes
        code, note = to_python3(code)
        if note:
            notes.append(note)
        shell = Shell(stand_in_image)
        namespace.update(__crema_shell__=shell, __crema_timeit__=_timeit(namespace))
        namespace.pop("__crema_time_cell__", None)
        printed = io.StringIO()
        start = time.perf_counter()
        result = CellResult(cell.index, "ran")
        try:
            with contextlib.redirect_stdout(printed):
                run_code(code, f"<{name} cell {cell.index}>", namespace)
        except BaseException as exc:  # a cell's SystemExit or KeyboardInterrupt is its error
            if isinstance(exc, KeyboardInterrupt):
                raise
            message = str(exc).strip().splitlines()
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")
        result.seconds = time.perf_counter() - start
        if namespace.pop("__crema_time_cell__", None):
            print(f"Wall time: {result.seconds:.3g} s", file=printed)
        result.notes = notes + shell.notes
        if result.status == "ran" and python_lines == 0 and not shell.ran and \
                "__crema_timeit__" not in code:
            result.status = "skipped"  # nothing of the cell ran: its commands were not run
        if output is not None:
            output.write(f"--- {name} cell {cell.index}: {result.status}\n{printed.getvalue()}")
            output.flush()
        if figures_dir:
            _save_figures(figures_dir, f"{name}-cell{cell.index}")
        results.append(result)
    return results


def run_notebook(name, root, out_dir):
    """Run one notebook in this process (the child side of main); writes OUT/<name>.json."""
    install_caffe_alias()
    with open(os.path.join(root, "examples", f"{name}.ipynb")) as f:
        cells = code_cells(f.read())
    os.chdir(os.path.join(root, "examples"))
    with open(os.path.join(out_dir, f"{name}.output.txt"), "w") as output:
        results = run_cells(name, cells, SUBSTITUTIONS.get(name, []),
                            stand_in_image=os.path.join(root, "examples/images/cat.jpg"),
                            figures_dir=os.path.join(out_dir, "figures"), output=output)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump([asdict(r) for r in results], f, indent=1)
    return results


def format_report(name, results):
    counts = {s: sum(r.status == s for r in results) for s in ("ran", "skipped", "failed")}
    lines = [f"== {name}: {len(results)} code cells: {counts['ran']} ran, {counts['skipped']} "
             f"skipped, {counts['failed']} failed"]
    for r in results:
        head = f"  cell {r.index:>2}  {r.status:<7} {r.seconds:6.1f} s"
        lines.append(f"{head}  {r.error}".rstrip())
        lines.extend(f"{' ' * 30}- {note}" for note in r.notes)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m engine.tools.notebook_compat",
                                 description="Run Caffe's example notebooks against crema.")
    ap.add_argument("--caffe", help="a Caffe checkout: a work tree, or a git directory")
    ap.add_argument("--out", required=True, help="folder for the stand-ins, outputs and figures")
    ap.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per notebook")
    ap.add_argument("--run-notebook", help=argparse.SUPPRESS)  # the child process's side
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    root = os.path.join(out, "caffe")
    if args.run_notebook:
        run_notebook(args.run_notebook, root, out)
        return 0
    if not args.caffe:
        ap.error("--caffe is required")
    os.makedirs(out, exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    print("making the stand-ins ...", flush=True)
    make_caffe_root(CaffeTree(args.caffe), root)
    env = dict(os.environ, MPLBACKEND="Agg", TMPDIR=os.path.join(out, "tmp"))
    os.makedirs(env["TMPDIR"], exist_ok=True)
    failed = False
    for name in args.only or NOTEBOOKS:
        report = os.path.join(out, f"{name}.json")
        if os.path.exists(report):
            os.remove(report)
        # faulthandler: a crash in native code still shows where the notebook was
        cmd = [sys.executable, "-X", "faulthandler", "-m", "engine.tools.notebook_compat",
               "--out", out,
               "--run-notebook", name]
        try:
            proc = subprocess.run(cmd, env=env, timeout=args.timeout, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
            problem = None if os.path.exists(report) else \
                f"exited {proc.returncode}: {proc.stdout.decode(errors='replace')[-2000:]}"
        except subprocess.TimeoutExpired:
            problem = f"timed out after {args.timeout} s"
        if problem:
            print(f"== {name}: did not finish ({problem})", flush=True)
            failed = True
            continue
        with open(report) as f:
            results = [CellResult(**r) for r in json.load(f)]
        print(format_report(name, results), flush=True)
        failed |= any(r.status == "failed" for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
