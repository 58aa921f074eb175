"""Draw a net as a Graphviz graph: crema's one drawing implementation, behind both `crema draw`
and pycaffe's API (engine.draw: get_layer_label, draw_net, draw_net_to_file, get_pydot_graph).

    text = net_to_dot("train_val.prototxt", rankdir="LR", phase=None)   # Graphviz dot text
    png = draw_net(net_param, "TB", ext="png")                           # image bytes
    draw_net_to_file("train_val.prototxt", "net.svg")                   # .svg etc. run `dot`

As Caffe's draw_net.py draws it: one box per layer labelled with its name and type (pooling adds
its method), kernel size, stride and pad for convolution, deconvolution and pooling, and with
display_lrm the lr_mult of weights and biases; boxes coloured by type (in-place layers green);
one octagon per blob; an edge blob -> layer per bottom and layer -> blob per top, the latter
labelled (label_edges) with the batch size of Data layers and the num_output of convolution and
inner product layers. `phase` (engine.TRAIN / engine.TEST, "TRAIN" / "TEST", or None / "ALL")
keeps the layers whose include/exclude rules name that phase (levels and stages are not looked
at). Legacy V0/V1 nets are upgraded first.

Differences from Caffe's script, in its corner cases: every layer gets its own node (Caffe merges
layers with equal labels, e.g. the TRAIN and TEST data layers), every blob is an octagon, and
names are escaped, so quotes and braces in names do not break the graph. The text is written
here; other formats are rendered by running Graphviz's `dot` (MissingProgramError when it is not
installed; .dot, .gv and .raw output is the text itself and needs no Graphviz).
"""
import os
import shutil
import subprocess
import tempfile

from .. import crema_pb2
from ..errors import CremaError
from ..fileio import atomic_write
from ..schema import read_net_param

DEFAULT_COLOUR = "#6495ED"
LAYER_COLOURS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                 "InnerProduct": "#CC33FF"}
IN_PLACE_COLOUR = "#90EE90"
BLOB_COLOUR = "#E0E0E0"
RANKDIRS = ("LR", "RL", "TB", "BT")
# Output formats that are the dot text itself (pycaffe documents ".raw" for that).
TEXT_FORMATS = ("dot", "gv", "raw")
LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")


