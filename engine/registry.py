"""The one registry of layer types. Registering a name twice raises; an unknown name lists the known."""
from .errors import UnknownLayerError

_LAYERS = {}


def register_layer(type_name):
    def decorate(cls):
        if type_name in _LAYERS:
            raise ValueError(f"layer type {type_name!r} registered twice "
                             f"({_LAYERS[type_name].__module__} and {cls.__module__})")
        cls.type = type_name
        _LAYERS[type_name] = cls
        return cls
    return decorate


def layer_class(type_name, where=""):
    try:
        return _LAYERS[type_name]
    except KeyError:
        raise UnknownLayerError(
            f"{where}unknown layer type {type_name!r}; known types: {', '.join(sorted(_LAYERS))}"
        ) from None


def layer_type_list():
    return sorted(_LAYERS)
