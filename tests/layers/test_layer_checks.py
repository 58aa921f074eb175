"""Every CHECK that Caffe's layer code makes on user input, refused by crema the same way.

One row per Caffe check (its source file:line at BVLC/caffe 9b89154, as in
docs/caffe_layer_checks.md): a net that trips it, how to trip it (build, reshape, forward or
backward) and a fragment that the message must contain. Every refusal must be a crema error whose
message also names the prototxt file:line and the layer ('t' in every row)."""
import re
from dataclasses import dataclass, field

import h5py
import numpy as np
import pytest

import engine
from engine import CremaError
from engine.data import lmdb_io
from engine.io import array_to_blobproto


@dataclass
class Row:
    site: str            # Caffe source file:line of the CHECK
    layer: str           # the tested layer's body after `name: "t"`
    shapes: tuple = ()   # shapes of the Input tops a, b, c, d
    fragment: str = ""   # regular expression (case-insensitive) the message must contain
    action: str = "build"  # build | reshape | forward | backward
    feed: dict = field(default_factory=dict)  # forward: input values; reshape: new shapes
    before: str = ""     # layers placed ahead of the Input layer's consumers (producers)
    files: object = None  # files(tmp_path) -> substitutions for {placeholders} in `layer`

    @property
    def id(self):
        return self.site.replace(".cpp", "").replace("/", "_")


def L(type_, params="", bottoms=("a",), tops=("t",), extra=""):
    """The body of the tested layer (named 't')."""
    return (f'type: "{type_}" ' + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
            + " ".join(f'top: "{t}"' for t in tops) + f" {params} {extra}")


def blob_text(*shape, value=0.0):
    dims = " ".join(f"dim: {d}" for d in shape)
    data = " ".join(f"data: {value}" for _ in range(int(np.prod(shape))))
    return f"blobs {{ shape {{ {dims} }} {data} }}"


CONV = 'convolution_param { num_output: 2 %s }'
# A learnable producer: anything downstream of it needs a gradient (for "cannot backpropagate").
PARAM = ('layer {{ name: "p" type: "Parameter" top: "p" '
         'parameter_param {{ shape {{ {dims} }} }} }}')


def param_producer(*shape):
    return PARAM.format(dims=" ".join(f"dim: {d}" for d in shape))


# -- files some rows need ---------------------------------------------------------------------
def lmdb_of(c=1, h=4, w=5):
    def make(tmp_path):
        images = np.zeros((3, c, h, w), np.uint8)
        lmdb_io.write_arrays(tmp_path / "db", images, np.arange(3))
        mean = tmp_path / "mean.binaryproto"
        mean.write_bytes(array_to_blobproto(np.zeros((1, c, h + 1, w), np.float32))
                         .SerializeToString())
        return {"db": tmp_path / "db", "mean": mean}
    return make


def h5_of(**datasets):
    def make(tmp_path):
        path = tmp_path / "d.h5"
        with h5py.File(path, "w") as f:
            for name, value in datasets.items():
                f[name] = value
        listing = tmp_path / "list.txt"
        listing.write_text(f"{path}\n")
        return {"list": listing, "h5": path}
    return make


def text_file(text):
    def make(tmp_path):
        path = tmp_path / "list.txt"
        path.write_text(text)
        return {"list": path, "dir": tmp_path}
    return make


def image_list(tmp_path, height=4, width=5):
    """A list of two images: ok.png (height x width, color) and bad.png (not an image)."""
    from PIL import Image
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    path = tmp_path / "list.txt"
    path.write_text("ok.png 0\nbad.png 1\n")
    return {"list": path, "dir": f"{tmp_path}/"}


def infogain_file(n):
    def make(tmp_path):
        path = tmp_path / "H.binaryproto"
        path.write_bytes(array_to_blobproto(np.eye(n, dtype=np.float32)).SerializeToString())
        return {"H": path}
    return make


def window_file(*windows, text=None):
    """A WindowData window file over one 6 x 8 color image, with `windows` ("label overlap x1 y1
    x2 y2" strings), or `text` as the whole file."""
    def make(tmp_path):
        from PIL import Image
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "w.png")
        path = tmp_path / "windows.txt"
        body = "\n".join(["# 0", "w.png", "3", "6", "8", str(len(windows)), *windows])
        path.write_text((body if text is None else text) + "\n")
        mean = tmp_path / "mean.binaryproto"
        mean.write_bytes(array_to_blobproto(np.zeros((1, 3, 4, 4), np.float32))
                         .SerializeToString())
        return {"list": path, "dir": f"{tmp_path}/", "mean": mean}
    return make


def window_layer(transform="crop_size: 4", source="{list}"):
    return L("WindowData", f'window_data_param {{ source: "{source}" root_folder: "{{dir}}" '
                           'batch_size: 2 fg_threshold: 0.5 bg_threshold: 0.5 fg_fraction: 0.5 } '
                           f'transform_param {{ {transform} }}', (), ("data", "label"))


FG, BG = "1 0.9 0 0 3 3", "0 0.1 1 1 4 4"


