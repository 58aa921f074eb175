"""Net: a NetParameter compiled into an ordered list of layers over named blobs (pycaffe's Net).

Build steps, as Caffe's Net::Init: upgrade legacy formats -> filter layers by NetState (phase, level,
stages) -> insert Split layers where a blob fans out -> create layers through the registry, wire
bottoms/tops (a top named like the bottom at the same index is in place) -> setup + reshape ->
loss weights, parameter sharing, need-backward analysis.
"""
import os
import time
from collections import OrderedDict

import numpy as np

from . import crema_pb2
from .arena import ParamArena
from .blob import Blob
from .errors import CremaError, LayerError, NetError, ShapeError
from .layer import TRAIN, TEST
from .registry import layer_class
from .schema import read_net_param


PYTHON_LAYER_NOTE = "in crema: "  # prefix of the note added to a Python layer's exception


# --- NetState filtering ---------------------------------------------------------------------

def state_meets_rule(state, rule):
    """Caffe's StateMeetsRule: every condition the rule sets must hold."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param, source=None):
    """The layers of `param` that `param.state` selects (Caffe's FilterNet)."""
    out = crema_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if lp.include and lp.exclude:
            where = source.where(lp.name) if source else ""
            raise NetError(f"{where}layer '{lp.name}' (type {lp.type}) has both include and "
                           "exclude rules; use one of them")
        if lp.include:
            keep = any(state_meets_rule(param.state, r) for r in lp.include)
        else:
            keep = not any(state_meets_rule(param.state, r) for r in lp.exclude)
        if keep:
            out.layer.add().CopyFrom(lp)
    return out


# --- Split insertion ------------------------------------------------------------------------

def split_layer_name(blob, layer, top_idx):
    return f"{blob}_{layer}_{top_idx}_split"


def split_blob_name(blob, layer, top_idx, k):
    return f"{blob}_{layer}_{top_idx}_split_{k}"


def insert_splits(param):
    """Give every blob that feeds several bottoms (or a bottom and a loss) its own Split layer, so
    each consumer gets its own diff and the Split sums them (Caffe's InsertSplits, same names)."""
    last_producer = {}  # blob name -> (layer idx, top idx) of its latest producer
    uses = {}           # (layer idx, top idx) -> number of uses (bottoms + loss)
    bottom_source = {}  # (layer idx, bottom idx) -> producer key
    for i, lp in enumerate(param.layer):
        for j, name in enumerate(lp.bottom):
            if name not in last_producer:
                continue  # unknown bottoms are reported when the layers are wired
            key = last_producer[name]
            bottom_source[(i, j)] = key
            uses[key] = uses.get(key, 0) + 1
        for j, name in enumerate(lp.top):
            last_producer[name] = (i, j)
            uses.setdefault((i, j), 0)
        for j, w in enumerate(lp.loss_weight):
            if w != 0 and j < len(lp.top):
                uses[(i, j)] = uses.get((i, j), 0) + 1
    if all(n <= 1 for n in uses.values()):
        return param
    out = crema_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split = {key: 0 for key in uses}
    for i, lp in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(lp)
        for j, name in enumerate(lp.bottom):
            key = bottom_source.get((i, j))
            if key is not None and uses[key] > 1:
                producer = param.layer[key[0]].name
                new.bottom[j] = split_blob_name(name, producer, key[1], next_split[key])
                next_split[key] += 1
        for j, name in enumerate(lp.top):
            if uses[(i, j)] <= 1:
                continue
            split = out.layer.add()
            split.name = split_layer_name(name, lp.name, j)
            split.type = "Split"
            split.bottom.append(name)
            for k in range(uses[(i, j)]):
                split.top.append(split_blob_name(name, lp.name, j, k))
            if j < len(lp.loss_weight) and lp.loss_weight[j] != 0:
                # The loss travels on the split's first top; the consumers take the next ones.
                split.loss_weight.append(lp.loss_weight[j])
                new.loss_weight[j] = 0
                next_split[(i, j)] = 1
    return out


def _in_context(exc, prefix):
    """`exc` with `prefix` (file:line: layer 'name' (type T): ) in front of its message, unless
    it already names the layer: errors raised below the layer (a filler's type, Blob's INT_MAX
    check) know neither the file nor the layer."""
    if "layer '" not in str(exc):
        exc.args = (prefix + str(exc),) + exc.args[1:]
    return exc


# --- The net --------------------------------------------------------------------------------

def _parse_args(args, kwargs):
    """Accept pycaffe's forms: Net(model, phase, level=0, stages=(), weights=None) and the legacy
    Net(model, weights_file, phase)."""
    phase, weights = kwargs.pop("phase", None), kwargs.pop("weights", None)
    level, stages = kwargs.pop("level", 0), tuple(kwargs.pop("stages", ()))
    if kwargs:
        raise TypeError(f"Net() got unexpected arguments: {', '.join(kwargs)}")
    args = list(args)
    if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], (int, np.integer)):
        weights, phase = args
    elif len(args) == 1:
        phase = args[0]
    elif len(args) > 2:
        raise TypeError("Net(model, phase) or Net(model, weights_file, phase)")
    if phase is None:
        phase = TEST
    if phase not in (TRAIN, TEST):
        raise CremaError(f"phase must be engine.TRAIN (0) or engine.TEST (1), got {phase!r}")
    return int(phase), level, stages, weights


