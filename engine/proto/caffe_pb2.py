"""pycaffe's `caffe.proto.caffe_pb2`: the same message classes as engine.crema_pb2 (one schema;
this name exists so that pycaffe scripts import it unchanged)."""
from ..crema_pb2 import *  # noqa: F401,F403 (the generated module's messages and enums)
from ..crema_pb2 import DESCRIPTOR  # noqa: F401
