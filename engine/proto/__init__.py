"""pycaffe's `caffe.proto` package: `from engine.proto import caffe_pb2` gives crema's schema
(proto/crema.proto: Caffe's messages, names and field numbers, plus crema's extensions)."""
from . import caffe_pb2

__all__ = ["caffe_pb2"]
