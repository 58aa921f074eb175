"""Built-in layers, one module per family. Importing this package registers every layer type:
each module registers its classes with @register_layer, so adding a module is all it takes."""
import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")


def __getattr__(name):
    """`engine.layers` doubles as pycaffe's NetSpec layer generator (`from engine import layers as
    L; L.Convolution(...)`): attributes that are not modules of this package are layer types."""
    if name.startswith("_"):
        raise AttributeError(name)
    from ..netspec import layers as generator
    return getattr(generator, name)