ROWS = [
    # -- include/caffe/layer.hpp: CheckBlobCounts and SetLossWeights -------------------------
    Row("layer.hpp:349", L("Softmax", bottoms=("a", "b")), ((2, 3), (2, 3)),
        r"exactly 1 bottom blob\(s\), got 2"),
    Row("layer.hpp:354", L("Concat", bottoms=()), (), r"at least 1 bottom blob\(s\), got 0"),
    Row("layer.hpp:359", L("SoftmaxWithLoss", bottoms=("a", "b", "c", "d")), ((2, 3),) * 4,
        r"at most 3 bottom blob\(s\), got 4"),
    Row("layer.hpp:364", L("Softmax", tops=("t", "u")), ((2, 3),),
        r"exactly 1 top blob\(s\), got 2"),
    Row("layer.hpp:369", L("Split", tops=()), ((2, 3),), r"at least 1 top blob\(s\), got 0"),
    Row("layer.hpp:374", L("Pooling", "pooling_param { kernel_size: 1 }", tops=("t", "u", "v")),
        ((1, 1, 2, 2),), r"at most 2 top blob\(s\), got 3"),
    Row("layer.hpp:379", L("Silence", bottoms=("a", "b"), tops=("t",)), ((2,), (2,)),
        r"at most 0 top|exactly 0 top|as many tops"),
    Row("layer.hpp:392", L("ReLU", extra="loss_weight: 1 loss_weight: 2"), ((2,),),
        r"2 loss_weight values for 1 tops"),
    # -- absval_layer.cpp ---------------------------------------------------------------------
    Row("absval_layer.cpp:12", L("AbsVal", tops=("a",)), ((2,),),
        r"AbsVal does not allow in-place computation"),
    # -- accuracy_layer.cpp -------------------------------------------------------------------
    Row("accuracy_layer.cpp:25", L("Accuracy", "accuracy_param { top_k: 4 }", ("a", "b")),
        ((2, 3), (2,)), r"top_k \(4\) must be less than or equal to the number of classes"),
    Row("accuracy_layer.cpp:31", L("Accuracy", "", ("a", "b")), ((2, 3), (3,)),
        r"number of labels must match number of predictions"),
    # -- argmax_layer.cpp ---------------------------------------------------------------------
    Row("argmax_layer.cpp:17", L("ArgMax", "argmax_param { top_k: 0 }"), ((2, 3),),
        r"top_k must be at least 1"),
    Row("argmax_layer.cpp:23", L("ArgMax", "argmax_param { top_k: 4 axis: 1 }"), ((2, 3, 5),),
        r"top_k 4 is larger than axis"),
    Row("argmax_layer.cpp:26", L("ArgMax", "argmax_param { top_k: 7 }"), ((2, 3, 2),),
        r"top_k 7 is larger than the"),
    # -- base_conv_layer.cpp (Convolution; Deconvolution shares the code) ---------------------
    Row("base_conv_layer.cpp:27", L("Convolution", CONV % "kernel_h: 1 kernel_w: 1"),
        ((1, 1, 3, 3, 3),), r"N-D convolution is not supported.* has 3 spatial axes"),
    Row("base_conv_layer.cpp:29",
        L("Convolution", CONV % "kernel_size: 1 kernel_h: 1 kernel_w: 1"), ((1, 1, 3, 3),),
        r"either kernel_size or kernel_h/kernel_w may be given, not both"),
    Row("base_conv_layer.cpp:35",
        L("Convolution", CONV % "kernel_size: 1 kernel_size: 1 kernel_size: 1"),
        ((1, 1, 3, 3),), r"kernel_size has 3 values"),
    Row("base_conv_layer.cpp:45", L("Convolution", CONV % "kernel_size: 0"), ((1, 1, 3, 3),),
        r"kernel dimensions must be positive"),
    Row("base_conv_layer.cpp:51",
        L("Convolution", CONV % "kernel_size: 1 stride_h: 1 stride_w: 1"),
        ((1, 1, 3, 3, 3),), r"N-D convolution is not supported.* has 3 spatial axes"),
    Row("base_conv_layer.cpp:53",
        L("Convolution", CONV % "kernel_size: 1 stride: 1 stride_h: 1 stride_w: 1"),
        ((1, 1, 3, 3),), r"either stride or stride_h/stride_w may be given, not both"),
    Row("base_conv_layer.cpp:59",
        L("Convolution", CONV % "kernel_size: 1 stride: 1 stride: 1 stride: 1"),
        ((1, 1, 3, 3),), r"stride has 3 values"),
    Row("base_conv_layer.cpp:68", L("Convolution", CONV % "kernel_size: 1 stride: 0"),
        ((1, 1, 3, 3),), r"stride dimensions must be positive"),
    Row("base_conv_layer.cpp:75",
        L("Convolution", CONV % "kernel_size: 1 pad_h: 1 pad_w: 1"),
        ((1, 1, 3, 3, 3),), r"N-D convolution is not supported.* has 3 spatial axes"),
    Row("base_conv_layer.cpp:77",
        L("Convolution", CONV % "kernel_size: 1 pad: 1 pad_h: 1 pad_w: 1"),
        ((1, 1, 3, 3),), r"either pad or pad_h/pad_w may be given, not both"),
    Row("base_conv_layer.cpp:83",
        L("Convolution", CONV % "kernel_size: 1 pad: 0 pad: 0 pad: 0"),
        ((1, 1, 3, 3),), r"pad has 3 values"),
    Row("base_conv_layer.cpp:98",
        L("Convolution", CONV % "kernel_size: 1 dilation: 1 dilation: 1 dilation: 1"),
        ((1, 1, 3, 3),), r"dilation has 3 values"),
    Row("base_conv_layer.cpp:119",
        L("Convolution", "convolution_param { kernel_size: 1 }"), ((1, 1, 3, 3),),
        r"num_output must be set to a positive number"),
    Row("base_conv_layer.cpp:121",
        L("Convolution", "convolution_param { num_output: 2 kernel_size: 1 group: 2 }"),
        ((1, 3, 3, 3),), r"input channels 3 .*not divisible by group 2"),
    Row("base_conv_layer.cpp:122",
        L("Convolution", "convolution_param { num_output: 3 kernel_size: 1 group: 2 }"),
        ((1, 4, 3, 3),), r"num_output 3 is not divisible by group 2"),
    Row("base_conv_layer.cpp:143",
        L("Convolution", CONV % "kernel_size: 1", extra=blob_text(2, 1, 1, 1)),
        ((1, 1, 3, 3),), r"incorrect number of parameter blobs: expected 2"),
    Row("base_conv_layer.cpp:147",
        L("Convolution", CONV % "kernel_size: 1",
          extra=blob_text(2, 1, 2, 2) + " " + blob_text(2)),
        ((1, 1, 3, 3),), r"incorrect weight shape: expected \(2, 1, 1, 1\), got \(2, 1, 2, 2\)"),
    Row("base_conv_layer.cpp:153",
        L("Convolution", CONV % "kernel_size: 1",
          extra=blob_text(2, 1, 1, 1) + " " + blob_text(3)),
        ((1, 1, 3, 3),), r"incorrect bias shape: expected \(2,\), got \(3,\)"),
    Row("base_conv_layer.cpp:188", L("Convolution", CONV % "kernel_size: 1"), ((1, 1, 3, 3),),
        r"the number of axes may not change", "reshape", {"a": (1, 1, 3, 3, 3)}),
    Row("base_conv_layer.cpp:191", L("Convolution", CONV % "kernel_size: 1"), ((1, 1, 3, 3),),
        r"input size incompatible with convolution kernel", "reshape", {"a": (1, 2, 3, 3)}),
    Row("base_conv_layer.cpp:195",
        L("Convolution", CONV % "kernel_size: 1", ("a", "b"), ("t", "u")),
        ((1, 1, 3, 3), (1, 1, 3, 4)), r"all bottoms must have the same shape"),
    # -- batch_norm_layer.cpp ------------------------------------------------------------------
    Row("batch_norm_layer.cpp:44",
        L("BatchNorm", extra="param { lr_mult: 1 }"),
        ((2, 3),), r"lr_mult 1.*batch normalization"),
    Row("batch_norm_layer.cpp:55", L("BatchNorm"), ((2, 3),), r"has 4 channels.*set up .*3",
        "reshape", {"a": (2, 4)}),
    # -- batch_reindex_layer.cpp ---------------------------------------------------------------
    Row("batch_reindex_layer.cpp:11", L("BatchReindex", bottoms=("a", "b")), ((3, 2), (2, 1)),
        r"bottom\[1\] \(the indices\) must have one axis"),
    Row("batch_reindex_layer.cpp:25", L("BatchReindex", bottoms=("a", "b")), ((3, 2), (2,)),
        r"index -1 in bottom\[1\] is outside \[0, 3\)", "forward", {"b": [0, -1]}),
    Row("batch_reindex_layer.cpp:27", L("BatchReindex", bottoms=("a", "b")), ((3, 2), (2,)),
        r"index 3 in bottom\[1\] is outside \[0, 3\)", "forward", {"b": [0, 3]}),
    Row("batch_reindex_layer.cpp:55", L("BatchReindex", bottoms=("a", "p"), extra="loss_weight: 1"),
        ((3, 2),),
        r"cannot backpropagate to bottom\[1\] \(the indices\)", "backward",
        before=param_producer(2)),
    # -- bias_layer.cpp ------------------------------------------------------------------------
    Row("bias_layer.cpp:19", L("Bias", "bias_param { num_axes: -2 }"), ((2, 3),),
        r"num_axes must be non-negative, or -1"),
    Row("bias_layer.cpp:22", L("Bias", "bias_param { axis: 1 num_axes: 2 }"), ((2, 3),),
        r"extends past bottom\[0\]"),
    Row("bias_layer.cpp:50", L("Bias", bottoms=("a", "b")), ((2, 3), (3, 4)),
        r"extends past bottom\[0\]"),
    Row("bias_layer.cpp:54", L("Bias", bottoms=("a", "b")), ((2, 3), (4,)),
        r"the bias\) has shape \(4,\) but bottom\[0\] of shape \(2, 3\) has \(3,\)"),
    # -- concat_layer.cpp ----------------------------------------------------------------------
    Row("concat_layer.cpp:12", L("Concat", "concat_param { axis: 1 concat_dim: 1 }", ("a", "b")),
        ((2, 3), (2, 3)), r"either concat_param.axis or concat_param.concat_dim may be set, not both"),
    Row("concat_layer.cpp:25", L("Concat", "concat_param { concat_dim: 4294967295 }", ("a", "b")),
        ((2, 3), (2, 3)), r"concat_dim 4294967295 is out of range"),
    Row("concat_layer.cpp:28", L("Concat", "concat_param { concat_dim: 2 }", ("a", "b")),
        ((2, 3), (2, 3)), r"concat_dim 2 is out of range"),
    Row("concat_layer.cpp:38", L("Concat", "", ("a", "b")), ((2, 3), (2, 3, 1)),
        r"all bottoms must have the same number of axes"),
    Row("concat_layer.cpp:42", L("Concat", "", ("a", "b")), ((2, 3), (3, 3)),
        r"same shape except on the concat axis 1"),
    # -- contrastive_loss_layer.cpp ------------------------------------------------------------
    Row("contrastive_loss_layer.cpp:13", L("ContrastiveLoss", "", ("a", "b", "c")),
        ((2, 3), (2, 4), (2,)), r"same .*channels|N x C x 1 x 1"),
    Row("contrastive_loss_layer.cpp:14", L("ContrastiveLoss", "", ("a", "b", "c")),
        ((2, 3, 2, 1), (2, 3), (2,)), r"N x C x 1 x 1"),
    Row("contrastive_loss_layer.cpp:15", L("ContrastiveLoss", "", ("a", "b", "c")),
        ((2, 3, 1, 2), (2, 3), (2,)), r"N x C x 1 x 1"),
    Row("contrastive_loss_layer.cpp:16", L("ContrastiveLoss", "", ("a", "b", "c")),
        ((2, 3), (2, 3, 2, 1), (2,)), r"N x C x 1 x 1"),
    Row("contrastive_loss_layer.cpp:17", L("ContrastiveLoss", "", ("a", "b", "c")),
        ((2, 3), (2, 3, 1, 2), (2,)), r"N x C x 1 x 1"),
    Row("contrastive_loss_layer.cpp:18", L("ContrastiveLoss", "", ("a", "b", "c")),
        ((2, 3), (2, 3), (2, 2)), r"one similarity value per pair"),
    Row("contrastive_loss_layer.cpp:19", L("ContrastiveLoss", "", ("a", "b", "c")),
        ((2, 3), (2, 3), (2, 1, 2)), r"one similarity value per pair"),
    Row("contrastive_loss_layer.cpp:20", L("ContrastiveLoss", "", ("a", "b", "c")),
        ((2, 3), (2, 3), (2, 1, 1, 2)), r"one similarity value per pair"),
    # -- crop_layer.cpp ------------------------------------------------------------------------
    Row("crop_layer.cpp:29", L("Crop", "crop_param { axis: 2 offset: 0 offset: 0 offset: 0 }",
                               ("a", "b")), ((1, 1, 4, 4), (1, 1, 2, 2)),
        r"3 offsets; axis 2 of a 4-axis bottom"),
    Row("crop_layer.cpp:63", L("Crop", "crop_param { axis: 2 offset: 3 }", ("a", "b")),
        ((1, 1, 4, 4), (1, 1, 2, 2)), r"crop of axis 2 is out of bounds"),
    # -- dummy_data_layer.cpp ------------------------------------------------------------------
    Row("dummy_data_layer.cpp:14",
        L("DummyData", "dummy_data_param { shape { dim: 1 } data_filler { type: 'constant' } "
                       "data_filler { type: 'constant' } }", (), ("t", "u", "v")), (),
        r"0, 1 or one data_filler per top"),
    Row("dummy_data_layer.cpp:22",
        L("DummyData", "dummy_data_param { shape { dim: 1 } num: 1 channels: 1 height: 1 "
                       "width: 1 }", ()), (), r"both 'shape' and the legacy"),
    Row("dummy_data_layer.cpp:25",
        L("DummyData", "dummy_data_param { num: 1 num: 1 channels: 1 height: 1 width: 1 }",
          (), ("t", "u", "v")), (), r"'num' once or once per top"),
    Row("dummy_data_layer.cpp:28",
        L("DummyData", "dummy_data_param { num: 1 channels: 1 channels: 1 height: 1 width: 1 }",
          (), ("t", "u", "v")), (), r"'channels' once or once per top"),
    Row("dummy_data_layer.cpp:31",
        L("DummyData", "dummy_data_param { num: 1 channels: 1 height: 1 height: 1 width: 1 }",
          (), ("t", "u", "v")), (), r"'height' once or once per top"),
    Row("dummy_data_layer.cpp:34",
        L("DummyData", "dummy_data_param { num: 1 channels: 1 height: 1 width: 1 width: 1 }",
          (), ("t", "u", "v")), (), r"'width' once or once per top"),
    Row("dummy_data_layer.cpp:38",
        L("DummyData", "dummy_data_param { shape { dim: 1 } shape { dim: 1 } }",
          (), ("t", "u", "v")), (), r"'shape' once or once per top"),
    # -- eltwise_layer.cpp ---------------------------------------------------------------------
    Row("eltwise_layer.cpp:12",
        L("Eltwise", "eltwise_param { coeff: 1 coeff: 1 coeff: 1 }", ("a", "b")),
        ((2,), (2,)), r"one coeff per bottom: 2 bottoms"),
    Row("eltwise_layer.cpp:15",
        L("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 1 }", ("a", "b")),
        ((2,), (2,)), r"coeff is only for operation SUM"),
    Row("eltwise_layer.cpp:34", L("Eltwise", "", ("a", "b")), ((2,), (3,)),
        r"all bottoms must have the same shape"),
    # -- embed_layer.cpp -----------------------------------------------------------------------
    Row("embed_layer.cpp:13", L("Embed", "embed_param { input_dim: 3 }"), ((2,),),
        r"num_output must be positive"),
    Row("embed_layer.cpp:15", L("Embed", "embed_param { num_output: 3 }"), ((2,),),
        r"input_dim must be positive"),
    Row("embed_layer.cpp:88", L("Embed", "embed_param { num_output: 2 input_dim: 3 }", ("p",),
                                  extra="loss_weight: 1"), (), r"cannot backpropagate to the Embed input", "backward", before=param_producer(2)),
    # -- euclidean_loss_layer.cpp --------------------------------------------------------------
    Row("euclidean_loss_layer.cpp:12", L("EuclideanLoss", "", ("a", "b")), ((2, 3), (2, 4)),
        r"inputs must have the same dimension"),
    # -- exp_layer.cpp / log_layer.cpp ---------------------------------------------------------
    Row("exp_layer.cpp:14", L("Exp", "exp_param { base: 0 }"), ((2,),),
        r"base must be strictly positive"),
    Row("exp_layer.cpp:21", L("Exp", "exp_param { base: inf }"), ((2,),),
        r"log\(base\) = log\(inf\) = inf is not finite"),
    Row("log_layer.cpp:14", L("Log", "log_param { base: -2 }"), ((2,),),
        r"base must be strictly positive"),
    Row("log_layer.cpp:21", L("Log", "log_param { base: inf }"), ((2,),),
        r"log\(base\) = log\(inf\) = inf is not finite"),
    Row("log_layer.cpp:26", L("Log", "log_param { base: 1 }"), ((2,),),
        r"infinite 1/log\(base\)"),
    # -- filter_layer.cpp ----------------------------------------------------------------------
    Row("filter_layer.cpp:11", L("Filter", "", ("a", "b"), ("t", "u")), ((2, 3), (2,)),
        r"one top per filtered bottom"),
    Row("filter_layer.cpp:22", L("Filter", "", ("a", "b")), ((2, 3), (2, 2)),
        r"selector .* must have shape \(N, 1"),
    Row("filter_layer.cpp:26", L("Filter", "", ("a", "b")), ((3, 3), (2,)),
        r"must have the selector's"),
    Row("filter_layer.cpp:82", L("Filter", "", ("a", "p"), extra="loss_weight: 1"), ((2, 3),),
        r"cannot backpropagate to the selector", "backward",
        before=param_producer(2)),
    # -- flatten_layer.cpp ---------------------------------------------------------------------
    Row("flatten_layer.cpp:10", L("Flatten", tops=("a",)), ((2, 3),),
        r"Flatten does not work in place"),
    # -- hdf5_data_layer.cpp -------------------------------------------------------------------
    Row("hdf5_data_layer.cpp:32",
        L("HDF5Data", 'hdf5_data_param { source: "{list}" batch_size: 1 }', (), ("data",)),
        (), r"HDF5 file .*/nonexistent/x.h5.* does not exist", files=text_file("/nonexistent/x.h5\n")),
    Row("hdf5_data_layer.cpp:52",
        L("HDF5Data", 'hdf5_data_param { source: "{list}" batch_size: 1 }', (), ("data",)),
        (), r"is a scalar; it needs at least", files=h5_of(data=np.float32(1))),
    Row("hdf5_data_layer.cpp:55",
        L("HDF5Data", 'hdf5_data_param { source: "{list}" batch_size: 1 }', (), ("data", "y")),
        (), r"different numbers of rows",
        files=h5_of(data=np.zeros((2, 3), np.float32), y=np.zeros(3, np.float32))),
    Row("hdf5_data_layer.cpp:77",
        L("HDF5Data", 'hdf5_data_param { source: "{list}" batch_size: 1 } '
                      'transform_param { scale: 2 }', (), ("data",)),
        (), r"does not transform data", files=h5_of(data=np.zeros((2, 3), np.float32))),
    Row("hdf5_data_layer.cpp:90",
        L("HDF5Data", 'hdf5_data_param { source: "/nonexistent/list.txt" batch_size: 1 }', (),
          ("data",)), (), r"cannot open .*/nonexistent/list.txt"),
    Row("hdf5_data_layer.cpp:96",
        L("HDF5Data", 'hdf5_data_param { source: "{list}" batch_size: 1 }', (), ("data",)),
        (), r"lists no HDF5 files", files=text_file("\n")),
    # -- hdf5_output_layer.cpp -----------------------------------------------------------------
    Row("hdf5_output_layer.cpp:18",
        L("HDF5Output", 'hdf5_output_param { file_name: "/nonexistent/dir/out.h5" }',
          ("a", "b"), ()), ((2, 3), (2,)), r"/nonexistent/dir/out.h5: cannot write the HDF5 file"),
    Row("hdf5_output_layer.cpp:45",
        L("HDF5Output", 'hdf5_output_param { file_name: "{dir}/out.h5" }', ("a", "b"), ()),
        ((2, 3), (3,)), r"data bottom has 2 rows", files=text_file("")),
    # -- hinge_loss_layer.cpp ------------------------------------------------------------------
    Row("hinge_loss_layer.cpp:46", L("HingeLoss", "", ("p", "b"), extra="propagate_down: true "
                                     "propagate_down: true"), ((1,), (2,)),
        r"cannot backpropagate to label input bottom\[1\]", "backward", {"b": [0, 1]},
        before=param_producer(2, 3)),
    # -- im2col_layer.cpp (checks of its own, same wording as Convolution) ---------------------
    Row("im2col_layer.cpp:17",
        L("Im2col", "convolution_param { kernel_size: 1 axis: 1 }"), ((2, 3),),
        r"has 0 spatial axes"),
    Row("im2col_layer.cpp:23", L("Im2col", "convolution_param { kernel_h: 1 kernel_w: 1 }"),
        ((1, 1, 3, 3, 3),), r"N-D convolution is not supported.* has 3 spatial axes"),
    Row("im2col_layer.cpp:25",
        L("Im2col", "convolution_param { kernel_size: 1 kernel_h: 1 kernel_w: 1 }"),
        ((1, 1, 3, 3),), r"either kernel_size or kernel_h/kernel_w may be given, not both"),
    Row("im2col_layer.cpp:31",
        L("Im2col", "convolution_param { kernel_size: 1 kernel_size: 1 kernel_size: 1 }"),
        ((1, 1, 3, 3),), r"kernel_size has 3 values"),
    Row("im2col_layer.cpp:41", L("Im2col", "convolution_param { kernel_size: 0 }"),
        ((1, 1, 3, 3),), r"kernel dimensions must be positive"),
    Row("im2col_layer.cpp:47",
        L("Im2col", "convolution_param { kernel_size: 1 stride_h: 1 stride_w: 1 }"),
        ((1, 1, 3, 3, 3),), r"N-D convolution is not supported.* has 3 spatial axes"),
    Row("im2col_layer.cpp:49",
        L("Im2col", "convolution_param { kernel_size: 1 stride: 1 stride_h: 1 stride_w: 1 }"),
        ((1, 1, 3, 3),), r"either stride or stride_h/stride_w may be given, not both"),
    Row("im2col_layer.cpp:55",
        L("Im2col", "convolution_param { kernel_size: 1 stride: 1 stride: 1 stride: 1 }"),
        ((1, 1, 3, 3),), r"stride has 3 values"),
    Row("im2col_layer.cpp:64", L("Im2col", "convolution_param { kernel_size: 1 stride: 0 }"),
        ((1, 1, 3, 3),), r"stride dimensions must be positive"),
    Row("im2col_layer.cpp:71",
        L("Im2col", "convolution_param { kernel_size: 1 pad_h: 1 pad_w: 1 }"),
        ((1, 1, 3, 3, 3),), r"N-D convolution is not supported.* has 3 spatial axes"),
    Row("im2col_layer.cpp:73",
        L("Im2col", "convolution_param { kernel_size: 1 pad: 1 pad_h: 1 pad_w: 1 }"),
        ((1, 1, 3, 3),), r"either pad or pad_h/pad_w may be given, not both"),
    Row("im2col_layer.cpp:79",
        L("Im2col", "convolution_param { kernel_size: 1 pad: 0 pad: 0 pad: 0 }"),
        ((1, 1, 3, 3),), r"pad has 3 values"),
    Row("im2col_layer.cpp:94",
        L("Im2col", "convolution_param { kernel_size: 1 dilation: 1 dilation: 1 dilation: 1 }"),
        ((1, 1, 3, 3),), r"dilation has 3 values"),
    # -- image_data_layer.cpp ------------------------------------------------------------------
    Row("image_data_layer.cpp:33",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}" batch_size: 1 '
                       'new_height: 4 }', (), ("data", "label")), (),
        r"new_height \(4\) and new_width \(0\)", files=image_list),
    Row("image_data_layer.cpp:49",
        L("ImageData", 'image_data_param { source: "{list}" batch_size: 1 }', (),
          ("data", "label")), (), r"lists no images", files=text_file("")),
    Row("image_data_layer.cpp:71",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}" batch_size: 1 '
                       'rand_skip: 2000000000 }', (), ("data", "label")), (),
        r"rand_skip 2000000000 drew a skip of \d+ lines, but .* lists only 2 images",
        files=image_list),
    Row("image_data_layer.cpp:77",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}/" '
                       'batch_size: 1 }', (), ("data", "label")), (),
        r"image .*missing.png' not found", files=text_file("missing.png 0\n")),
    Row("image_data_layer.cpp:83",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}" '
                       'batch_size: 0 }', (), ("data", "label")), (),
        r"batch_size must be positive", files=image_list),
    Row("image_data_layer.cpp:129",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}" batch_size: 2 }',
          (), ("data", "label")), (), r"cannot decode image .*bad.png", "forward",
        files=image_list),
    # -- infogain_loss_layer.cpp ---------------------------------------------------------------
    Row("infogain_loss_layer.cpp:36",
        L("InfogainLoss", 'infogain_loss_param { source: "{H}" } loss_param { normalize: true }',
          ("a", "b")), ((2, 3), (2,)),
        r"normalize is deprecated for InfogainLoss: use loss_param.normalization",
        files=infogain_file(3)),
    Row("infogain_loss_layer.cpp:41", L("InfogainLoss", "", ("a", "b")), ((2, 3), (2,)),
        r"infogain matrix source must be specified"),
    Row("infogain_loss_layer.cpp:60",
        L("InfogainLoss", 'infogain_loss_param { source: "{H}" }', ("a", "b")),
        ((2, 3, 2), (2, 3)), r"number of labels must match number of predictions: .* needs 4 "
        r"labels, bottom\[1\] shape \(2, 3\) has 6", files=infogain_file(3)),
    Row("infogain_loss_layer.cpp:72", L("InfogainLoss", "", ("a", "b", "c")),
        ((2, 3), (2,), (2, 2)), r"infogain matrix in bottom\[2\] has shape \(2, 2\).*3 x 3"),
    Row("infogain_loss_layer.cpp:172",
        L("InfogainLoss", 'infogain_loss_param { source: "{H}" }', ("p", "b"),
          extra="propagate_down: true propagate_down: true"), ((1,), (2,)),
        r"cannot backpropagate to label input bottom\[1\]", "backward", {"b": [0, 1]},
        before=param_producer(2, 3), files=infogain_file(3)),
    Row("infogain_loss_layer.cpp:176",
        L("InfogainLoss", "", ("p", "b", "c"),
          extra="propagate_down: true propagate_down: false propagate_down: true"),
        ((1,), (2,), (3, 3)), r"cannot backpropagate to infogain .*bottom\[2\]", "backward",
        {"b": [0, 1], "c": np.eye(3)}, before=param_producer(2, 3)),
    # -- inner_product_layer.cpp ---------------------------------------------------------------
    Row("inner_product_layer.cpp:64", L("InnerProduct", "inner_product_param { num_output: 2 }"),
        ((2, 3),), r"input size incompatible with inner product parameters", "reshape",
        {"a": (2, 4)}),
    # -- input_layer.cpp -----------------------------------------------------------------------
    Row("input_layer.cpp:13",
        L("Input", "input_param { shape { dim: 1 } shape { dim: 1 } }", (), ("t", "u", "v")),
        (), r"'shape' once, once per top"),
    # -- loss_layer.cpp ------------------------------------------------------------------------
    Row("loss_layer.cpp:19", L("SoftmaxWithLoss", "", ("a", "b")), ((2, 3), (3,)),
        r"same first dimension"),
    # -- lrn_layer.cpp -------------------------------------------------------------------------
    Row("lrn_layer.cpp:12", L("LRN", "lrn_param { local_size: 4 }"), ((1, 2, 3, 3),),
        r"local_size must be odd"),
    Row("lrn_layer.cpp:71", L("LRN"), ((2, 3),), r"must have 4 axes"),
    # -- lstm_layer.cpp / rnn_layer.cpp --------------------------------------------------------
    Row("lstm_layer.cpp:49", L("LSTM", "", ("a", "b")), ((2, 1, 3), (2, 1)),
        r"num_output must be positive"),
    Row("rnn_layer.cpp:44", L("RNN", "", ("a", "b")), ((2, 1, 3), (2, 1)),
        r"num_output must be positive"),
    # -- lstm_unit_layer.cpp -------------------------------------------------------------------
    Row("lstm_unit_layer.cpp:26", L("LSTMUnit", "", ("a", "b", "c"), ("t", "u")),
        ((1, 2, 3), (1, 2, 12), (1, 2, 1)), r"bottom\[2\] has shape \(1, 2, 1\); LSTMUnit needs"),
    Row("lstm_unit_layer.cpp:28", L("LSTMUnit", "", ("a", "b", "c"), ("t", "u")),
        ((2, 3), (1, 2, 12), (1, 2)), r"bottom\[0\] has shape \(2, 3\); LSTMUnit needs"),
    Row("lstm_unit_layer.cpp:30", L("LSTMUnit", "", ("a", "b", "c"), ("t", "u")),
        ((2, 2, 3), (1, 2, 12), (1, 2)), r"bottom\[0\] has shape \(2, 2, 3\); LSTMUnit needs"),
    Row("lstm_unit_layer.cpp:31", L("LSTMUnit", "", ("a", "b", "c"), ("t", "u")),
        ((1, 2, 3), (1, 3, 12), (1, 2)), r"bottom\[1\] has shape \(1, 3, 12\); LSTMUnit needs"),
    Row("lstm_unit_layer.cpp:34", L("LSTMUnit", "", ("a", "b", "c"), ("t", "u")),
        ((1, 2, 3), (1, 2, 11), (1, 2)), r"11 values per stream"),
    Row("lstm_unit_layer.cpp:74", L("LSTMUnit", "", ("a", "b", "p"), ("t", "u"),
                                    extra="propagate_down: false propagate_down: false "
                                          "propagate_down: true loss_weight: 1 loss_weight: 0"),
        ((1, 2, 3), (1, 2, 12)), r"cannot backpropagate to sequence indicators", "backward",
        before=param_producer(1, 2)),
    # -- memory_data_layer.cpp (the pycaffe API: set_input_arrays and forward) ------------------
    Row("memory_data_layer.cpp:19",
        L("MemoryData", "memory_data_param { batch_size: 2 channels: 1 height: 0 width: 1 }",
          (), ("data", "label")), (), r"must all be given and positive"),
    Row("memory_data_layer.cpp:84",
        L("MemoryData", "memory_data_param { batch_size: 2 channels: 1 height: 1 width: 1 }",
          (), ("data", "label")), (), r"needs numpy arrays for data and labels",
        "set_input_arrays", {"data": None, "labels": None}),
    Row("memory_data_layer.cpp:86",
        L("MemoryData", "memory_data_param { batch_size: 2 channels: 1 height: 1 width: 1 }",
          (), ("data", "label")), (), r"multiple of batch_size", "set_input_arrays",
        {"data": np.zeros((3, 1, 1, 1), np.float32), "labels": np.zeros(3, np.float32)}),
    Row("memory_data_layer.cpp:110",
        L("MemoryData", "memory_data_param { batch_size: 2 channels: 1 height: 1 width: 1 }",
          (), ("data", "label")), (), r"no input arrays: call set_input_arrays", "forward"),
    # -- multinomial_logistic_loss_layer.cpp ---------------------------------------------------
    Row("multinomial_logistic_loss_layer.cpp:14",
        L("MultinomialLogisticLoss", "", ("a", "b")), ((2, 3), (2, 2)),
        r"one label per example"),
    Row("multinomial_logistic_loss_layer.cpp:15",
        L("MultinomialLogisticLoss", "", ("a", "b")), ((2, 3), (2, 1, 2)),
        r"one label per example"),
    Row("multinomial_logistic_loss_layer.cpp:16",
        L("MultinomialLogisticLoss", "", ("a", "b")), ((2, 3), (2, 1, 1, 2)),
        r"one label per example"),
    Row("multinomial_logistic_loss_layer.cpp:41",
        L("MultinomialLogisticLoss", "", ("p", "b"),
          extra="propagate_down: true propagate_down: true"), ((1,), (2,)),
        r"cannot backpropagate to label input bottom\[1\]", "backward", {"b": [0, 1]},
        before=param_producer(2, 3)),
    # -- pooling_layer.cpp ---------------------------------------------------------------------
    Row("pooling_layer.cpp:18",
        L("Pooling", "pooling_param { global_pooling: true kernel_size: 2 }"), ((1, 1, 2, 2),),
        r"global_pooling: true the kernel size cannot be specified"),
    Row("pooling_layer.cpp:22",
        L("Pooling", "pooling_param { kernel_size: 2 kernel_h: 2 kernel_w: 2 }"),
        ((1, 1, 2, 2),), r"kernel_size OR kernel_h and kernel_w"),
    Row("pooling_layer.cpp:25", L("Pooling", "pooling_param { kernel_h: 2 }"), ((1, 1, 2, 2),),
        r"needs kernel_size, or both kernel_h and kernel_w"),
    Row("pooling_layer.cpp:29",
        L("Pooling", "pooling_param { kernel_size: 2 pad: 0 pad_h: 0 pad_w: 0 }"),
        ((1, 1, 2, 2),), r"pad is pad OR pad_h and pad_w"),
    Row("pooling_layer.cpp:33",
        L("Pooling", "pooling_param { kernel_size: 2 stride_h: 1 }"), ((1, 1, 2, 2),),
        r"stride_h and stride_w must both be given"),
    Row("pooling_layer.cpp:50",
        L("Pooling", "pooling_param { kernel_h: 0 kernel_w: 2 }"), ((1, 1, 2, 2),),
        r"kernel dimensions must be positive"),
    Row("pooling_layer.cpp:51",
        L("Pooling", "pooling_param { kernel_h: 2 kernel_w: 0 }"), ((1, 1, 2, 2),),
        r"kernel dimensions must be positive"),
    Row("pooling_layer.cpp:65",
        L("Pooling", "pooling_param { global_pooling: true stride: 2 }"), ((1, 1, 2, 2),),
        r"only pad = 0 and stride = 1"),
    Row("pooling_layer.cpp:69",
        L("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 2 pad: 1 }"),
        ((1, 1, 2, 2),), r"padding is implemented only for MAX and AVE"),
    Row("pooling_layer.cpp:74",
        L("Pooling", "pooling_param { kernel_h: 2 kernel_w: 3 pad_h: 2 pad_w: 0 }"),
        ((1, 1, 4, 4),), r"must be smaller than the kernel"),
    Row("pooling_layer.cpp:75",
        L("Pooling", "pooling_param { kernel_h: 3 kernel_w: 2 pad_h: 0 pad_w: 2 }"),
        ((1, 1, 4, 4),), r"must be smaller than the kernel"),
    Row("pooling_layer.cpp:82", L("Pooling", "pooling_param { kernel_size: 1 }"), ((1, 2, 2),),
        r"input must have 4 axes"),
    # -- prelu_layer.cpp -----------------------------------------------------------------------
    Row("prelu_layer.cpp:14", L("PReLU"), ((2,),), r"at least 2 axes"),
    Row("prelu_layer.cpp:40", L("PReLU", "prelu_param { channel_shared: true }",
                                extra=blob_text(3)), ((2, 3),), r"slope blob has shape \(3,\)"),
    Row("prelu_layer.cpp:43", L("PReLU", extra=blob_text(2)), ((2, 3),),
        r"slope blob has shape \(2,\)"),
    Row("prelu_layer.cpp:57", L("PReLU"), ((2, 3),), r"at least 2 axes", "reshape", {"a": (3,)}),
    # -- recurrent_layer.cpp (LSTM and RNN) ----------------------------------------------------
    Row("recurrent_layer.cpp:16", L("RNN", "recurrent_param { num_output: 2 }", ("a", "b")),
        ((2,), (2, 1)), r"bottom\[0\] \(x\) must have at least 2 axes"),
    Row("recurrent_layer.cpp:23", L("RNN", "recurrent_param { num_output: 2 }", ("a", "b")),
        ((2, 1, 3), (2,)), r"bottom\[1\] \(cont\) must have shape \(T, N\)"),
    Row("recurrent_layer.cpp:25", L("RNN", "recurrent_param { num_output: 2 }", ("a", "b")),
        ((2, 1, 3), (3, 1)), r"bottom\[1\] \(cont\) must have shape \(T, N\)"),
    Row("recurrent_layer.cpp:26", L("RNN", "recurrent_param { num_output: 2 }", ("a", "b")),
        ((2, 1, 3), (2, 2)), r"bottom\[1\] \(cont\) must have shape \(T, N\)"),
    Row("recurrent_layer.cpp:46",
        L("RNN", "recurrent_param { num_output: 2 }", ("a", "b", "c")),
        ((2, 1, 3), (2, 1), ()), r"bottom\[2\] \(x_static\) must have shape \(N, ...\)"),
    Row("recurrent_layer.cpp:47",
        L("RNN", "recurrent_param { num_output: 2 }", ("a", "b", "c")),
        ((2, 1, 3), (2, 1), (2, 3)), r"bottom\[2\] \(x_static\) must have shape \(N, ...\)"),
    Row("recurrent_layer.cpp:185", L("RNN", "recurrent_param { num_output: 2 }", ("a", "b")),
        ((2, 1, 3), (2, 1)), r"bottom\[0\] \(x\) must have at least 2 axes", "reshape",
        {"a": (2,)}),
    Row("recurrent_layer.cpp:189", L("RNN", "recurrent_param { num_output: 2 }", ("a", "b")),
        ((2, 1, 3), (2, 1)), r"bottom\[1\] \(cont\) must have shape \(T, N\)", "reshape",
        {"b": (2, 1, 1)}),
    Row("recurrent_layer.cpp:191", L("RNN", "recurrent_param { num_output: 2 }", ("a", "b")),
        ((2, 1, 3), (2, 1)), r"bottom\[1\] \(cont\) must have shape \(T, N\)", "reshape",
        {"b": (3, 1)}),
    Row("recurrent_layer.cpp:192", L("RNN", "recurrent_param { num_output: 2 }", ("a", "b")),
        ((2, 1, 3), (2, 1)), r"bottom\[1\] \(cont\) must have shape \(T, N\)", "reshape",
        {"b": (2, 2)}),
    Row("recurrent_layer.cpp:216",
        L("RNN", "recurrent_param { num_output: 2 expose_hidden: true }", ("a", "b", "c"),
          ("t", "u")), ((2, 1, 3), (2, 1), (1, 1, 3)), r"bottom\[2\] \(h_0\) must have shape"),
    Row("recurrent_layer.cpp:280",
        L("RNN", "recurrent_param { num_output: 2 }", ("a", "p"),
          extra="propagate_down: false propagate_down: true loss_weight: 1"), ((2, 1, 3),),
        r"cannot backpropagate to bottom\[1\] \(cont\)", "backward",
        before=param_producer(2, 1)),
    # -- reshape_layer.cpp ---------------------------------------------------------------------
    Row("reshape_layer.cpp:10", L("Reshape", "reshape_param { shape { dim: -1 } }", tops=("a",)),
        ((2, 3),), r"Reshape does not work in place"),
    Row("reshape_layer.cpp:22", L("Reshape", "reshape_param { shape { dim: -1 dim: -1 } }"),
        ((2, 3),), r"2 values of -1"),
    Row("reshape_layer.cpp:37",
        L("Reshape", "reshape_param { shape { dim: -1 } axis: -4 }"), ((2, 3),),
        r"reshape_param.axis -4 is out of range"),
    Row("reshape_layer.cpp:38",
        L("Reshape", "reshape_param { shape { dim: -1 } axis: 3 }"), ((2, 3),),
        r"reshape_param.axis 3 is out of range"),
    Row("reshape_layer.cpp:41",
        L("Reshape", "reshape_param { shape { dim: -1 } num_axes: -2 }"), ((2, 3),),
        r"num_axes must be >= 0, or -1"),
    Row("reshape_layer.cpp:44",
        L("Reshape", "reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 }"), ((2, 3),),
        r"axis \+ num_axes = 1 \+ 2 is out of range"),
    Row("reshape_layer.cpp:64",
        L("Reshape", "reshape_param { shape { dim: 0 dim: 0 dim: 0 } }"), ((2, 3),),
        r"has a 0 at position 2"),
    Row("reshape_layer.cpp:80",
        L("Reshape", "reshape_param { shape { dim: 4 dim: -1 } }"), ((2, 3),),
        r"cannot infer the -1 dim"),
    Row("reshape_layer.cpp:87",
        L("Reshape", "reshape_param { shape { dim: 4 dim: 2 } }"), ((2, 3),),
        r"output count must match input count"),
    # -- scale_layer.cpp -----------------------------------------------------------------------
    Row("scale_layer.cpp:21", L("Scale", "scale_param { num_axes: -2 }"), ((2, 3),),
        r"num_axes must be non-negative, or -1"),
    Row("scale_layer.cpp:24", L("Scale", "scale_param { axis: 1 num_axes: 2 }"), ((2, 3),),
        r"extends past bottom\[0\]"),
    Row("scale_layer.cpp:88", L("Scale", bottoms=("a", "b")), ((2, 3), (3, 4)),
        r"extends past bottom\[0\]"),
    Row("scale_layer.cpp:92", L("Scale", bottoms=("a", "b")), ((2, 3), (4,)),
        r"the scale\) has shape \(4,\) but bottom\[0\] of shape \(2, 3\) has \(3,\)"),
    # -- sigmoid_cross_entropy_loss_layer.cpp --------------------------------------------------
    Row("sigmoid_cross_entropy_loss_layer.cpp:41",
        L("SigmoidCrossEntropyLoss", "", ("a", "b")), ((2, 3), (2, 4)),
        r"inputs must have the same count"),
    Row("sigmoid_cross_entropy_loss_layer.cpp:108",
        L("SigmoidCrossEntropyLoss", "", ("p", "b"),
          extra="propagate_down: true propagate_down: true"), ((1,), (2, 3)),
        r"cannot backpropagate to target input bottom\[1\]", "backward",
        before=param_producer(2, 3)),
    # -- slice_layer.cpp -----------------------------------------------------------------------
    Row("slice_layer.cpp:13", L("Slice", "slice_param { axis: 1 slice_dim: 1 }",
                                tops=("t", "u")), ((2, 4),), r"either slice_param.axis or slice_param.slice_dim may be set, not both"),
    Row("slice_layer.cpp:30", L("Slice", "slice_param { slice_dim: 4294967295 }",
                                tops=("t", "u")), ((2, 4),),
        r"slice_dim 4294967295 is out of range"),
    Row("slice_layer.cpp:33", L("Slice", "slice_param { slice_dim: 2 }", tops=("t", "u")),
        ((2, 4),), r"slice_dim 2 is out of range"),
    Row("slice_layer.cpp:43", L("Slice", "slice_param { slice_point: 1 slice_point: 2 }",
                                tops=("t", "u")), ((2, 4),), r"2 slice_point value\(s\)"),
    Row("slice_layer.cpp:44", L("Slice", "slice_param { slice_point: 1 slice_point: 2 }",
                                tops=("t", "u", "v")), ((2, 2),), r"3 tops cannot slice axis"),
    Row("slice_layer.cpp:50", L("Slice", "slice_param { slice_point: 2 slice_point: 1 }",
                                tops=("t", "u", "v")), ((2, 4),),
        r"slice_point values must be strictly increasing"),
    Row("slice_layer.cpp:61", L("Slice", "", tops=("t", "u", "v")), ((2, 4),),
        r"must evenly divide"),
    # -- softmax_loss_layer.cpp ----------------------------------------------------------------
    Row("softmax_loss_layer.cpp:47", L("SoftmaxWithLoss", "", ("a", "b")), ((2, 3, 2), (2, 3)),
        r"number of labels must match number of predictions"),
    Row("softmax_loss_layer.cpp:121",
        L("SoftmaxWithLoss", "", ("p", "b"), extra="propagate_down: true propagate_down: true"),
        ((1,), (2,)), r"cannot backpropagate to label input bottom\[1\]", "backward",
        {"b": [0, 1]},
        before=param_producer(2, 3)),
    # -- split_layer.cpp -----------------------------------------------------------------------
    Row("split_layer.cpp:18", L("Split", tops=("a", "u")), ((2,),),
        r"top\[0\] is the bottom: Split does not work in place"),
    # -- spp_layer.cpp -------------------------------------------------------------------------
    Row("spp_layer.cpp:74", L("SPP", "spp_param { pyramid_height: 1 }"), ((1, 1, 0, 2),),
        r"input dimensions cannot be zero"),
    Row("spp_layer.cpp:75", L("SPP", "spp_param { pyramid_height: 1 }"), ((1, 1, 2, 0),),
        r"input dimensions cannot be zero"),
    Row("spp_layer.cpp:148", L("SPP", "spp_param { pyramid_height: 1 }"), ((1, 2, 2),),
        r"input must have 4 axes"),
    # -- tile_layer.cpp ------------------------------------------------------------------------
    Row("tile_layer.cpp:13", L("Tile"), ((2, 3),), r"tiles must be specified"),
    Row("tile_layer.cpp:15", L("Tile", "tile_param { tiles: 0 }"), ((2, 3),),
        r"tiles must be positive"),
    # -- window_data_layer.cpp ----------------------------------------------------------------
    Row("window_data_layer.cpp:79", window_layer(source="/nonexistent/windows.txt"), (),
        r"cannot open window_data_param source '/nonexistent/windows.txt'"),
    Row("window_data_layer.cpp:88", window_layer(), (), r"window file .* lists no images",
        files=window_file(text="")),
    Row("window_data_layer.cpp:91", window_layer(), (), r"expected '#' starting an image entry",
        files=window_file(text="0 0\nw.png")),
    Row("window_data_layer.cpp:134", window_layer(), (),
        r"is foreground and needs a class index > 0, got 0",
        files=window_file("0 0.9 0 0 3 3", BG)),
    Row("window_data_layer.cpp:173", window_layer("crop_size: 0"), (),
        r"crop_size must be positive", files=window_file(FG, BG)),
    Row("window_data_layer.cpp:202",
        window_layer('crop_size: 4 mean_file: "{mean}" mean_value: 1'), (),
        r"both mean_file and mean_value", files=window_file(FG, BG)),
    Row("window_data_layer.cpp:207", window_layer("crop_size: 4 mean_value: 1 mean_value: 2"),
        (), r"gives 2 mean_value", files=window_file(FG, BG)),
    Row("window_data_layer.cpp:268", window_layer(), (), r"has no foreground windows",
        files=window_file(BG)),
    Row("window_data_layer.cpp:269", window_layer(), (), r"has no background windows",
        files=window_file(FG)),
    Row("window_data_layer.cpp:349", window_layer(), (), r"window \(-1, 0, 3, 3\) is not inside",
        files=window_file("1 0.9 -1 0 3 3", BG)),
    Row("window_data_layer.cpp:350", window_layer(), (), r"window \(0, -1, 3, 3\) is not inside",
        files=window_file("1 0.9 0 -1 3 3", BG)),
    Row("window_data_layer.cpp:351", window_layer(), (), r"window \(0, 0, 8, 3\) is not inside",
        files=window_file("1 0.9 0 0 8 3", BG)),
    Row("window_data_layer.cpp:352", window_layer(), (), r"window \(0, 0, 3, 6\) is not inside",
        files=window_file("1 0.9 0 0 3 6", BG)),
    # -- data_transformer.cpp (through the Data layer) -----------------------------------------
    Row("data_transformer.cpp:21",
        L("Data", 'data_param { source: "{db}" batch_size: 1 backend: LMDB } '
                  'transform_param { mean_file: "{mean}" mean_value: 1 }', (), ("data",)), (),
        r"both mean_file and mean_value", files=lmdb_of()),
    Row("data_transformer.cpp:56",
        L("Data", 'data_param { source: "{db}" batch_size: 1 backend: LMDB }', (), ("data",)),
        (), r"has shape \(0, 4, 5\); channels, height and width must be positive",
        files=lmdb_of(c=0)),
    Row("data_transformer.cpp:57",
        L("Data", 'data_param { source: "{db}" batch_size: 1 backend: LMDB } '
                  'transform_param { crop_size: 5 }', (), ("data",)), (),
        r"crop_size 5 is larger than the datum \(4x5\)", files=lmdb_of()),
    Row("data_transformer.cpp:58",
        L("Data", 'data_param { source: "{db}" batch_size: 1 backend: LMDB } '
                  'transform_param { crop_size: 5 }', (), ("data",)), (),
        r"crop_size 5 is larger than the datum \(5x4\)", files=lmdb_of(h=5, w=4)),
    Row("data_transformer.cpp:62",
        L("Data", 'data_param { source: "{db}" batch_size: 1 backend: LMDB } '
                  'transform_param { mean_file: "{mean}" }', (), ("data",)), (),
        r"mean_file .* has shape .* but the", files=lmdb_of()),
    Row("data_transformer.cpp:68",
        L("Data", 'data_param { source: "{db}" batch_size: 1 backend: LMDB } '
                  'transform_param { mean_value: 1 mean_value: 2 }', (), ("data",)), (),
        r"2 mean_value values", files=lmdb_of(c=3)),
    Row("data_transformer.cpp:445",
        L("Data", 'data_param { source: "{db}" batch_size: 1 backend: LMDB } '
                  'transform_param { force_color: true force_gray: true }', (), ("data",)), (),
        r"both force_color and force_gray", files=lmdb_of()),
    Row("data_transformer.cpp:252",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}" batch_size: 1 } '
                       'transform_param { crop_size: 5 }', (), ("data", "label")), (),
        r"crop_size 5 is larger than the first image .*ok.png' \(4x5\)", files=image_list),
    Row("data_transformer.cpp:253",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}" batch_size: 1 } '
                       'transform_param { crop_size: 5 }', (), ("data", "label")), (),
        r"crop_size 5 is larger than the first image .*ok.png' \(5x4\)",
        files=lambda p: image_list(p, height=5, width=4)),
    Row("data_transformer.cpp:257",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}" batch_size: 1 } '
                       'transform_param { mean_file: "{mean}" }', (), ("data", "label")), (),
        r"mean_file .* has shape \(1, 5, 5\) but the first image .* is \(3, 4, 5\)",
        files=lambda p: {**image_list(p), **lmdb_of()(p)}),
    Row("data_transformer.cpp:263",
        L("ImageData", 'image_data_param { source: "{list}" root_folder: "{dir}" batch_size: 1 } '
                       'transform_param { mean_value: 1 mean_value: 2 }', (), ("data", "label")),
        (), r"2 mean_value values", files=image_list),
]

