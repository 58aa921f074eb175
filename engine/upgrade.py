"""Caffe's on-load upgrades of legacy net and solver definitions (upgrade_proto.cpp):
proto -> proto.

Order, as Caffe's UpgradeNetAsNeeded:
  1. V0 -> V1: `layers { layer { type: "conv" ... } }` (V0LayerParameter inside V1LayerParameter);
     "padding" layers are first folded into the pad of the conv/pool layer they feed.
  2. Legacy data-layer transform fields (scale, mean_file, crop_size, mirror in data_param,
     image_data_param, window_data_param) -> transform_param.
  3. V1 -> current: `layers` (V1LayerParameter, enum type) -> `layer` (LayerParameter, string type).
  4. Net inputs (input + input_dim/input_shape) -> an "Input" layer named "input", placed first.
  5. BatchNorm layers with the three old `param` specs lose them (the layer fixes lr to 0 itself).
Caffe only logs where an upgrade is incomplete; crema raises NetError naming the file and layer,
so a half-upgraded net never runs.
"""
from . import crema_pb2
from .errors import NetError, SolverError

V1 = crema_pb2.V1LayerParameter

# Caffe's UpgradeV1LayerType, complete.
V1_LAYER_TYPE = {
    V1.NONE: "",
    V1.ABSVAL: "AbsVal",
    V1.ACCURACY: "Accuracy",
    V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL",
    V1.CONCAT: "Concat",
    V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution",
    V1.DECONVOLUTION: "Deconvolution",
    V1.DATA: "Data",
    V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise",
    V1.EXP: "Exp",
    V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss",
    V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN",
    V1.POOLING: "Pooling",
    V1.POWER: "Power",
    V1.RELU: "ReLU",
    V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1.SPLIT: "Split",
    V1.SLICE: "Slice",
    V1.TANH: "TanH",
    V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

# Caffe's UpgradeV0LayerType ("padding" layers are folded away before this is used).
V0_LAYER_TYPE = {
    "accuracy": V1.ACCURACY,
    "bnll": V1.BNLL,
    "concat": V1.CONCAT,
    "conv": V1.CONVOLUTION,
    "data": V1.DATA,
    "dropout": V1.DROPOUT,
    "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN,
    "hdf5_data": V1.HDF5_DATA,
    "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL,
    "images": V1.IMAGE_DATA,
    "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT,
    "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": V1.POOLING,
    "relu": V1.RELU,
    "sigmoid": V1.SIGMOID,
    "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT,
    "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

SOLVER_TYPE = {
    crema_pb2.SolverParameter.SGD: "SGD",
    crema_pb2.SolverParameter.NESTEROV: "Nesterov",
    crema_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    crema_pb2.SolverParameter.RMSPROP: "RMSProp",
    crema_pb2.SolverParameter.ADADELTA: "AdaDelta",
    crema_pb2.SolverParameter.ADAM: "Adam",
}

# Data-layer types whose *_param carries the legacy transform fields (UpgradeNetDataTransformation).
_DATA_TRANSFORM_PARAMS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                          V1.WINDOW_DATA: "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# Every layer-specific message of V1LayerParameter; each has a LayerParameter field of the same
# name and message type, so V1 -> current copies them verbatim.
_V1_PARAM_FIELDS = tuple(f.name for f in V1.DESCRIPTOR.fields
                         if f.name.endswith("_param"))


def _copy(msg):
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def _where(source, layer_name, layer_type=None):
    kind = f" (type {layer_type})" if layer_type not in (None, "") else ""
    return f"{source}: layer '{layer_name}'{kind}"


# -- detection ------------------------------------------------------------------------------
def net_needs_v0_upgrade(net_param):
    return any(l.HasField("layer") for l in net_param.layers)


def net_needs_v1_upgrade(net_param):
    return len(net_param.layers) > 0


def net_needs_data_upgrade(net_param):
    for l in net_param.layers:
        field = _DATA_TRANSFORM_PARAMS.get(l.type)
        if field is not None:
            p = getattr(l, field)
            if any(p.HasField(f) for f in _TRANSFORM_FIELDS):
                return True
    return False


def net_needs_input_upgrade(net_param):
    return len(net_param.input) > 0


def net_needs_batchnorm_upgrade(net_param):
    # Caffe's test: the old BatchNorm definition declared exactly three param specs.
    return any(l.type == "BatchNorm" and len(l.param) == 3 for l in net_param.layer)


def needs_upgrade(net_param):
    """True when any of Caffe's net upgrades applies (NetNeedsUpgrade)."""
    return (net_needs_v0_upgrade(net_param) or net_needs_v1_upgrade(net_param)
            or net_needs_data_upgrade(net_param) or net_needs_input_upgrade(net_param)
            or net_needs_batchnorm_upgrade(net_param))


# -- the driver -----------------------------------------------------------------------------
def upgrade_net_param(net_param, source="<string>"):
    """Return an upgraded copy of `net_param` (the argument is not modified). `source` names the
    file in error messages."""
    param = _copy(net_param)
    if net_needs_v0_upgrade(param):
        param = upgrade_v0_net(param, source)
    if net_needs_data_upgrade(param):
        upgrade_net_data_transformation(param)
    if net_needs_v1_upgrade(param):
        param = upgrade_v1_net(param, source)
    if net_needs_input_upgrade(param):
        upgrade_net_input(param, source)
    if net_needs_batchnorm_upgrade(param):
        upgrade_net_batchnorm(param)
    return param


# -- V0 -> V1 -------------------------------------------------------------------------------
def upgrade_v0_padding_layers(param, source="<string>"):
    """Caffe's UpgradeV0PaddingLayers: drop each V0 "padding" layer, moving its `pad` onto the
    conv/pool layer that consumes its output and rewiring that layer to the padding layer's input.
    Returns a new NetParameter."""
    out = _copy(param)
    del out.layers[:]
    last_top = {name: -1 for name in param.input}   # blob -> index of the layer that wrote it last
    for i, conn in enumerate(param.layers):
        v0 = conn.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(conn)
        for j, blob_name in enumerate(conn.bottom):
            if blob_name not in last_top:
                raise NetError(f"{_where(source, v0.name, v0.type)}: unknown bottom blob "
                               f"'{blob_name}' (no earlier layer or input produces it)")
            src_idx = last_top[blob_name]
            if src_idx == -1:
                continue
            src = param.layers[src_idx]
            if src.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise NetError(f"{_where(source, v0.name, v0.type)}: padding layer "
                               f"'{src.layer.name}' feeds a layer that is neither conv nor pool")
            if len(conn.bottom) != 1:
                raise NetError(f"{_where(source, v0.name, v0.type)}: a layer fed by padding layer "
                               f"'{src.layer.name}' must have exactly one bottom, has "
                               f"{len(conn.bottom)}")
            if len(src.bottom) != 1 or len(src.top) != 1:
                raise NetError(f"{_where(source, src.layer.name, 'padding')}: a padding layer "
                               f"must have one bottom and one top, has {len(src.bottom)} and "
                               f"{len(src.top)}")
            target = out.layers[len(out.layers) - 1]
            target.layer.pad = src.layer.pad
            target.bottom[j] = src.bottom[0]
        for blob_name in conn.top:
            last_top[blob_name] = i
    return out


def upgrade_v0_net(param, source="<string>"):
    """Caffe's UpgradeV0Net: padding layers folded, then every V0LayerParameter -> V1 fields."""
    if len(param.layer) > 0:
        # Caffe's V0 upgrade would silently drop the `layer` entries; refuse as the V1 one does.
        raise NetError(f"{source}: the net defines both 'layer' and 'layers' (V0 format); "
                       f"refusing to upgrade an inconsistent net")
    for conn in param.layers:
        if not conn.HasField("layer"):
            raise NetError(f"{_where(source, conn.name, V1_LAYER_TYPE.get(conn.type))}: the net "
                           f"mixes V0 layer definitions (layers {{ layer {{ ... }} }}) with V1 "
                           f"ones; Caffe cannot upgrade such a net")
    padded = upgrade_v0_padding_layers(param, source)
    out = crema_pb2.NetParameter()
    if padded.HasField("name"):
        out.name = padded.name
    for conn in padded.layers:
        upgrade_v0_layer_parameter(conn, out.layers.add(), source)
    out.input.extend(padded.input)
    out.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        out.force_backward = padded.force_backward
    return out


def upgrade_v0_layer_parameter(conn, layer, source="<string>"):
    """Caffe's UpgradeV0LayerParameter: V1LayerParameter holding a V0 `layer` -> plain V1 layer.
    A V0 field that does not apply to the layer's type raises NetError (Caffe logs and goes on)."""
    layer.Clear()
    layer.bottom.extend(conn.bottom)
    layer.top.extend(conn.top)
    if not conn.HasField("layer"):
        return
    v0 = conn.layer
    t = v0.type
    where = _where(source, v0.name, t)

    def bad(field):
        return NetError(f"{where}: V0 field '{field}' does not apply to layer type '{t}'; "
                        f"cannot upgrade it")

    def has(field):
        return v0.HasField(field)

    if has("name"):
        layer.name = v0.name
    if has("type"):
        if t not in V0_LAYER_TYPE:
            raise NetError(f"{where}: unknown V0 layer type '{t}'; known: "
                           f"{', '.join(sorted(V0_LAYER_TYPE))}")
        layer.type = V0_LAYER_TYPE[t]
    layer.blobs.extend(v0.blobs)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)

    conv, ip, pool = layer.convolution_param, layer.inner_product_param, layer.pooling_param
    if has("num_output"):
        if t == "conv":
            conv.num_output = v0.num_output
        elif t == "innerproduct":
            ip.num_output = v0.num_output
        else:
            raise bad("num_output")
    if has("biasterm"):
        if t == "conv":
            conv.bias_term = v0.biasterm
        elif t == "innerproduct":
            ip.bias_term = v0.biasterm
        else:
            raise bad("biasterm")
    for field in ("weight_filler", "bias_filler"):
        if has(field):
            if t == "conv":
                getattr(conv, field).CopyFrom(getattr(v0, field))
            elif t == "innerproduct":
                getattr(ip, field).CopyFrom(getattr(v0, field))
            else:
                raise bad(field)
    if has("pad"):
        if t == "conv":
            conv.pad.append(v0.pad)
        elif t == "pool":
            pool.pad = v0.pad
        else:
            raise bad("pad")
    if has("kernelsize"):
        if t == "conv":
            conv.kernel_size.append(v0.kernelsize)
        elif t == "pool":
            pool.kernel_size = v0.kernelsize
        else:
            raise bad("kernelsize")
    if has("group"):
        if t == "conv":
            conv.group = v0.group
        else:
            raise bad("group")
    if has("stride"):
        if t == "conv":
            conv.stride.append(v0.stride)
        elif t == "pool":
            pool.stride = v0.stride
        else:
            raise bad("stride")
    if has("pool"):
        if t != "pool":
            raise bad("pool")
        # V0 and current PoolMethod enums agree: MAX=0, AVE=1, STOCHASTIC=2.
        name = crema_pb2.V0LayerParameter.PoolMethod.Name(v0.pool)
        pool.pool = crema_pb2.PoolingParameter.PoolMethod.Value(name)
    if has("dropout_ratio"):
        if t != "dropout":
            raise bad("dropout_ratio")
        layer.dropout_param.dropout_ratio = v0.dropout_ratio
    for field in ("local_size", "alpha", "beta", "k"):
        if has(field):
            if t != "lrn":
                raise bad(field)
            setattr(layer.lrn_param, field, getattr(v0, field))
    if has("source"):
        target = {"data": layer.data_param, "hdf5_data": layer.hdf5_data_param,
                  "images": layer.image_data_param, "window_data": layer.window_data_param,
                  "infogain_loss": layer.infogain_loss_param}.get(t)
        if target is None:
            raise bad("source")
        target.source = v0.source
    # Transformation fields apply to any type in Caffe's upgrade.
    if has("scale"):
        layer.transform_param.scale = v0.scale
    if has("meanfile"):
        layer.transform_param.mean_file = v0.meanfile
    if has("batchsize"):
        target = {"data": layer.data_param, "hdf5_data": layer.hdf5_data_param,
                  "images": layer.image_data_param,
                  "window_data": layer.window_data_param}.get(t)
        if target is None:
            raise bad("batchsize")
        target.batch_size = v0.batchsize
    if has("cropsize"):
        layer.transform_param.crop_size = v0.cropsize
    if has("mirror"):
        layer.transform_param.mirror = v0.mirror
    if has("rand_skip"):
        target = {"data": layer.data_param, "images": layer.image_data_param}.get(t)
        if target is None:
            raise bad("rand_skip")
        target.rand_skip = v0.rand_skip
    if has("shuffle_images"):
        if t != "images":
            raise bad("shuffle_images")
        layer.image_data_param.shuffle = v0.shuffle_images
    for v0_field, field in (("new_height", "new_height"), ("new_width", "new_width")):
        if has(v0_field):
            if t != "images":
                raise bad(v0_field)
            setattr(layer.image_data_param, field, getattr(v0, v0_field))
    if has("concat_dim"):
        if t != "concat":
            raise bad("concat_dim")
        layer.concat_param.concat_dim = v0.concat_dim
    for v0_field, field in (("det_fg_threshold", "fg_threshold"),
                            ("det_bg_threshold", "bg_threshold"),
                            ("det_fg_fraction", "fg_fraction"),
                            ("det_context_pad", "context_pad"),
                            ("det_crop_mode", "crop_mode")):
        if has(v0_field):
            if t != "window_data":
                raise bad(v0_field)
            setattr(layer.window_data_param, field, getattr(v0, v0_field))
    if has("hdf5_output_param"):
        if t != "hdf5_output":
            raise bad("hdf5_output_param")
        layer.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
    # new_num / new_channels have no counterpart; Caffe's upgrade drops them silently too.


# -- data transformation ----------------------------------------------------------------------
def upgrade_net_data_transformation(param):
    """Caffe's UpgradeNetDataTransformation, in place on the V1 `layers`: move scale, mean_file,
    crop_size and mirror from data/image_data/window_data params into transform_param."""
    for l in param.layers:
        field = _DATA_TRANSFORM_PARAMS.get(l.type)
        if field is None:
            continue
        p = getattr(l, field)
        transform = l.transform_param
        transform.SetInParent()  # Caffe's mutable_transform_param() marks it present
        for name in _TRANSFORM_FIELDS:
            if p.HasField(name):
                setattr(transform, name, getattr(p, name))
                p.ClearField(name)


# -- V1 -> current ----------------------------------------------------------------------------
def upgrade_v1_net(param, source="<string>"):
    """Caffe's UpgradeV1Net: every V1 `layers` entry -> a `layer` entry. Returns a new message."""
    if len(param.layer) > 0:
        raise NetError(f"{source}: the net defines both 'layer' and 'layers'; refusing to upgrade "
                       f"an inconsistent net. The current format is "
                       f"layer {{ type: \"Type\" ... }}, "
                       f"not layers {{ type: TYPE ... }}: switch the definition to 'layer'")
    out = _copy(param)
    del out.layers[:]
    del out.layer[:]
    for v1 in param.layers:
        upgrade_v1_layer_parameter(v1, out.layer.add(), source)
    return out


def upgrade_v1_layer_type(v1_type, source="<string>", layer_name=""):
    try:
        return V1_LAYER_TYPE[v1_type]
    except KeyError:
        raise NetError(f"{_where(source, layer_name)}: unknown V1 layer type {v1_type}") from None


def upgrade_v1_layer_parameter(v1, layer, source="<string>"):
    """Caffe's UpgradeV1LayerParameter."""
    layer.Clear()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = upgrade_v1_layer_type(v1.type, source, v1.name)
    layer.blobs.extend(v1.blobs)

    def spec(i):
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        # V1 and ParamSpec DimCheckMode enums agree: STRICT=0, PERMISSIVE=1.
        spec(i).share_mode = crema_pb2.ParamSpec.DimCheckMode.Value(
            V1.DimCheckMode.Name(mode))
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    for field in _V1_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(layer, field).CopyFrom(getattr(v1, field))
    if v1.HasField("layer"):
        # Caffe ignores an embedded V0 layer at this stage (after the V0 upgrade there is none).
        raise NetError(f"{_where(source, v1.name, layer.type)}: still holds a V0 layer "
                       f"definition after the V0 upgrade; cannot upgrade it")


# -- inputs -------------------------------------------------------------------------------------
def upgrade_net_input(param, source="<string>"):
    """Caffe's UpgradeNetInput, in place: net-level inputs become one "Input" layer named "input"
    (one top and one shape per input) at the front; input/input_shape/input_dim are cleared.
    Inputs without any shape (old .caffemodel files) are simply dropped, as Caffe does."""
    n = len(param.input)
    has_shape, has_dim = len(param.input_shape) > 0, len(param.input_dim) > 0
    if has_shape and has_dim:
        raise NetError(f"{source}: the net gives both input_shape and input_dim; use one of them")
    if has_shape and len(param.input_shape) != n:
        raise NetError(f"{source}: {n} net input(s) but {len(param.input_shape)} input_shape "
                       f"entries; exactly one input_shape per input is needed")
    if has_dim and len(param.input_dim) != 4 * n:
        raise NetError(f"{source}: {n} net input(s) need {4 * n} input_dim values (4 per input), "
                       f"got {len(param.input_dim)}")
    if has_shape or has_dim:
        layer = crema_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(param.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(param.input_shape[i])
            else:
                shape.dim.extend(param.input_dim[4 * i:4 * i + 4])
        layers = list(param.layer)
        del param.layer[:]
        param.layer.add().CopyFrom(layer)
        param.layer.extend(layers)
    param.ClearField("input")
    param.ClearField("input_shape")
    param.ClearField("input_dim")


# -- BatchNorm ------------------------------------------------------------------------------------
def upgrade_net_batchnorm(param):
    """Caffe 1.0's UpgradeNetBatchNorm, in place: BatchNorm layers declaring the three old param
    specs lose them; the layer itself fixes its statistics' learning rate to 0."""
    for l in param.layer:
        if l.type == "BatchNorm" and len(l.param) == 3:
            del l.param[:]


# -- solver ----------------------------------------------------------------------------------------
def solver_needs_upgrade(solver_param):
    return solver_param.HasField("solver_type")


def upgrade_solver_param(solver_param, source="<string>"):
    """Caffe's UpgradeSolverType on a copy: the legacy `solver_type` enum -> the `type` string.
    Both set -> SolverError (Caffe refuses too, even when they agree)."""
    param = _copy(solver_param)
    if not param.HasField("solver_type"):
        return param
    if param.HasField("type"):
        raise SolverError(
            f"{source}: the solver sets both the old solver_type "
            f"({crema_pb2.SolverParameter.SolverType.Name(param.solver_type)}) and the new type "
            f"(\"{param.type}\"); give only `type`")
    try:
        param.type = SOLVER_TYPE[param.solver_type]
    except KeyError:
        raise SolverError(f"{source}: unknown solver_type {param.solver_type}") from None
    param.ClearField("solver_type")
    return param
