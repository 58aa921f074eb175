"""The tools that run Caffe's own pycaffe tests and example notebooks against crema
(engine/tools/pycaffe_compat.py, notebook_compat.py), on made-up inputs: no Caffe sources needed;
and pycaffe behaviours those runs asked of crema (Solver.lr)."""
import importlib
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import engine
from engine.tools import notebook_compat as nb
from engine.tools import pycaffe_compat as pc


@pytest.fixture
def caffe_alias():
    """The alias installed for one test, then removed with every caffe.* entry it made."""
    before = list(sys.meta_path)
    yield pc.install_caffe_alias()
    sys.meta_path[:] = before
    for name in [n for n in sys.modules if n == "caffe" or n.startswith("caffe.")]:
        del sys.modules[name]


def test_alias_hands_out_cremas_own_modules(caffe_alias):
    import caffe
    import caffe.io
    import caffe.net_spec
    from caffe import layers as L, params as P
    from caffe.proto import caffe_pb2
    assert caffe is engine and caffe_alias is engine
    assert caffe.Net is engine.Net and caffe.SGDSolver is engine.SGDSolver
    assert caffe.io is engine.io and caffe.net_spec is engine.netspec
    assert caffe_pb2 is engine.proto.caffe_pb2
    assert L is engine.layers and P.Pooling.MAX == engine.crema_pb2.PoolingParameter.MAX
    # crema's modules keep their own identity (reload, pickling and messages name engine.*)
    assert engine.io.__spec__.name == "engine.io" and engine.__spec__.name == "engine"
    assert not hasattr(engine.io, "__path__")  # a module stays a module, not a package
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("caffe.no_such_module")


def test_alias_is_idempotent(caffe_alias):
    pc.install_caffe_alias()
    assert sum(isinstance(f, pc._CaffeAlias) for f in sys.meta_path) == 1


def test_first_error_line_and_table():
    text = "def test():\n>   assert x\nE   AssertionError: 1 != 2\nE   more\n\nfile.py:3: Error"
    assert pc.first_error_line(text) == "AssertionError: 1 != 2"
    assert pc.first_error_line("no marker\nlast line\n") == "last line"
    rows = [pc.Result("a.py::t1", "pass"), pc.Result("a.py::t2", "fail", "boom"),
            pc.Result("b.py (import)", "error", "ModuleNotFoundError: x"),
            pc.Result("a.py::t3", "skip", "no GPU")]
    table = pc.format_table(rows).splitlines()
    assert table[3].split() == ["a.py::t2", "fail", "boom"]
    assert table[-1] == "1 passed, 1 failed, 1 errors, 1 skipped (of 4)"


def _fake_checkout(root):
    files = {
        "python/caffe/test/test_alias.py": """\
            import unittest
            import caffe, engine, six
            from test_helper import value
            def test_is_engine():
                assert caffe.Net is engine.Net and value == 3
                assert list(six.itervalues({"a": 1})) == [1]
            def test_fails():
                assert caffe.TRAIN == 5, "TRAIN is not 5"
            class TestSetUp(unittest.TestCase):
                def setUp(self):
                    raise RuntimeError("setUp broke")
                def test_never_runs(self):
                    pass
                @unittest.skip("not here")
                def test_skipped(self):
                    pass
            """,
        "python/caffe/test/test_broken.py": "import caffe.no_such_module\n",
        "python/caffe/test/test_helper.py": "value = 3\n",
        "python/caffe/test/readme.txt": "not a test\n",
        "models/m/deploy.prototxt": "name: 'm'\n",
        "models/m/solver.prototxt": "base_lr: 1\n",
        "examples/e/net.prototxt": "name: 'e'\n",
        "examples/e/notes.md": "text\n",
    }
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))


