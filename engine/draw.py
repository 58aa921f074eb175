"""pycaffe's caffe.draw: draw a NetParameter with Graphviz.

    import engine as caffe
    import engine.draw
    from engine.proto import caffe_pb2
    from google.protobuf import text_format
    net = text_format.Parse(open("train_val.prototxt").read(), caffe_pb2.NetParameter())
    caffe.draw.draw_net_to_file(net, "net.png", "LR", phase=caffe.TRAIN)

The functions and signatures are pycaffe's. The drawing itself is engine.tools.draw's (also
behind `crema draw`; its docstring lists the few differences from Caffe's): `caffe_net` may be a
NetParameter, as in pycaffe, or a prototxt path or text. Rendering to png, svg, pdf, ... runs
Graphviz's `dot` program and raises MissingProgramError (a CremaError) when it is not
installed; ext "raw" (pycaffe's name for the dot text), "dot" and "gv" need no Graphviz.
get_pydot_graph needs the pydot package, and not Graphviz.
"""
from .errors import CremaError
from .tools.draw import (MissingProgramError, choose_color_by_layertype, draw_net,
                         draw_net_to_file, get_edge_label, get_layer_label, get_layer_lr_mult,
                         get_pooling_types_dict, net_graph)

__all__ = ["MissingProgramError", "choose_color_by_layertype", "draw_net", "draw_net_to_file",
           "get_edge_label", "get_layer_label", "get_layer_lr_mult", "get_pooling_types_dict",
           "get_pydot_graph"]


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The drawing as a pydot.Dot graph (write it with its write_png, write_svg, ... methods,
    which run Graphviz)."""
    try:
        import pydot
    except ImportError:
        raise CremaError("get_pydot_graph needs the pydot package (pip install pydot); "
                         "draw_net and draw_net_to_file do not") from None
    graph = net_graph(caffe_net, rankdir, phase=phase, label_edges=label_edges,
                      display_lrm=display_lrm)
    dot = pydot.Dot(graph.name, graph_type="digraph", rankdir=graph.rankdir)
    dot.set_node_defaults(fontname='"Helvetica"')
    for node, attrs in graph.nodes:
        dot.add_node(pydot.Node(node, **attrs))
    for src, dst, attrs in graph.edges:
        dot.add_edge(pydot.Edge(src, dst, **attrs))
    return dot
