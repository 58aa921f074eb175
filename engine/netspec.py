"""Python net specification, compatible with pycaffe's caffe.net_spec.

    from engine.netspec import NetSpec, layers as L, params as P
    n = NetSpec()
    n.data, n.label = L.Data(batch_size=64, backend=P.Data.LMDB, source="train_lmdb",
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            param=[dict(lr_mult=1), dict(lr_mult=2)],
                            weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.pool1, n.label)
    print(n.to_proto())          # a crema_pb2.NetParameter; str() gives the prototxt

Rules (as pycaffe): a top is named after the NetSpec attribute it is assigned to (unnamed tops get
<Type><k>), a layer after its first top. Keyword arguments go to the layer's own parameter message
(type "InnerProduct" -> inner_product_param, found through the LayerParameter fields whose message
is <Type>Parameter) when that message has the field, else to the LayerParameter itself (name,
include, param, loss_weight, propagate_down, ...); a keyword ending in "param" always goes to the
LayerParameter. Lists fill repeated fields (a single value is wrapped), dicts fill messages,
`ntop` sets the number of tops (0 returns the layer function itself), `in_place=True` makes the
tops equal the bottoms.

crema additions, all of which pycaffe rejects or mishandles, so pycaffe code is unaffected:
- `top="name"` (or a list) names the tops explicitly, so that several layers can write the same
  top (TRAIN/TEST data layers): `n.train_data = L.Data(..., top="data", include=dict(phase=0))`
  makes a layer "train_data" (the attribute still names the layer, as with in_place) whose top
  is "data";
- Deconvolution/Im2col fill convolution_param, RNN/LSTM recurrent_param;
- enum fields also take the value's name ("MAX"); message fields also take a message;
- `to_proto(name=...)` sets the net's name;
- errors name the layer type and the field (engine.netspec.NetSpecError, a CremaError).
"""
from collections import Counter, OrderedDict

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message

from . import crema_pb2
from .errors import CremaError

__all__ = ["NetSpec", "Top", "Function", "layers", "params", "to_proto", "NetSpecError",
           "param_name_dict", "assign_proto"]


class NetSpecError(CremaError, ValueError):
    """A NetSpec argument that does not fit the proto (unknown field, wrong value type)."""


def param_name_dict():
    """{'Convolution': 'convolution', 'InnerProduct': 'inner_product', ...}: layer type -> prefix
    of its `<prefix>_param` field, from the LayerParameter fields typed <Type>Parameter."""
    names = {}
    for field in crema_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return names


_param_names = param_name_dict()
# Layer types whose parameter message is named after another type.
_param_names.update({"Deconvolution": "convolution", "Im2col": "convolution",
                     "RNN": "recurrent", "LSTM": "recurrent"})


def _is_repeated(field):
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5; older ones only have .label
    if flag is not None:
        return bool(flag)
    return field.label == _descriptor.FieldDescriptor.LABEL_REPEATED


def _convert_scalar(field, value, where):
    if field.type == _descriptor.FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        enum_value = field.enum_type.values_by_name.get(value)
        if enum_value is None:
            known = ", ".join(v.name for v in field.enum_type.values)
            raise NetSpecError(f"{where}: {value!r} is not a value of {field.enum_type.name} "
                               f"({known})")
        return enum_value.number
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars
    return value


def assign_proto(proto, name, value, where=None):
    """Set field `name` of message `proto` from a Python value, pycaffe's assign_proto rules:
    lists -> repeated fields (a lone value is wrapped), dicts -> messages."""
    where = f"{where or proto.DESCRIPTOR.name}.{name}"
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        known = ", ".join(f.name for f in proto.DESCRIPTOR.fields)
        raise NetSpecError(f"{where}: {proto.DESCRIPTOR.name} has no field '{name}' "
                           f"(fields: {known})")
    is_message = field.message_type is not None
    try:
        if _is_repeated(field):
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            container = getattr(proto, name)
            for v in values:
                if is_message:
                    _fill_message(container.add(), v, where)
                else:
                    container.append(_convert_scalar(field, v, where))
        elif is_message:
            _fill_message(getattr(proto, name), value, where)
        else:
            setattr(proto, name, _convert_scalar(field, value, where))
    except (TypeError, ValueError) as e:
        if isinstance(e, NetSpecError):
            raise
        raise NetSpecError(f"{where}: cannot set {value!r}: {e}") from None


def _fill_message(msg, value, where):
    if isinstance(value, _message.Message):
        msg.CopyFrom(value)
    elif isinstance(value, dict):
        msg.SetInParent()  # an empty dict still sets the message, as `field {}` does
        for k, v in value.items():
            assign_proto(msg, k, v, where)
    else:
        raise NetSpecError(f"{where}: a {msg.DESCRIPTOR.name} needs a dict (or message), "
                           f"got {value!r}")


class Top:
    """One output of a layer function: pass it as a bottom, or assign it to a NetSpec name."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """The net (NetParameter) that computes this top."""
        return to_proto(self)

    def _update(self, params):
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def __repr__(self):
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """A layer with its inputs and parameters, before it becomes a LayerParameter."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                # pycaffe's wording, which scripts may match
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(inp)})")
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        top = self.params.pop("top", None)
        self.top_names = [top] if isinstance(top, str) else (list(top) if top else None)
        if self.top_names is not None and len(self.top_names) != self.ntop:
            raise NetSpecError(f"{type_name}: top= names {len(self.top_names)} tops but the "
                               f"layer has ntop={self.ntop}")
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            if self.top_names is not None:
                return self.top_names[top.n]
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _update(self, params):
        self.params.update(params)

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = crema_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        elif self.top_names is not None:
            layer.top.extend(self.top_names)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)

        where = f"layer {layer.name!r} ({self.type_name})"
        prefix = _param_names.get(self.type_name)
        for k, v in self.params.items():
            if k.endswith("param") or prefix is None:
                assign_proto(layer, k, v, where)
                continue
            type_param = getattr(layer, prefix + "_param")
            if k in type_param.DESCRIPTOR.fields_by_name:
                assign_proto(type_param, k, v, f"{where} {prefix}_param")
            else:
                assign_proto(layer, k, v, where)
        layers[self] = layer


class NetSpec:
    """Tops by name; assigning `n.name = top` names the top (and its layer). `to_proto()`
    gives the NetParameter of every assigned top and the layers they need, in assignment order."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named {name!r}") from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def __delitem__(self, name):
        del self.tops[name]

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def update(self, name, value):
        self.__setattr__(name, value)

    def to_proto(self, name=None):
        names = {v: k for k, v in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = crema_pb2.NetParameter()
        if name is not None:
            net.name = name
        net.layer.extend(layers.values())
        return net


def to_proto(*tops):
    """The NetParameter computing `tops` (layers and tops named automatically)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = crema_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Layers:
    """`layers.Convolution(bottom, ..., **params)` builds a layer of that type: returns its Top,
    its tuple of Tops (ntop > 1), or the Function itself (ntop=0)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        layer_fn.__name__ = name
        return layer_fn


class _ParamNamespace:
    def __init__(self, message_name):
        self._message_name = message_name

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = getattr(crema_pb2, self._message_name, None)
        if cls is None:
            raise AttributeError(f"crema has no message {self._message_name}")
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(f"{self._message_name} has no value or attribute {name!r}") \
                from None


class Parameters:
    """`params.Pooling.MAX` == crema_pb2.PoolingParameter.MAX (enum values of <Type>Parameter)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _ParamNamespace(name + "Parameter")


layers = Layers()
params = Parameters()
L, P = layers, params