def test_lays_out_tests_from_a_work_tree(tmp_path):
    _fake_checkout(tmp_path / "caffe")
    tree = pc.CaffeTree(str(tmp_path / "caffe"))
    assert not tree.is_git
    tests = pc.lay_out_tests(tree, str(tmp_path / "out"))
    assert tests == ["python/caffe/test/test_alias.py", "python/caffe/test/test_broken.py",
                     "python/caffe/test/test_helper.py"]
    copied = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
              if p.is_file()}
    # test_draw walks models/ and examples/ for net prototxts, solvers included (it skips them)
    assert copied == set(tests) | {"models/m/deploy.prototxt", "models/m/solver.prototxt",
                                   "examples/e/net.prototxt"}


def test_reads_a_git_directory_at_head(tmp_path):
    work = tmp_path / "caffe"
    _fake_checkout(work)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    (work / "python/caffe/test/test_helper.py").write_text("value = 4\n")  # not committed
    tree = pc.CaffeTree(str(work / ".git"))
    assert tree.is_git
    assert tree.read("python/caffe/test/test_helper.py") == b"value = 3\n"
    pc.lay_out_tests(tree, str(tmp_path / "out"))
    assert (tmp_path / "out/python/caffe/test/test_helper.py").read_text() == "value = 3\n"
    with pytest.raises(SystemExit, match="neither a Caffe work tree"):
        pc.CaffeTree(str(tmp_path / "out/models"))


def test_runs_a_test_file_with_caffe_aliased(tmp_path):
    _fake_checkout(tmp_path / "caffe")
    tree = pc.CaffeTree(str(tmp_path / "caffe"))
    root = tmp_path / "laid"
    pc.lay_out_tests(tree, str(root))
    work = tmp_path / "work"
    work.mkdir()
    support = pc.support_folder(str(tmp_path / "support"))
    rows = pc.run_test_file(str(root / "python/caffe/test/test_alias.py"), str(work), support,
                            timeout=300)
    assert [(r.test_id, r.outcome, r.reason) for r in rows] == [
        ("test_alias.py::test_is_engine", "pass", ""),
        ("test_alias.py::test_fails", "fail", "AssertionError: TRAIN is not 5"),
        # pytest runs a unittest setUp inside the test's call: its exception is a failure
        ("test_alias.py::TestSetUp::test_never_runs", "fail", "RuntimeError: setUp broke"),
        ("test_alias.py::TestSetUp::test_skipped", "skip", "not here")]
    broken = pc.run_test_file(str(root / "python/caffe/test/test_broken.py"), str(work),
                              support, timeout=300)
    assert [(r.test_id, r.outcome) for r in broken] == [("test_broken.py (import)", "error")]
    assert "No module named 'caffe.no_such_module'" in broken[0].reason


def test_six_stand_in_covers_what_the_tests_use(tmp_path):
    namespace = {}
    exec(pc.SIX_STAND_IN, namespace)
    d = {"a": 1, "b": 2}
    assert list(namespace["itervalues"](d)) == [1, 2]
    assert list(namespace["iteritems"](d)) == [("a", 1), ("b", 2)]
    assert namespace["PY3"] and not namespace["PY2"]


# --- notebooks --------------------------------------------------------------------------------

def test_code_cells_keep_their_notebook_index():
    notebook = {"cells": [{"cell_type": "markdown", "source": ["# title"]},
                          {"cell_type": "code", "source": ["a = 1\n", "b = 2"]},
                          {"cell_type": "code", "source": "c = 3"}]}
    cells = nb.code_cells(json.dumps(notebook))
    assert [(c.index, c.source) for c in cells] == [(1, "a = 1\nb = 2"), (2, "c = 3")]


