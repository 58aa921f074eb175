"""crema: a Caffe-compatible deep-learning layer engine (pycaffe-compatible Python API).

    import engine
    net = engine.Net("deploy.prototxt", engine.TEST, weights="model.caffemodel")
    from engine import layers as L, params as P      # NetSpec, as pycaffe
"""
from . import crema_pb2, proto
from .blob import Blob
from .errors import (CremaError, LayerError, NetError, PrototxtError, ShapeError,
                     UnknownLayerError, WeightsError, SolverError)
from .layer import Layer, TRAIN, TEST
from .registry import layer_type_list
from .rng import set_random_seed
from . import layers  # registers the built-in layer types; also NetSpec's layer generator
from . import kernels, io
from .kernels import set_num_threads, get_num_threads
from .net import Net
from .classifier import Classifier
from .detector import Detector
from . import coord_map, draw  # pycaffe's caffe.coord_map and caffe.draw
from .netspec import NetSpec, params, to_proto
from . import netspec as net_spec  # pycaffe's module name: `from caffe import net_spec`
import sys as _sys
_sys.modules[__name__ + ".net_spec"] = net_spec  # and `import caffe.net_spec`
from .pycaffe import (Timer, has_nccl, init_log, log, set_multiprocess, set_solver_count,
                      set_solver_rank, solver_count, solver_rank)
from .solvers import (get_solver, Solver, SGDSolver, NesterovSolver, AdaGradSolver,
                      RMSPropSolver, AdaDeltaSolver, AdamSolver)

__version__ = "0.1.0"


def set_mode_cpu():
    """crema runs on CPUs; kept for pycaffe compatibility."""


def set_mode_gpu():
    raise CremaError("crema has no GPU backend: it runs on CPUs (use engine.set_mode_cpu())")


def set_device(device_id):
    raise CremaError("crema has no GPU backend: set_device is not available")