# Caffe sites with no row of their own: the same condition, checked again on another code path
# (Caffe's DataTransformer tests each input kind at setup and again per batch) or on a sibling
# axis, which the crema check exercised by the named row covers.
SAME_AS = {
    "data_transformer.cpp:33": "data_transformer.cpp:21",   # mean_file and mean_value, again
    "data_transformer.cpp:63": "data_transformer.cpp:62",   # mean height, width: one shape test
    "data_transformer.cpp:64": "data_transformer.cpp:62",
    "data_transformer.cpp:136": "data_transformer.cpp:445",  # force_color and force_gray, again
    "data_transformer.cpp:258": "data_transformer.cpp:257",
    "data_transformer.cpp:259": "data_transformer.cpp:257",
    "data_transformer.cpp:465": "data_transformer.cpp:56",  # InferBlobShape(Datum) at setup
    "data_transformer.cpp:466": "data_transformer.cpp:57",
    "data_transformer.cpp:467": "data_transformer.cpp:58",
    "data_transformer.cpp:498": "data_transformer.cpp:252",  # InferBlobShape(Mat) at setup
    "data_transformer.cpp:499": "data_transformer.cpp:253",
    "image_data_layer.cpp:148": "image_data_layer.cpp:129",  # the same image read, later batch
    "memory_data_layer.cpp:85": "memory_data_layer.cpp:84",  # labels missing, as data missing
}