class MissingProgramError(CremaError):
    """A program the drawing needs (Graphviz `dot`) is not installed."""


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label_piece(text):
    """Escape one piece of a record label: quotes and backslashes for the dot string, and the
    characters that have a meaning inside record labels."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    for ch in "{}|<>":
        text = text.replace(ch, "\\" + ch)
    return text


def get_pooling_types_dict():
    """{0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC'}: pooling method number -> name."""
    return {v.number: name for name, v in
            crema_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values_by_name.items()}


def get_edge_label(layer):
    """The label of a layer's top edges: 'Batch N' for Data layers, num_output for convolution,
    deconvolution and inner product, else '""' (an empty dot string), as pycaffe."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer):
    """(weights lr_mult, bias lr_mult) of a Convolution, Deconvolution or InnerProduct layer,
    1.0 where no `param` gives one. ValueError for other types or more than two `param`s."""
    if layer.type not in LEARNING_TYPES:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    if len(layer.param) > 2:
        raise ValueError(f"layer '{layer.name}' has {len(layer.param)} param entries; a "
                         f"{layer.type} layer has weights and bias only")
    mults = [p.lr_mult for p in layer.param] + [1.0] * (2 - len(layer.param))
    return tuple(mults)


def _spatial(layer):
    """(kernel, stride, pad) of a convolution, deconvolution or pooling layer (the first axis
    where several are given; the _h fields where only those are given)."""
    if layer.type == "Pooling":
        p = layer.pooling_param
        return (p.kernel_size or p.kernel_h or (1 if p.global_pooling else 0),
                p.stride or p.stride_h or 1, p.pad or p.pad_h)
    p = layer.convolution_param
    kernel = p.kernel_size[0] if len(p.kernel_size) else (p.kernel_h or 1)
    stride = p.stride[0] if len(p.stride) else (p.stride_h or 1)
    pad = p.pad[0] if len(p.pad) else p.pad_h
    return kernel, stride, pad


def label_pieces(layer, display_lrm=False):
    """The lines of a layer's label: name, (type [pool method]), kernel size, stride and pad for
    spatial layers, and with display_lrm the lr multipliers of learning layers."""
    kind = layer.type
    if kind == "Pooling":
        kind += " " + get_pooling_types_dict()[layer.pooling_param.pool]
    pieces = [layer.name, f"({kind})"]
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        kernel, stride, pad = _spatial(layer)
        pieces += [f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]
    if display_lrm and layer.type in LEARNING_TYPES:
        weights, bias = get_layer_lr_mult(layer)
        if weights or bias:
            pieces.append(f"lr mult: {weights:.1f}, {bias:.1f}")
    return pieces


def _separator(rankdir):
    # Caffe puts labels on one line when the graph runs top to bottom (width is free then).
    return " " if rankdir in ("TB", "BT") else "\\n"


def get_layer_label(layer, rankdir, display_lrm=False):
    """pycaffe's node label: the label pieces joined by a newline (a space for TB/BT graphs),
    as a quoted dot string."""
    return '"' + _separator(rankdir).join(_label_piece(p) for p in
                                          label_pieces(layer, display_lrm)) + '"'


def choose_color_by_layertype(layertype):
    """Fill colour of a layer's box: convolution red, pooling orange, inner product purple,
    others blue."""
    return LAYER_COLOURS.get(layertype, DEFAULT_COLOUR)


def _phase_number(phase):
    if phase is None:
        return None
    if isinstance(phase, str):
        names = {"TRAIN": crema_pb2.TRAIN, "TEST": crema_pb2.TEST, "ALL": None}
        if phase.upper() not in names:
            raise CremaError(f"phase must be TRAIN, TEST or ALL, got {phase!r}")
        return names[phase.upper()]
    if phase not in (crema_pb2.TRAIN, crema_pb2.TEST):
        raise CremaError(f"phase must be engine.TRAIN (0), engine.TEST (1) or None, got {phase!r}")
    return int(phase)


def _included(lp, phase):
    if phase is None:
        return True
    if lp.include and lp.exclude:
        raise CremaError(f"layer '{lp.name}' has both include and exclude rules; use one of them")
    if lp.include:
        return any(r.phase == phase for r in lp.include if r.HasField("phase")) or \
            any(not r.HasField("phase") for r in lp.include)
    return not any(r.HasField("phase") and r.phase == phase for r in lp.exclude)


class Graph:
    """A drawing before it is written: node and edge attributes are dot-ready strings (IDs or
    quoted strings), so the same graph becomes dot text (to_dot) or a pydot graph."""

    def __init__(self, name, rankdir):
        self.name, self.rankdir = _quote(name), rankdir
        self.nodes = []   # (quoted id, {attribute: value})
        self.edges = []   # (quoted source id, quoted destination id, {attribute: value})

    def to_dot(self):
        def attributes(attrs):
            return ", ".join(f"{k}={v}" for k, v in attrs.items())
        lines = [f"digraph {self.name} {{", f"  rankdir={self.rankdir};",
                 '  node [fontname="Helvetica"];']
        lines += [f"  {node} [{attributes(attrs)}];" for node, attrs in self.nodes]
        lines += [f"  {src} -> {dst}" + (f" [{attributes(attrs)}]" if attrs else "") + ";"
                  for src, dst, attrs in self.edges]
        return "\n".join(lines + ["}"]) + "\n"


def net_graph(model, rankdir="LR", phase=None, label_edges=True, display_lrm=False):
    """The Graph of `model` (a path, prototxt text or NetParameter)."""
    if rankdir not in RANKDIRS:
        raise CremaError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    phase = _phase_number(phase)
    param, source = read_net_param(model)
    from ..upgrade import needs_upgrade, upgrade_net_param
    if needs_upgrade(param):
        param = upgrade_net_param(param, source.label)
    graph = Graph(param.name or "Net", rankdir)
    blobs = []
    for i, lp in enumerate(param.layer):
        if not _included(lp, phase):
            continue
        node = _quote(f"layer{i}_{lp.name}_{lp.type}")
        in_place = len(lp.bottom) == 1 and list(lp.bottom) == list(lp.top)
        colour = IN_PLACE_COLOUR if in_place else choose_color_by_layertype(lp.type)
        graph.nodes.append((node, {"shape": "record", "style": "filled",
                                   "fillcolor": _quote(colour),
                                   "label": get_layer_label(lp, rankdir, display_lrm)}))
        top_label = get_edge_label(lp) if label_edges else '""'
        top_attrs = {} if top_label == '""' else {"label": _quote(top_label)}
        for b in lp.bottom:
            if b not in blobs:
                blobs.append(b)
            graph.edges.append((_quote(f"blob_{b}"), node, {}))
        for t in lp.top:
            if t not in blobs:
                blobs.append(t)
            graph.edges.append((node, _quote(f"blob_{t}"), dict(top_attrs)))
    graph.nodes += [(_quote(f"blob_{b}"), {"shape": "octagon", "style": "filled",
                                            "fillcolor": _quote(BLOB_COLOUR), "label": _quote(b)})
                    for b in blobs]
    return graph


def net_to_dot(model, rankdir="LR", phase=None, label_edges=True, display_lrm=False):
    """Dot text for `model` (a path, prototxt text or NetParameter)."""
    return net_graph(model, rankdir, phase, label_edges, display_lrm).to_dot()


def _dot_program(fmt):
    dot = shutil.which("dot")
    if dot is None:
        raise MissingProgramError(
            f"drawing to .{fmt} needs the Graphviz program 'dot', which is not installed "
            "(install graphviz, or write a .dot file)")
    return dot


def _render_to(text, fmt, path, dot):
    done = subprocess.run([dot, f"-T{fmt}", "-o", path], input=text.encode(),
                          capture_output=True)
    if done.returncode != 0:
        msg = done.stderr.decode(errors="replace").strip().splitlines()
        raise CremaError(f"dot -T{fmt} failed (exit {done.returncode})"
                         + (f": {msg[-1]}" if msg else ""))
    if os.path.getsize(path) == 0:
        raise CremaError(f"dot -T{fmt} wrote no output")


def render(text, fmt):
    """Dot text -> bytes in `fmt` (TEXT_FORMATS are the text itself; others run `dot`)."""
    fmt = fmt.lower()
    if fmt in TEXT_FORMATS:
        return text.encode()
    dot = _dot_program(fmt)
    with tempfile.TemporaryDirectory(prefix="crema-draw-") as tmp:
        path = os.path.join(tmp, f"net.{fmt}")
        _render_to(text, fmt, path, dot)
        with open(path, "rb") as fh:
            return fh.read()


def draw_net(model, rankdir, ext="png", phase=None, display_lrm=False):
    """The drawing of `model` as bytes in format `ext` (png, svg, pdf, ... or dot/raw text)."""
    return render(net_to_dot(model, rankdir, phase=phase, display_lrm=display_lrm), ext)


def draw_net_to_file(model, out_path, rankdir="LR", phase=None, display_lrm=False):
    """Write the drawing of `model` to `out_path`; the extension picks the format (.dot, .gv and
    .raw are the text itself; anything else, e.g. .svg, .png, .pdf, is rendered by `dot`).
    Returns out_path."""
    ext = os.path.splitext(str(out_path))[1].lower().lstrip(".")
    if not ext:
        raise CremaError(f"{out_path}: give the output file an extension (.dot, .svg, .png, ...)")
    text = net_to_dot(model, rankdir=rankdir, phase=phase, display_lrm=display_lrm)
    dot = None if ext in TEXT_FORMATS else _dot_program(ext)

    def write(tmp):
        if dot is None:
            with open(tmp, "w") as fh:
                fh.write(text)
        else:
            _render_to(text, ext, tmp, dot)
    atomic_write(out_path, write)
    return out_path