def test_magics_and_shell_lines_become_calls():
    source = textwrap.dedent("""\
        %matplotlib inline
        caffe.set_device(0)  # the first GPU
        caffe.set_mode_gpu()
        if not ok:
            !../data/get.sh \\
                --flag
        %timeit net.forward()
        x = 1""")
    code, notes, python_lines = nb.translate_magics(source)
    assert code.splitlines() == [
        "pass", "pass", "pass", "if not ok:",
        "    __crema_shell__('../data/get.sh --flag')",
        "__crema_timeit__('net.forward()')", "x = 1"]
    assert python_lines == 2  # `if not ok:` and `x = 1`
    assert "caffe.set_device(0) dropped: crema runs on CPUs" in notes
    compile(code, "<cell>", "exec")
    timed, notes, _ = nb.translate_magics("%%time\nfor i in range(2): pass")
    assert timed.startswith("__crema_time_cell__ = True\n") and "%%time: the cell is timed" in notes


def test_python2_source_is_translated():
    code, note = nb.to_python3("for k, v in d.iteritems():\n    print k, v\nprint zip(a, b)\n")
    if note and "no lib2to3" in note:
        pytest.skip("this Python has no lib2to3 (removed in 3.13)")
    assert code == "for k, v in d.items():\n    print(k, v)\nprint(list(zip(a, b)))\n"
    assert note == "Python 2 source translated by lib2to3"
    assert nb.to_python3("x = 1\n") == ("x = 1\n", None)


def test_run_cells_reports_ran_skipped_failed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.txt").write_text("file text\n")
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"jpeg")
    cells = [nb.Cell(0, "!../data/mnist/get_mnist.sh"),
             nb.Cell(1, "print 'hello', 3"),
             nb.Cell(2, "!cat f.txt\n!wget -O got.jpg http://example/x.jpg"),
             nb.Cell(3, "n = 50\n[n, n]"),
             nb.Cell(4, "1 / 0"),
             nb.Cell(5, "m = n * 2"),
             nb.Cell(6, "y = 1")]
    subs = [nb.Substitution(3, "n = 50", "n = 5", "smaller"),
            nb.Substitution(6, "z = 1", "z = 2", "gone")]
    printed = io.StringIO()
    results = nb.run_cells("t", cells, subs, stand_in_image=str(image), output=printed)
    assert [(r.index, r.status) for r in results] == [
        (0, "skipped"), (1, "ran"), (2, "ran"), (3, "ran"), (4, "failed"), (5, "ran"),
        (6, "failed")]
    assert "stand-in examples/mnist" in results[0].notes[0]
    assert results[4].error == "ZeroDivisionError: division by zero"
    assert "does not apply" in results[6].error  # the notebook changed under the edit
    assert "edited 'n = 50' -> 'n = 5': smaller" in results[3].notes
    assert (tmp_path / "got.jpg").read_bytes() == b"jpeg"
    out = printed.getvalue()
    assert "hello 3\n" in out and "file text\n" in out and "[5, 5]\n" in out
    report = nb.format_report("t", results)
    assert report.splitlines()[0] == "== t: 7 code cells: 4 ran, 1 skipped, 2 failed"


def test_substitutions_name_their_cells_and_reasons():
    for name, subs in nb.SUBSTITUTIONS.items():
        assert name in nb.NOTEBOOKS
        for sub in subs:
            assert sub.old != sub.new and sub.reason


# --- stand-ins --------------------------------------------------------------------------------

def test_synset_words_and_mean_file(tmp_path):
    nb.write_synset_words(str(tmp_path / "synset_words.txt"))
    labels = np.loadtxt(str(tmp_path / "synset_words.txt"), str, delimiter="\t")
    assert len(labels) == 1000 and labels[281].startswith("n00000281 ")
    nb.write_mean_binaryproto(str(tmp_path / "mean.binaryproto"), size=8)
    blob = engine.proto.caffe_pb2.BlobProto()
    blob.ParseFromString((tmp_path / "mean.binaryproto").read_bytes())
    mean = engine.io.blobproto_to_array(blob)
    assert mean.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(mean[0, :, 3, 5], [104, 117, 123])