def write_net(tmp_path, row):
    subs = {k: str(v) for k, v in (row.files(tmp_path) if row.files else {}).items()}
    body = row.layer
    for key, value in subs.items():
        body = body.replace("{" + key + "}", value)
    lines = ['name: "checks"']
    tops = "abcd"[:len(row.shapes)]
    if row.shapes:
        shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }"
                          for s in row.shapes)
        lines.append('layer { name: "in" type: "Input" '
                     + " ".join(f'top: "{t}"' for t in tops) + f" input_param {{ {shapes} }} }}")
    if row.before:
        lines.append(row.before)
    lines.append("layer {")
    lines.append('  name: "t"')
    lines.append(f"  {body}")
    lines.append("}")
    path = tmp_path / "net.prototxt"
    path.write_text("\n".join(lines) + "\n")
    return path, len(lines) - 2  # the line of name: "t"


def trip(net, row):
    if row.action == "reshape":
        for name, shape in row.feed.items():
            net.blobs[name].reshape(*shape)
        net.reshape()
    elif row.action == "set_input_arrays":
        net.set_input_arrays(row.feed["data"], row.feed["labels"])
    else:
        for name, value in row.feed.items():
            net.blobs[name].data[...] = value
        net.forward()
        if row.action == "backward":
            net.backward()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_caffe_check_is_a_crema_error_naming_file_line_and_layer(row, tmp_path):
    path, line = write_net(tmp_path, row)
    with pytest.raises(CremaError) as err:
        net = engine.Net(str(path), engine.TRAIN)
        trip(net, row)
    message = str(err.value)
    assert f"{path}:{line}: " in message
    assert "layer 't'" in message
    assert re.search(row.fragment, message, re.IGNORECASE), message


def test_rows_name_distinct_caffe_sites():
    sites = [r.site for r in ROWS]
    assert len(sites) == len(set(sites))
    assert not set(SAME_AS) & set(sites)
    assert set(SAME_AS.values()) <= set(sites)


def test_audit_doc_lists_exactly_these_rows():
    """docs/caffe_layer_checks.md classifies every Caffe site; the ones it marks as covered by a
    row of their own must be exactly the rows above (and the mapped ones exactly SAME_AS)."""
    from pathlib import Path
    doc = (Path(__file__).parents[2] / "docs" / "caffe_layer_checks.md").read_text()
    covered = re.findall(r"^\| (\S+:\d+) \| [^|]+ \| (?:before|added) \| (.*) \|$", doc, re.M)
    assert {site for site, note in covered if note == "row"} == {r.site for r in ROWS}
    assert {site for site, note in covered if note != "row"} == set(SAME_AS)
