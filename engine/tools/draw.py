"""Draw a net as a Graphviz graph (Caffe's python/draw_net.py, without pydot).

    text = net_to_dot("train_val.prototxt", rankdir="LR", phase=None)   # Graphviz dot text
    draw_net_to_file("train_val.prototxt", "net.svg")                   # .dot, or via `dot` for others

As Caffe draws it: one box per layer (label "name (type)", with kernel size, stride and pad for
convolution and pooling; colour by kind), one octagon per blob, an edge blob -> layer for each
bottom and layer -> blob for each top. `phase` ("TRAIN"/"TEST"/None for all) keeps only the layers
whose include/exclude rules name that phase, as Caffe's script does (levels and stages are not
looked at). Legacy V0/V1 nets are upgraded first. The text is written here; rendering to svg, png
or another format runs the `dot` program of Graphviz.
"""
import os
import shutil
import subprocess

from .. import crema_pb2
from ..errors import CremaError
from ..fileio import atomic_write
from ..schema import read_net_param

LAYER_COLOURS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                 "InnerProduct": "#CC33FF"}
DEFAULT_COLOUR = "#6495ED"
BLOB_COLOUR = "#E0E0E0"
RANKDIRS = ("LR", "RL", "TB", "BT")


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


def _conv_params(lp):
    p = lp.convolution_param
    kernel = p.kernel_size[0] if p.kernel_size else p.kernel_h
    stride = p.stride[0] if p.stride else (p.stride_h or 1)
    pad = p.pad[0] if p.pad else p.pad_h
    return kernel, stride, pad


def layer_label(lp):
    """Caffe's get_layer_label, as a list of lines: name and type, plus the geometry of
    convolution and pooling layers."""
    pieces = [lp.name, f"({lp.type})"]
    if lp.type in ("Convolution", "Deconvolution"):
        kernel, stride, pad = _conv_params(lp)
        pieces += [f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]
    elif lp.type == "Pooling":
        p = lp.pooling_param
        pool = crema_pb2.PoolingParameter.PoolMethod.Name(p.pool)
        pieces += [f"pool: {pool}", f"kernel size: {p.kernel_size or p.kernel_h}",
                   f"stride: {p.stride or p.stride_h or 1}", f"pad: {p.pad or p.pad_h}"]
    return pieces


def _included(lp, phase):
    if phase is None:
        return True
    if lp.include and lp.exclude:
        raise CremaError(f"layer '{lp.name}' has both include and exclude rules; use one of them")
    if lp.include:
        return any(r.phase == phase for r in lp.include if r.HasField("phase")) or \
            any(not r.HasField("phase") for r in lp.include)
    return not any(r.HasField("phase") and r.phase == phase for r in lp.exclude)


def net_to_dot(model, rankdir="LR", phase=None):
    """Dot text for `model` (a path, prototxt text or NetParameter). `phase`: None, "TRAIN",
    "TEST" or engine.TRAIN/engine.TEST."""
    if rankdir not in RANKDIRS:
        raise CremaError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    if isinstance(phase, str):
        names = {"TRAIN": crema_pb2.TRAIN, "TEST": crema_pb2.TEST, "ALL": None}
        if phase.upper() not in names:
            raise CremaError(f"phase must be TRAIN, TEST or ALL, got {phase!r}")
        phase = names[phase.upper()]
    param, source = read_net_param(model)
    from ..upgrade import needs_upgrade, upgrade_net_param
    if needs_upgrade(param):
        param = upgrade_net_param(param, source.label)
    # Caffe puts labels on one line when the graph runs top to bottom.
    separator = " " if rankdir in ("TB", "BT") else "\\n"
    lines = [f"digraph {_quote(param.name or 'net')} {{",
             f"  rankdir={rankdir};",
             "  node [fontname=\"Helvetica\"];"]
    blobs, edges = [], []
    for i, lp in enumerate(param.layer):
        if not _included(lp, phase):
            continue
        node = f"layer{i}_{lp.name}_{lp.type}"
        colour = LAYER_COLOURS.get(lp.type, DEFAULT_COLOUR)
        label = separator.join(_label_piece(piece) for piece in layer_label(lp))
        lines.append(f"  {_quote(node)} [shape=record, style=filled, fillcolor=\"{colour}\", "
                     f"label=\"{label}\"];")
        for b in lp.bottom:
            if b not in blobs:
                blobs.append(b)
            edges.append((f"blob_{b}", node))
        for t in lp.top:
            if t not in blobs:
                blobs.append(t)
            edges.append((node, f"blob_{t}"))
    for b in blobs:
        lines.append(f"  {_quote('blob_' + b)} [shape=octagon, style=filled, "
                     f"fillcolor=\"{BLOB_COLOUR}\", label={_quote(b)}];")
    for src, dst in edges:
        lines.append(f"  {_quote(src)} -> {_quote(dst)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_net_to_file(model, out_path, rankdir="LR", phase=None):
    """Write the drawing of `model` to `out_path`; the extension picks the format (.dot is the
    text itself; anything else, e.g. .svg, .png, .pdf, is rendered by Graphviz `dot`)."""
    text = net_to_dot(model, rankdir=rankdir, phase=phase)
    ext = os.path.splitext(out_path)[1].lower().lstrip(".")
    if not ext:
        raise CremaError(f"{out_path}: give the output file an extension (.dot, .svg, .png, ...)")
    if ext not in ("dot", "gv"):
        dot = shutil.which("dot")
        if dot is None:
            raise MissingProgramError(
                f"drawing to .{ext} needs the Graphviz program 'dot', which is not installed "
                "(install graphviz, or write a .dot file)")

    def write(tmp):
        if ext in ("dot", "gv"):
            with open(tmp, "w") as fh:
                fh.write(text)
            return
        done = subprocess.run([dot, f"-T{ext}", "-o", tmp], input=text.encode(),
                              capture_output=True)
        if done.returncode != 0:
            msg = done.stderr.decode(errors="replace").strip().splitlines()
            raise CremaError(f"dot -T{ext} failed (exit {done.returncode})"
                             + (f": {msg[-1]}" if msg else ""))
        if os.path.getsize(tmp) == 0:
            raise CremaError(f"dot -T{ext} wrote no output")
    atomic_write(out_path, write)
    return out_path