def test_digit_lmdbs_feed_a_data_layer(tmp_path):
    nb.write_digit_lmdbs(str(tmp_path), train=40, test=20)
    net = engine.Net(f"""layer {{ name: 'd' type: 'Data' top: 'data' top: 'label'
        data_param {{ source: '{tmp_path}/mnist_test_lmdb' backend: LMDB batch_size: 20 }}
        transform_param {{ scale: 0.00390625 }} }}""", engine.TEST)
    net.forward()
    data, label = net.blobs["data"].data, net.blobs["label"].data
    assert data.shape == (20, 1, 28, 28) and 0 <= data.min() and data.max() <= 1
    assert set(label.astype(int)) <= set(range(10)) and len(set(label)) > 3
    images, labels = nb.draw_digits(200, seed=5)
    means = [images[labels == d].mean(0) for d in (0, 1)]  # the digits look different
    assert np.abs(means[0] - means[1]).mean() > 5


def test_style_images_feed_an_image_data_layer(tmp_path):
    nb.write_style_images(str(tmp_path), classes=3, train=6, test=3, size=16)
    lines = (tmp_path / "train.txt").read_text().splitlines()
    assert len(lines) == 6 and all(os.path.isabs(line.split()[0]) for line in lines)
    net = engine.Net(f"""layer {{ name: 'd' type: 'ImageData' top: 'data' top: 'label'
        image_data_param {{ source: '{tmp_path}/train.txt' batch_size: 6 new_height: 20
                            new_width: 20 }}
        transform_param {{ crop_size: 18 }} }}""", engine.TEST)
    net.forward()
    assert net.blobs["data"].data.shape == (6, 3, 18, 18)
    assert sorted(net.blobs["label"].data.astype(int)) == [0, 0, 1, 1, 2, 2]


def test_random_weights_give_unit_activations(tmp_path):
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text("""name: 'small'
        layer { name: 'data' type: 'Input' top: 'data'
                input_param { shape { dim: 4 dim: 3 dim: 12 dim: 12 } } }
        layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'
                convolution_param { num_output: 8 kernel_size: 3 } }
        layer { name: 'relu' type: 'ReLU' bottom: 'conv' top: 'conv' }
        layer { name: 'fc' type: 'InnerProduct' bottom: 'conv' top: 'fc'
                inner_product_param { num_output: 5 } }""")
    out = nb.write_random_weights(str(deploy), str(tmp_path / "w.caffemodel"), pixel_std=50)
    net = engine.Net(str(deploy), engine.TEST, weights=out)
    assert np.all(net.params["fc"][1].data == 0) and np.any(net.params["fc"][0].data != 0)
    net.blobs["data"].data[...] = np.random.default_rng(1).normal(0, 50, net.blobs["data"].shape)
    net.forward()
    assert 0.5 < net.blobs["fc"].data.std() < 2.0  # not 50x or 1000x off after two layers


# --- pycaffe behaviour asked for by Caffe's tests and notebooks ----------------------------------

def test_solver_lr_follows_the_policy_without_side_effects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = """layer { name: 'd' type: 'DummyData' top: 'x' top: 'y'
                     dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 1 } } }
             layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'p'
                     inner_product_param { num_output: 1 } }
             layer { name: 'loss' type: 'EuclideanLoss' bottom: 'p' bottom: 'y' top: 'loss' }"""
    solver = engine.get_solver(f"""net_param {{ {net} }} base_lr: 0.5 lr_policy: 'multistep'
        gamma: 0.1 stepvalue: 2 max_iter: 5 display: 0 snapshot_prefix: 's'""")
    assert solver.lr == pytest.approx(0.5)
    solver.step(2)
    assert solver.lr == pytest.approx(0.05)  # iteration 2 is past the first step value
    assert solver.current_step == 0  # reading lr did not move the multistep position
    solver.step(1)
    assert solver.current_step == 1 and solver.lr == pytest.approx(0.05)
    assert isinstance(solver.lr, float)