class Net:
    """A network built from a prototxt path, prototxt text or a NetParameter."""

    def __init__(self, model, *args, **kwargs):
        phase, level, stages, weights = _parse_args(args, kwargs)
        param, self.source = read_net_param(model)
        from .upgrade import needs_upgrade, upgrade_net_param
        try:
            if needs_upgrade(param):
                param = upgrade_net_param(param, self.source.label)
        except UnicodeDecodeError as exc:
            raise NetError(f"{self.source.label}: a name in the net is not valid UTF-8 ({exc}); "
                           "the file is corrupt") from None
        param.state.phase = phase
        param.state.level = level
        del param.state.stage[:]
        param.state.stage.extend(stages)
        self.phase = phase
        self.name = param.name
        self.force_backward = param.force_backward
        self._init(insert_splits(filter_net(param, self.source)))
        if weights:
            self.copy_from(weights)

    # -- construction ---------------------------------------------------------------------
    def _where(self, lp):
        return self.source.where(lp.name)

    def _init(self, param):
        self.layers, self.layer_params = [], []
        # pycaffe's callbacks: fn(i) around layer i's forward / backward step (Net::before_forward ...)
        self._before_forward, self._after_forward = [], []
        self._before_backward, self._after_backward = [], []
        self._reshaped_for = []  # per layer: the bottom shapes of its last reshape
        self.blobs = OrderedDict()
        self.top_names, self.bottom_names = OrderedDict(), OrderedDict()
        self.blob_loss_weights = OrderedDict()
        self.inputs, self._bottom_blobs, self._top_blobs = [], [], []
        self._bottom_need_backward, self._layer_need_backward = [], []
        self._loss_tops = []  # (blob, weight)
        blob_need_backward = {}
        available = OrderedDict()

        for lp in param.layer:
            if not lp.HasField("phase"):
                lp.phase = self.phase
            where = self._where(lp)
            if not lp.type:
                raise NetError(f"{where}layer '{lp.name}' has no type")
            # Caffe allows two layers with one name (mnist_autoencoder has two 'loss' layers);
            # lookups by name (layer_dict, weights) then find the last, as in Caffe.
            cls = layer_class(lp.type, where=f"{where}layer '{lp.name}': ")
            try:
                layer = cls(lp, self.phase)
            except CremaError as exc:
                raise _in_context(exc, f"{where}layer '{lp.name}' (type {lp.type}): ")
            except Exception as exc:
                raise LayerError(f"{where}layer '{lp.name}' (type {lp.type}): {exc}") from exc
            layer.source = where
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetError(f"{where}layer '{lp.name}' (type {lp.type}): propagate_down has "
                               f"{len(lp.propagate_down)} values for {len(lp.bottom)} bottoms")
            self._check_counts(layer, lp, where)

            bottoms, need = [], []
            for j, name in enumerate(lp.bottom):
                if name not in self.blobs:
                    raise NetError(f"{where}layer '{lp.name}' (type {lp.type}): unknown bottom "
                                   f"blob '{name}' (no earlier layer produces it)")
                bottoms.append(self.blobs[name])
                available.pop(name, None)
                nb = blob_need_backward[name]
                need.append(bool(lp.propagate_down[j]) if lp.propagate_down else nb)
            tops = []
            for j, name in enumerate(lp.top):
                if j < len(lp.bottom) and lp.bottom[j] == name:
                    tops.append(self.blobs[name])  # in place
                elif name in self.blobs:
                    raise NetError(f"{where}layer '{lp.name}' (type {lp.type}): top blob '{name}' "
                                   "is produced by more than one layer")
                else:
                    blob = Blob(())
                    self.blobs[name] = blob
                    tops.append(blob)
                    blob_need_backward[name] = False
                available[name] = True
            if lp.type == "Input":
                self.inputs.extend(lp.top)

            self._call(layer, "setup", bottoms, tops)
            self._call(layer, "reshape", bottoms, tops)
            self._reshaped_for.append(tuple(b.shape for b in bottoms))
            self.layers.append(layer)
            self.layer_params.append(lp)
            self.top_names[lp.name] = list(lp.top)
            self.bottom_names[lp.name] = list(lp.bottom)
            self._bottom_blobs.append(bottoms)
            self._top_blobs.append(tops)
            self._bottom_need_backward.append(need)

            # Loss weights (Caffe's SetLossWeights): explicit per top, or 1 on a loss layer's top 0.
            if lp.loss_weight and len(lp.loss_weight) != len(lp.top):
                raise NetError(f"{where}layer '{lp.name}' (type {lp.type}): {len(lp.loss_weight)} "
                               f"loss_weight values for {len(lp.top)} tops")
            for j, name in enumerate(lp.top):
                w = lp.loss_weight[j] if lp.loss_weight else (1.0 if (layer.is_loss and j == 0) else 0.0)
                self.blob_loss_weights[name] = float(w)
                if w != 0:
                    self._loss_tops.append((tops[j], float(w)))

            layer_need = any(blob_need_backward[n] for n in lp.bottom)
            layer_need |= self._setup_params(layer, lp, where)
            self._layer_need_backward.append(layer_need)
            if layer_need:
                for name in lp.top:
                    blob_need_backward[name] = True

        self.outputs = list(available)
        self._prune_backward(blob_need_backward)
        self.layer_dict = OrderedDict((lp.name, l) for lp, l in zip(self.layer_params, self.layers))
        self._layer_names = [lp.name for lp in self.layer_params]
        self.params = OrderedDict((lp.name, l.blobs) for lp, l in
                                  zip(self.layer_params, self.layers) if l.blobs)
        for name, w in self.blob_loss_weights.items():
            if w and name in self.blobs:
                self.blobs[name].diff[...] = w
        self._build_arena()
        self._mark_fusions()

    def _build_arena(self):
        """Move every learnable parameter into one ParamArena (see engine/arena.py); PERMISSIVE
        shares follow their owner's new storage."""
        if not hasattr(self, "_param_owners"):
            self.learnable_params, self.params_lr, self.params_weight_decay = [], [], []
            self._param_views, self.param_layers = [], []
        self.arena = ParamArena(self.learnable_params, self.params_lr, self.params_weight_decay)
        for view, owner in self._param_views:
            view.bind(owner.data.reshape(view.shape), owner.diff.reshape(view.shape))

    def _mark_fusions(self):
        """Convolution + in-place ReLU: a Convolution (one bottom, one top) directly followed by a
        ReLU whose bottom and top are that top (in place, so nothing else can read the pre-ReLU
        value) runs the ReLU in its kernel's epilogue; the ReLU's forward is then skipped (its
        backward stays: it reads the top's sign, which the fused output has too). Marked layers:
        conv.fused_relu = True, conv.fused_relu_layer = the ReLU's name, relu.fused_into = the
        convolution's name. The backward pass has its own fusion, in-place ReLU + MAX pooling
        (_mark_pool_relu_fusions). CREMA_FUSE=0 turns both off (read when the net is built)."""
        self._fused_relu = {}  # conv index -> negative_slope of the ReLU at index + 1
        self._pool_relu = {}  # MAX pooling index -> negative_slope of the ReLU at index - 1
        if os.environ.get("CREMA_FUSE", "1") == "0":
            return
        self._mark_pool_relu_fusions()
        for i in range(len(self.layers) - 1):
            conv, relu = self.layers[i], self.layers[i + 1]
            lc, lr = self.layer_params[i], self.layer_params[i + 1]
            if (lc.type == "Convolution" and lr.type == "ReLU" and len(lc.bottom) == 1
                    and len(lc.top) == 1 and list(lr.bottom) == [lc.top[0]]
                    and list(lr.top) == [lc.top[0]] and hasattr(conv, "relu_epilogue")):
                self._fused_relu[i] = float(relu.slope)
                conv.fused_relu = True
                conv.fused_relu_layer = lr.name
                relu.fused_into = lc.name

    def _mark_pool_relu_fusions(self):
        """In-place ReLU + MAX pooling: a ReLU whose bottom and top are one blob, read next by a
        MAX Pooling layer and by nothing else, has its backward applied inside the pooling's
        backward (kernels/include/crema/pool.h: the ReLU's rule at each argmax, whose ReLU output
        is the pooled value), which saves the ReLU's pass over the whole blob. Exact for slope 0
        or windows that do not overlap (one gradient per element), so only those fuse. Marked:
        pool.fused_relu_backward = the ReLU's name, relu.backward_fused_into = the pooling's."""
        readers = {}
        for i, lp in enumerate(self.layer_params):
            for name in lp.bottom:
                readers.setdefault(name, []).append(i)
        for i in range(len(self.layers) - 1):
            relu, pool = self.layers[i], self.layers[i + 1]
            lr, lpool = self.layer_params[i], self.layer_params[i + 1]
            if not (lr.type == "ReLU" and lpool.type == "Pooling" and len(lr.bottom) == 1
                    and list(lr.top) == list(lr.bottom) and list(lpool.bottom) == list(lr.top)
                    and readers.get(lr.top[0]) == [i, i + 1]
                    and getattr(pool, "method", None) == crema_pb2.PoolingParameter.MAX
                    and hasattr(pool, "relu_backward")):
                continue
            disjoint = all(k <= st for k, st in zip(pool.kernel_hw, pool.stride_hw))
            if float(relu.slope) == 0.0 or disjoint:
                self._pool_relu[i + 1] = float(relu.slope)
                pool.fused_relu_backward = lr.name
                relu.backward_fused_into = lpool.name

    def fused_layers(self):
        """[(convolution name, ReLU name, the convolution's forward kernel)] fused in this net:
        the pairs planned at setup whose convolution runs the native kernels (the numpy path,
        float64 or CREMA_KERNELS=reference, never applies the ReLU itself)."""
        return [(self.layer_params[i].name, self.layer_params[i + 1].name,
                 getattr(self.layers[i], "kernel", "")) for i in sorted(self._fused_relu)
                if getattr(self.layers[i], "kernels", None) is not None]

    def _check_counts(self, layer, lp, where):
        nb, nt = len(lp.bottom), len(lp.top)
        def bad(what):
            return NetError(f"{where}layer '{lp.name}' (type {lp.type}) takes {what}")
        if layer.exact_num_bottom is not None and nb != layer.exact_num_bottom:
            raise bad(f"exactly {layer.exact_num_bottom} bottom blob(s), got {nb}")
        if layer.min_bottom is not None and nb < layer.min_bottom:
            raise bad(f"at least {layer.min_bottom} bottom blob(s), got {nb}")
        if layer.max_bottom is not None and nb > layer.max_bottom:
            raise bad(f"at most {layer.max_bottom} bottom blob(s), got {nb}")
        if layer.exact_num_top is not None and nt != layer.exact_num_top:
            raise bad(f"exactly {layer.exact_num_top} top blob(s), got {nt}")
        if layer.min_top is not None and nt < layer.min_top:
            raise bad(f"at least {layer.min_top} top blob(s), got {nt}")
        if layer.max_top is not None and nt > layer.max_top:
            raise bad(f"at most {layer.max_top} top blob(s), got {nt}")
        if layer.equal_num_bottom_top and nb != nt:
            raise bad(f"as many tops as bottoms, got {nb} bottoms and {nt} tops")

    def _call(self, layer, method, bottoms, tops, *extra):
        """Run a layer method; anything that is not already a crema error becomes a LayerError
        naming the layer and its bottom shapes, so users never see a bare numpy traceback."""
        try:
            if extra:
                return getattr(layer, method)(tops, extra[0], bottoms)
            return getattr(layer, method)(bottoms, tops)
        except CremaError as exc:
            raise _in_context(exc, f"{layer.source}layer '{layer.name}' (type {layer.type}): ")
        except Exception as exc:
            shapes = ", ".join(f"{n}{b.shape}" for n, b in
                               zip(layer.param.bottom, bottoms)) or "none"
            where = (f"{layer.source}layer '{layer.name}' (type {layer.type}) failed in "
                     f"{method}; bottoms: {shapes}")
            if layer.type == "Python":
                # the user's own exception keeps its type (pycaffe re-raises it), so that
                # `except ValueError` around net.forward() works; crema's context rides along
                exc.add_note(f"{PYTHON_LAYER_NOTE}{where}")
                raise
            raise LayerError(f"{layer.source}layer '{layer.name}' (type {layer.type}) failed in "
                             f"{method} ({type(exc).__name__}: {exc}); bottoms: {shapes}") from exc

    # -- parameters -----------------------------------------------------------------------
    def _setup_params(self, layer, lp, where):
        """Sharing by ParamSpec name, lr/decay multipliers. Returns whether any parameter learns."""
        if not hasattr(self, "_param_owners"):
            self._param_owners = {}   # ParamSpec name -> (layer name, index, Blob)
            self._param_views = []    # (PERMISSIVE view, owner): rebound onto the arena
            self.param_layers = []    # per learnable param: indices of the layers that use it
            self.learnable_params, self.params_lr, self.params_weight_decay = [], [], []
            self._param_display = []
        if len(lp.param) > len(layer.blobs):
            raise NetError(f"{where}layer '{lp.name}' (type {lp.type}) has {len(lp.param)} param "
                           f"specs but only {len(layer.blobs)} parameter blobs")
        forced_zero = getattr(layer, "param_lr_mults_forced_zero", False)
        learns = False
        layer.param_propagate_down = []
        for i, blob in enumerate(layer.blobs):
            spec = lp.param[i] if i < len(lp.param) else crema_pb2.ParamSpec()
            lr = 0.0 if forced_zero else spec.lr_mult
            decay = spec.decay_mult
            name = spec.name
            if name and name in self._param_owners:
                owner_layer, owner_idx, owner = self._param_owners[name]
                strict = spec.share_mode != crema_pb2.ParamSpec.PERMISSIVE
                if (strict and owner.shape != blob.shape) or owner.count != blob.count:
                    raise ShapeError(
                        f"{where}layer '{lp.name}' (type {lp.type}): cannot share param "
                        f"'{name}' (blob {i}) with layer '{owner_layer}' blob {owner_idx}: shapes "
                        f"{blob.shape} and {owner.shape} differ")
                if owner.shape == blob.shape:
                    layer.blobs[i] = owner
                else:  # PERMISSIVE: same count, different shape: a reshaped view of the owner
                    view = Blob(blob.shape, dtype=owner.dtype)
                    view._data = owner.data.reshape(blob.shape)
                    view._diff = owner.diff.reshape(blob.shape)
                    layer.blobs[i] = view
                    self._param_views.append((view, owner))
                idx = next(k for k, b in enumerate(self.learnable_params) if b is owner)
                self.param_layers[idx].append(len(self.layers) - 1)
                # Caffe: a sharer may set lr_mult only if it equals the owner's.
                if spec.HasField("lr_mult") and self.params_lr[idx] != lr:
                    raise NetError(f"{where}layer '{lp.name}': shared param '{name}' has lr_mult "
                                   f"{lr} but its owner '{owner_layer}' has {self.params_lr[idx]}")
            else:
                if name:
                    self._param_owners[name] = (lp.name, i, blob)
                self.learnable_params.append(blob)
                self.param_layers.append([len(self.layers) - 1])
                self.params_lr.append(lr)
                self.params_weight_decay.append(decay)
            layer.param_propagate_down.append(lr != 0)
            learns |= lr != 0
        return learns

    def _prune_backward(self, blob_need_backward):
        """Caffe's second pass: layers that do not reach a loss, or whose tops nobody needs the
        gradient of, skip backward; force_backward turns everything back on."""
        under_loss, skip = set(), set()
        for i in range(len(self.layers) - 1, -1, -1):
            lp = self.layer_params[i]
            contributes = False
            skip_down = True
            for name in lp.top:
                if self.blob_loss_weights.get(name, 0) != 0 or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self._layer_need_backward[i] and skip_down:
                self._layer_need_backward[i] = False
                self._bottom_need_backward[i] = [False] * len(lp.bottom)
            if not contributes:
                self._layer_need_backward[i] = False
            for j, name in enumerate(lp.bottom):
                if contributes:
                    under_loss.add(name)
                else:
                    self._bottom_need_backward[i][j] = False
                if not self._bottom_need_backward[i][j]:
                    skip.add(name)
        if self.force_backward:
            for i, layer in enumerate(self.layers):
                self._layer_need_backward[i] = True
                self._bottom_need_backward[i] = [
                    need or layer.allow_force_backward(j)
                    for j, need in enumerate(self._bottom_need_backward[i])]
                layer.param_propagate_down = [True] * len(layer.blobs)
        self.blob_need_backward = blob_need_backward

    @property
    def layer_need_backward(self):
        return list(self._layer_need_backward)

    @property
    def bottom_need_backward(self):
        return [list(v) for v in self._bottom_need_backward]

    def clear_param_diffs(self):
        self.arena.diff[...] = 0

    precision = "fp32"

    def set_precision(self, precision):
        """Run the Convolution, Deconvolution and InnerProduct layers in `precision`: "fp32", or
        "bf16" (bf16 operands, float32 accumulation; weights, their gradients and every other
        layer stay float32; see engine/bf16.py). CremaError for any other value."""
        from .bf16 import check_precision
        check_precision(precision, f"Net '{self.name}'")
        for layer in self.layers:
            if hasattr(layer, "precision"):
                layer.precision = precision
        self.precision = precision

    # -- running --------------------------------------------------------------------------
    def _index(self, layer_name, default):
        if layer_name is None:
            return default
        try:
            return self._layer_names.index(layer_name)
        except ValueError:
            raise NetError(f"{self.source.label}: no layer named '{layer_name}'") from None

    def _set_inputs(self, arrays, attr):
        for name, value in arrays.items():
            if name not in self.blobs:
                raise NetError(f"{self.source.label}: no blob named '{name}'")
            target = getattr(self.blobs[name], attr)
            value = np.asarray(value)
            if value.shape != target.shape:
                raise ShapeError(f"{self.source.label}: blob '{name}' has shape {target.shape}, "
                                 f"the array given has shape {value.shape} (call "
                                 f"net.blobs['{name}'].reshape(...) and net.reshape() first)")
            target[...] = value

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Set input blobs from kwargs, run layers start..end, return {output name: data}."""
        self._set_inputs(kwargs, "data")
        lo, hi = self._index(start, 0), self._index(end, len(self.layers) - 1)
        self.loss = self._forward_range(lo, hi)
        names = self.outputs if end is None else self.top_names[end]
        names = list(names) + [b for b in (blobs or []) if b not in names]
        return {name: self.blobs[name].data for name in names}

    def _forward_range(self, lo, hi, seconds=None):
        """Run layers lo..hi; with `seconds` (a list per layer), add each layer's wall time."""
        loss = 0.0
        skip = -1  # a ReLU whose convolution applied it (fused) in this range
        before, after = self._before_forward, self._after_forward
        for i in range(lo, hi + 1):
            if i == skip:
                continue
            for hook in before:
                hook(i)
            start = time.perf_counter() if seconds is not None else 0.0
            layer = self.layers[i]
            bottoms = self._bottom_blobs[i]
            if bottoms and tuple(b.shape for b in bottoms) != self._reshaped_for[i]:
                # Caffe's Layer::Forward reshapes first: an input reshaped by the user (or a top
                # reshaped by a Python layer's forward) flows on without a net.reshape()
                self._call(layer, "reshape", bottoms, self._top_blobs[i])
                self._reshaped_for[i] = tuple(b.shape for b in bottoms)
            # fuse only when the ReLU runs in this range too, and not while forward callbacks
            # watch the layers one by one (they must see the convolution's own output)
            slope = None if before or after else self._fused_relu.get(i)
            if slope is not None:
                layer.relu_epilogue = slope if i + 1 <= hi else None
            try:
                self._call(layer, "forward", self._bottom_blobs[i], self._top_blobs[i])
            finally:
                if slope is not None:
                    layer.relu_epilogue = None  # a direct layer.forward() never fuses
            if slope is not None and layer.relu_applied:
                skip = i + 1
            if seconds is not None:
                seconds[i] += time.perf_counter() - start
            for hook in after:
                hook(i)
        for blob, w in self._loss_tops:
            loss += w * float(np.sum(blob.data, dtype=np.float64))
        return loss

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Set top diffs from kwargs, run backward from `start` (default: last layer) down to `end`
        (default: first); return {input name: diff}. Parameter diffs accumulate."""
        for blob, w in self._loss_tops:
            blob.diff[...] = w
        self._set_inputs(kwargs, "diff")
        hi, lo = self._index(start, len(self.layers) - 1), self._index(end, 0)
        self._backward_range(hi, lo)
        names = self.inputs if end is None else self.bottom_names[end]
        names = list(names) + [b for b in (diffs or []) if b not in names]
        return {name: self.blobs[name].diff for name in names}

    def _backward_range(self, hi, lo, seconds=None):
        before, after = self._before_backward, self._after_backward
        skip = None  # a ReLU whose backward a MAX pooling applied (_mark_pool_relu_fusions)
        for i in range(hi, lo - 1, -1):
            for hook in before:
                hook(i)
            if self._layer_need_backward[i] and i != skip:
                start = time.perf_counter() if seconds is not None else 0.0
                layer = self.layers[i]
                # only when the ReLU runs backward in this range too
                slope = self._pool_relu.get(i) if i - 1 >= lo else None
                if slope is not None:
                    layer.relu_backward = slope
                try:
                    self._call(layer, "backward", self._bottom_blobs[i], self._top_blobs[i],
                               self._bottom_need_backward[i])
                finally:
                    if slope is not None:
                        layer.relu_backward = None  # a direct layer.backward() never fuses
                if slope is not None and layer.relu_backward_applied:
                    skip = i - 1
                if seconds is not None:
                    seconds[i] += time.perf_counter() - start
            for hook in after:
                hook(i)

    def before_forward(self, fn):
        """Call fn(i) before layer i's forward step (pycaffe's Net.before_forward). While any
        forward callback is registered, convolutions do not fuse their ReLU."""
        self._before_forward.append(fn)

    def after_forward(self, fn):
        """Call fn(i) after layer i's forward step (pycaffe's Net.after_forward)."""
        self._after_forward.append(fn)

    def before_backward(self, fn):
        """Call fn(i) before layer i's backward step, also for layers that skip backward
        (pycaffe's Net.before_backward)."""
        self._before_backward.append(fn)

    def after_backward(self, fn):
        """Call fn(i) after layer i's backward step, also for layers that skip backward, in
        backward order (pycaffe's Net.after_backward): a gradient reducer starts sending a
        parameter's diff once every layer using it (net.param_layers) has run."""
        self._after_backward.append(fn)

    def forward_backward(self, forward_seconds=None, backward_seconds=None):
        """One forward and backward over the whole net (what a solver iteration runs); returns
        the loss. Given lists of one float per layer, each layer's forward and backward wall
        time is added to them (what `crema time` and the benchmarks report): the same passes,
        fusion included, so a ReLU run in its convolution's epilogue adds nothing of its own and
        a layer that needs no backward is not run."""
        loss = self._forward_range(0, len(self.layers) - 1, forward_seconds)
        for blob, w in self._loss_tops:
            blob.diff[...] = w
        self._backward_range(len(self.layers) - 1, 0, backward_seconds)
        self.loss = loss
        return loss

    def reshape(self):
        for i, layer in enumerate(self.layers):
            self._call(layer, "reshape", self._bottom_blobs[i], self._top_blobs[i])
            self._reshaped_for[i] = tuple(b.shape for b in self._bottom_blobs[i])
        for blob, w in self._loss_tops:
            blob.diff[...] = w

    def forward_all(self, blobs=None, **kwargs):
        """Run forward over inputs with more items than one batch (pycaffe's forward_all): the
        inputs are cut into batches of the input blobs' first dimension, the last one padded,
        and the outputs concatenated and trimmed."""
        outs = {name: [] for name in list(self.outputs) + list(blobs or [])}
        if not kwargs:
            out = self.forward(blobs=blobs)
            return {k: v.copy() for k, v in out.items()}
        counts = {len(np.asarray(v)) for v in kwargs.values()}
        if len(counts) != 1:
            raise ShapeError(f"{self.source.label}: forward_all inputs differ in item count: "
                             f"{ {k: len(np.asarray(v)) for k, v in kwargs.items()} }")
        total = counts.pop()
        batch = self.blobs[next(iter(kwargs))].shape[0]
        for start in range(0, total, batch):
            chunk = {}
            for name, value in kwargs.items():
                part = np.asarray(value[start:start + batch])
                if len(part) < batch:
                    pad = np.zeros((batch - len(part),) + part.shape[1:], part.dtype)
                    part = np.concatenate([part, pad])
                chunk[name] = part
            out = self.forward(blobs=blobs, **chunk)
            for name in outs:
                outs[name].append(out[name].copy())
        return {name: np.concatenate(parts)[:total] for name, parts in outs.items()}

    # -- weights --------------------------------------------------------------------------
    def copy_from(self, path):
        """Load weights by layer name from a .caffemodel (binary, current or V1) or Caffe's HDF5
        layout (.caffemodel.h5)."""
        from .weights import load_weights
        load_weights(self, path)

    def save(self, path, write_diff=False):
        """Write the weights atomically; '.h5' suffixes get Caffe's HDF5 layout."""
        from .weights import save_weights
        save_weights(self, path, write_diff=write_diff)

    def save_hdf5(self, path):
        """pycaffe's save_hdf5: Caffe's HDF5 weights layout whatever the suffix."""
        from .weights import save_weights
        save_weights(self, path, hdf5=True)

    def load_hdf5(self, path):
        """pycaffe's load_hdf5: copy weights from a file in Caffe's HDF5 layout."""
        self.copy_from(path)

    # pycaffe's index-based views of the graph
    @property
    def _blob_names(self):
        return list(self.blobs)

    def _blob_index(self):
        return {name: i for i, name in enumerate(self.blobs)}

    @property
    def _inputs(self):
        index = self._blob_index()
        return [index[name] for name in self.inputs]

    @property
    def _outputs(self):
        index = self._blob_index()
        return [index[name] for name in self.outputs]

    def _bottom_ids(self, i):
        index = self._blob_index()
        return [index[name] for name in self.layer_params[i].bottom]

    def _top_ids(self, i):
        index = self._blob_index()
        return [index[name] for name in self.layer_params[i].top]

    def _forward(self, start, end):
        """Forward over layers start..end (indices, inclusive); returns the loss."""
        return self._forward_range(int(start), int(end))

    def _backward(self, start, end):
        """Backward from layer index start down to end (inclusive)."""
        for blob, w in self._loss_tops:
            blob.diff[...] = w
        self._backward_range(int(start), int(end))

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe's forward_backward_all: forward and backward over inputs with more items than
        one batch; returns ({output: data}, {input or diff name: diff}), each concatenated over
        the batches and trimmed to the item count."""
        names = list(self.outputs) + [b for b in (blobs or []) if b not in self.outputs]
        diff_names = list(self.inputs) + [d for d in (diffs or []) if d not in self.inputs]
        outs = {name: [] for name in names}
        grads = {name: [] for name in diff_names}
        counts = {len(np.asarray(v)) for v in kwargs.values()}
        if len(counts) > 1:
            raise ShapeError(f"{self.source.label}: forward_backward_all inputs differ in item "
                             f"count: { {k: len(np.asarray(v)) for k, v in kwargs.items()} }")
        total = counts.pop() if counts else self.blobs[self.inputs[0]].shape[0]
        batch = self.blobs[next(iter(kwargs))].shape[0] if kwargs else total
        for start in range(0, total, batch):
            chunk = {}
            for name, value in kwargs.items():
                part = np.asarray(value[start:start + batch])
                if len(part) < batch:
                    part = np.concatenate([part, np.zeros((batch - len(part),) + part.shape[1:],
                                                          part.dtype)])
                chunk[name] = part
            out = self.forward(blobs=names, **chunk)
            back = self.backward(diffs=diff_names)
            for name in names:
                outs[name].append(np.array(out[name], copy=True))
            for name in diff_names:
                grads[name].append(np.array(back[name], copy=True))
        def trim(parts):  # per-item blobs join and lose the padding; scalars (losses) stack
            if parts and np.ndim(parts[0]) == 0:
                return np.array(parts)
            return np.concatenate(parts)[:total]
        return ({n: trim(p) for n, p in outs.items()}, {n: trim(p) for n, p in grads.items()})

    def share_with(self, other):
        """Use `other`'s parameter storage for layers of the same name (Caffe's
        ShareTrainedLayersWith): e.g. a test net that follows a training net's weights."""
        for name, layer in self.layer_dict.items():
            source = other.layer_dict.get(name)
            if source is None or not source.blobs:
                continue
            if len(source.blobs) != len(layer.blobs):
                raise ShapeError(f"layer '{name}': {len(layer.blobs)} parameter blobs here, "
                                 f"{len(source.blobs)} in the net to share with")
            for i, (mine, theirs) in enumerate(zip(layer.blobs, source.blobs)):
                if mine.shape != theirs.shape:
                    raise ShapeError(f"layer '{name}' ({layer.type}) blob {i}: shape {mine.shape} "
                                     f"here, {theirs.shape} in the net to share with")
                mine.share_data(theirs)

    def set_data_shard(self, rank, world):
        """Give every data layer its shard of the record stream (Caffe's multi-process rule: in
        TRAIN record i goes to rank i mod world; TEST nets read everything). Returns the names
        of the layers that took it."""
        from .data.sharding import set_data_shard
        return set_data_shard(self, rank, world)

    def set_input_arrays(self, data, labels):
        """Feed a MemoryData first layer (pycaffe)."""
        if not self.layers or self.layers[0].type != "MemoryData":
            raise NetError(f"{self.source.label}: set_input_arrays needs a MemoryData first layer")
        self.layers[0].set_input_arrays(data, labels)

    def to_proto(self):
        param = crema_pb2.NetParameter()
        param.name = self.name
        for lp in self.layer_params:
            param.layer.add().CopyFrom(lp)
        return param

    def __repr__(self):
        return f"<Net '{self.name}' phase={'TRAIN' if self.phase == TRAIN else 'TEST'} " \
               f"layers={len(self.layers)}>"
