"""The "Python" layer: user classes written as for pycaffe."""
import sys
import textwrap

import numpy as np
import pytest

import engine
from engine.errors import LayerError
from engine.testing import check_gradient, layer_from_text, run_forward

MODULE = textwrap.dedent('''
    import ast
    import numpy as np
    import engine


    class ScaleShift(engine.Layer):
        """y = w * x + b with w, b parameters; param_str gives their initial values."""

        def setup(self, bottom, top):
            if len(bottom) != 1:
                raise Exception("ScaleShift needs one bottom")
            cfg = ast.literal_eval(self.param_str)
            if not self.blobs:
                c = bottom[0].shape[1]
                self.blobs.add_blob(c)
                self.blobs.add_blob(c)
                self.blobs[0].data[...] = cfg["w"]
                self.blobs[1].data[...] = cfg["b"]

        def reshape(self, bottom, top):
            top[0].reshape(bottom[0].shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data * self.blobs[0].data + self.blobs[1].data

        def backward(self, top, propagate_down, bottom):
            self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(axis=0)
            self.blobs[1].diff[...] += top[0].diff.sum(axis=0)
            if propagate_down[0]:
                bottom[0].diff[...] = top[0].diff * self.blobs[0].data


    class Square(engine.Layer):
        def reshape(self, bottom, top):
            top[0].reshape(bottom[0].shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data ** 2

        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = 2 * bottom[0].data * top[0].diff


    class NotALayer:
        pass
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "crema_test_user_layers"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def _text(module, cls, param_str=""):
    return (f'name: "py" type: "Python" bottom: "x" top: "y" python_param {{ module: "{module}" '
            f'layer: "{cls}" param_str: "{param_str}" }}')


def test_python_layer_forward_and_attributes(user_module):
    layer = layer_from_text(_text(user_module, "ScaleShift", "{'w': 2.0, 'b': 0.5}"),
                            phase=engine.TEST)
    assert type(layer).__name__ == "ScaleShift"
    assert layer.type == "Python" and layer.phase == engine.TEST
    assert layer.param_str == "{'w': 2.0, 'b': 0.5}"
    x = np.array([[1.0, -2.0], [3.0, 0.25]])
    _, top = run_forward(layer, [x])
    np.testing.assert_allclose(top[0].data, [[2.5, -3.5], [6.5, 1.0]])
    assert len(layer.blobs) == 2 and layer.blobs[0].shape == (2,)


def test_python_layer_gradient(user_module):
    x = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.5]])
    check_gradient(_text(user_module, "ScaleShift", "{'w': 1.5, 'b': -0.5}"), [x])
    check_gradient(_text(user_module, "Square"), [x])


def test_python_layer_backward_by_hand(user_module):
    layer = layer_from_text(_text(user_module, "Square"))
    bottom, top = run_forward(layer, [np.array([1.0, -3.0])])
    np.testing.assert_array_equal(top[0].data, [1.0, 9.0])
    top[0].diff[...] = [1.0, 2.0]
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [2.0, -12.0])


def test_python_layer_imports_from_working_directory(tmp_path, monkeypatch):
    name = "crema_test_cwd_layers"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    layer = layer_from_text(_text(name, "Square"))
    _, top = run_forward(layer, [np.array([3.0])])
    assert top[0].data.tolist() == [9.0]
    sys.modules.pop(name, None)


def test_python_layer_import_errors(user_module, tmp_path, monkeypatch):
    with pytest.raises(LayerError, match="module 'no_such_module_xyz'.*class 'Foo'"):
        layer_from_text(_text("no_such_module_xyz", "Foo"))
    with pytest.raises(LayerError, match=f"'{user_module}'.*no class 'Missing'"):
        layer_from_text(_text(user_module, "Missing"))
    with pytest.raises(LayerError, match="not a subclass of engine.Layer"):
        layer_from_text(_text(user_module, "NotALayer"))
    (tmp_path / "crema_test_broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.delitem(sys.modules, "crema_test_broken", raising=False)
    with pytest.raises(LayerError, match="crema_test_broken.*'Foo'.*boom at import"):
        layer_from_text(_text("crema_test_broken", "Foo"))
    with pytest.raises(LayerError, match="needs both 'module' and 'layer'"):
        layer_from_text('type: "Python" python_param { module: "x" }')


def test_python_layer_exception_keeps_its_type_with_crema_context(tmp_path, monkeypatch):
    """pycaffe re-raises a Python layer's own exception: `except ValueError` around forward()
    must work; crema's context (file:line, layer, bottoms) comes as an exception note."""
    import engine
    (tmp_path / "raising_layer.py").write_text(
        "import engine\n"
        "class Raise(engine.Layer):\n"
        "    def setup(self, bottom, top): pass\n"
        "    def reshape(self, bottom, top): top[0].reshape(bottom[0].shape)\n"
        "    def forward(self, bottom, top): raise ValueError('bad detector data')\n"
        "    def backward(self, top, propagate_down, bottom): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    net = engine.Net('''name: "p"
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "py" type: "Python" bottom: "x" top: "y"
                python_param { module: "raising_layer" layer: "Raise" } }''', engine.TEST)
    with pytest.raises(ValueError, match="bad detector data") as info:
        net.forward()
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "layer 'py' (type Python) failed in forward" in notes and "x(2, 3)" in notes
