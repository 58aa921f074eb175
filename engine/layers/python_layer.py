"""The "Python" layer type: a layer written in Python by the user, as in pycaffe.

    layer { name: "mine" type: "Python" bottom: "x" top: "y"
            python_param { module: "my_layers" layer: "MyLayer" param_str: "{'k': 2}" } }

    # my_layers.py
    import engine
    class MyLayer(engine.Layer):
        def setup(self, bottom, top): self.k = eval(self.param_str)['k']
        def reshape(self, bottom, top): top[0].reshape(bottom[0].shape)
        def forward(self, bottom, top): top[0].data[...] = self.k * bottom[0].data
        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]: bottom[0].diff[...] = self.k * top[0].diff

The registered class is a factory: constructing it imports python_param.module (from sys.path as
it is, then also from the current working directory, which is then kept on sys.path so the module
can import its neighbours later), and returns an instance of the class named by python_param.layer,
which must subclass engine.Layer. Before setup the instance has, as in pycaffe: `param_str`,
`phase`, `type` == "Python", and `blobs`, a list with pycaffe's `add_blob(*shape)`.
python_param.share_in_parallel is accepted and has no effect (crema runs one process per solver).

A user layer that reads a record stream takes its rank's share by defining `set_shard(rank,
world)`: as the factory returns the user's object itself, `Net.set_data_shard` (engine.data.
sharding) finds the method and calls it, after checking the arguments with the layer's error.
Shuffles that must agree across ranks draw from `engine.rng.data_generator()`.
"""
import importlib
import os
import sys

import numpy as np

from ..blob import Blob
from ..errors import LayerError
from ..layer import Layer, TRAIN
from ..registry import register_layer


class BlobList(list):
    """The `blobs` of a Python layer: a list of Blobs with pycaffe's BlobVec.add_blob."""

    def add_blob(self, *shape, dtype=np.float32):
        """Append a new zero-filled parameter Blob of `shape` (ints, or one tuple)."""
        blob = Blob(*shape, dtype=dtype)
        self.append(blob)
        return blob


def _import(module_name):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        top_level = module_name.split(".")[0]
        cwd = os.getcwd()
        if e.name != top_level or cwd in sys.path or "" in sys.path:
            raise
    # Not on sys.path: like a script run from here, try the working directory as well.
    sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        sys.path.remove(cwd)
        raise


@register_layer("Python")
class PythonLayerFactory(Layer):
    """Factory for python_param { module layer param_str share_in_parallel }: `PythonLayerFactory(
    param, phase)` returns the user's layer instance (see the module docstring). Bottoms and tops:
    whatever the user's class handles."""

    def __new__(cls, param, phase=TRAIN):
        pp = param.python_param
        where = f"layer '{param.name}' (type Python)"
        module_name, class_name = pp.module, pp.layer
        if not module_name or not class_name:
            raise LayerError(f"{where}: python_param needs both 'module' and 'layer' (got module "
                             f"{module_name!r}, layer {class_name!r})")
        try:
            module = _import(module_name)
        except Exception as e:  # ImportError, or anything the module raised while importing
            raise LayerError(f"{where}: cannot import module '{module_name}' for class "
                             f"'{class_name}': {type(e).__name__}: {e}") from e
        user_cls = getattr(module, class_name, None)
        if user_cls is None:
            path = getattr(module, "__file__", "?")
            raise LayerError(f"{where}: module '{module_name}' ({path}) has no class "
                             f"'{class_name}'")
        if not (isinstance(user_cls, type) and issubclass(user_cls, Layer)):
            raise LayerError(f"{where}: '{module_name}.{class_name}' is not a subclass of "
                             "engine.Layer")
        if issubclass(user_cls, PythonLayerFactory):
            raise LayerError(f"{where}: '{module_name}.{class_name}' is the Python layer factory "
                             "itself, not a user layer")
        layer = user_cls(param, phase)
        layer.type = "Python"
        layer.param_str = pp.param_str
        layer.phase = phase
        layer.share_in_parallel = pp.share_in_parallel
        layer.blobs = BlobList(layer.blobs)
        return layer
