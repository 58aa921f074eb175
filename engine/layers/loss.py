"""Loss layers and Accuracy, with Caffe 1.0's semantics.

Every loss layer writes a scalar top[0] of shape () (Caffe's 0-axis loss blob) and scales its
gradient by top[0].diff.flat[0], which the net sets to the layer's loss weight. Label bottoms hold
class indices stored as floats; like Caffe's static_cast<int>, they are truncated toward zero.
Unlike Caffe (which only DCHECKs), an out-of-range label raises a LayerError naming the value.
"""
import numpy as np
from google.protobuf.message import DecodeError

from .. import crema_pb2
from ..errors import ShapeError, WeightsError
from ..io import blobproto_to_array
from ..layer import Layer
from ..registry import register_layer
from .softmax import softmax3, softmax_axis_dims

# Caffe's two clamps before log(): SoftmaxWithLoss uses FLT_MIN; MultinomialLogisticLoss and
# InfogainLoss (on its internal softmax's output) use kLOG_THRESHOLD = 1e-20 from loss_layer.hpp.
FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20

_Norm = crema_pb2.LossParameter


def _normalization_mode(loss_param, default):
    """Caffe's choice: an explicit `normalization` wins; else legacy `normalize` (true -> VALID,
    false -> BATCH_SIZE); else `default`."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return _Norm.VALID if loss_param.normalize else _Norm.BATCH_SIZE
    return default


def _normalizer(mode, outer, inner, valid_count, total=None):
    """Caffe's LossLayer get_normalizer, including its final max(1, n): a batch whose labels are
    all ignored gives loss 0 rather than NaN. With per-sample weights, `valid_count` and `total`
    are weight sums (FULL uses `total` instead of outer*inner) and only a zero sum becomes 1: a
    weighted mean must not be floored at 1."""
    if mode == _Norm.FULL:
        n = outer * inner if total is None else total
    elif mode == _Norm.VALID:
        n = valid_count
    elif mode == _Norm.BATCH_SIZE:
        n = outer
    elif mode == _Norm.NONE:
        n = 1
    else:
        raise ValueError(f"unknown normalization mode {mode}")
    if total is None:
        return max(1.0, float(n))
    return float(n) if n > 0 else 1.0


class _LossLayer(Layer):
    """Caffe's LossLayer: two bottoms (predictions, labels/targets), one scalar top."""
    is_loss = True
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1  # never backpropagate into labels

    def _reshape_loss(self, bottom, top):
        """LossLayer::Reshape: bottom[0] and bottom[1] share their first dimension; scalar top."""
        a, b = bottom[0], bottom[1]
        if a.num_axes == 0 or b.num_axes == 0:
            raise self.error(f"bottom[0] (shape {a.shape}) and bottom[1] (shape {b.shape}) "
                             "need at least one axis")
        if a.shape[0] != b.shape[0]:
            raise self.error(f"the data and label should have the same first dimension: "
                             f"bottom[0] has shape {a.shape}, bottom[1] has shape {b.shape}")
        if a.shape[0] == 0:
            raise self.error(f"bottom[0] has shape {a.shape}: the batch is empty")
        top[0].reshape(())
        self.kernel = "numpy"

    def _labels(self, blob, num_classes, ignore_label=None):
        """Integer labels (truncated like static_cast<int>) and the mask of non-ignored ones.
        Non-ignored labels outside [0, num_classes) raise a LayerError naming the value."""
        raw = blob.data.reshape(-1)
        if not np.all(np.isfinite(raw)):
            bad = raw[~np.isfinite(raw)][0]
            raise self.error(f"label value {bad} in bottom[1] is not a finite number")
        labels = np.trunc(raw).astype(np.int64)
        valid = np.ones(labels.shape, bool) if ignore_label is None else labels != ignore_label
        out = valid & ((labels < 0) | (labels >= num_classes))
        if out.any():
            pos = int(np.argmax(out))
            raise self.error(f"label value {raw[pos]:g} at position {pos} of bottom[1] is out of "
                             f"range: expected an integer in [0, {num_classes})"
                             + ("" if ignore_label is None else f" or ignore_label {ignore_label}"))
        return np.where(valid, labels, 0), valid

    def _no_label_backward(self, propagate_down, indices=(1,), what="label"):
        for i in indices:
            if i < len(propagate_down) and propagate_down[i]:
                raise self.error(f"cannot backpropagate to {what} input bottom[{i}]")

    def _loss_weight(self, top):
        return top[0].diff.flat[0]

    def _num_dim(self, bottom):
        """Caffe's num = bottom[0]->num() (first axis) and dim = count / num."""
        num = bottom[0].shape[0]
        return num, bottom[0].count // num


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLossLayer(_LossLayer):
    """Softmax followed by the multinomial logistic loss, with a stable gradient (p - onehot).

    Params: softmax_param.axis (default 1); loss_param { ignore_label, normalization (default
    VALID), legacy normalize (used only when normalization is unset: true -> VALID,
    false -> BATCH_SIZE) }.
    Bottoms: predictions x (outer x C x inner around the softmax axis), labels with
    outer * inner values (e.g. N, N x 1, or N x H x W / N x 1 x H x W for axis 1).
    Tops: the loss (shape ()); optional top[1] = the softmax probabilities (shape of x), which
    gets loss weight 0 by default and receives no gradient (as in Caffe).
    loss = -sum_{valid} log(max(p[label], FLT_MIN)) / normalizer, where the normalizer is
    FULL: outer*inner, VALID: the number of non-ignored labels, BATCH_SIZE: outer, NONE: 1, and
    never below 1.

    crema extension (Caffe has no per-sample weights): an optional bottom[2] of outer*inner
    non-negative weights w (e.g. physics cross-section weights). Then
    loss = -sum_{valid} w log(max(p[label], FLT_MIN)) / normalizer with the counts replaced by
    weight sums - FULL: sum of all w, VALID: sum of the valid w (the weighted mean loss),
    BATCH_SIZE: outer, NONE: 1 - and a zero weight sum normalizes by 1. No gradient reaches w.
    """
    exact_num_bottom = None
    min_bottom = 2
    max_bottom = 3
    exact_num_top = None
    min_top = 1
    max_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self._ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self._mode = _normalization_mode(lp, _Norm.VALID)

    def reshape(self, bottom, top):
        self._reshape_loss(bottom, top)
        _, self._outer, self._channels, self._inner = softmax_axis_dims(
            self, bottom[0], self.param.softmax_param.axis)
        if self._outer * self._inner != bottom[1].count:
            raise self.error(
                f"number of labels must match number of predictions: bottom[0] shape "
                f"{bottom[0].shape} with softmax axis {self.param.softmax_param.axis} needs "
                f"{self._outer * self._inner} labels, bottom[1] shape {bottom[1].shape} has "
                f"{bottom[1].count}")
        if len(bottom) > 2 and bottom[2].count != bottom[1].count:
            raise self.error(f"bottom[2] (sample weights, shape {bottom[2].shape}) needs one "
                             f"weight per label: {bottom[1].count} (bottom[1] shape "
                             f"{bottom[1].shape})")
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        dims = (self._outer, self._channels, self._inner)
        self._prob = softmax3(bottom[0].data.reshape(dims))
        labels, valid = self._labels(bottom[1], self._channels, self._ignore)
        self._label3 = labels.reshape(self._outer, 1, self._inner)
        self._valid = valid.reshape(self._outer, 1, self._inner)
        picked = np.take_along_axis(self._prob, self._label3, axis=1)
        logs = np.log(np.maximum(picked, FLT_MIN))
        if len(bottom) > 2:
            w = bottom[2].data.reshape(self._outer, 1, self._inner)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise self.error("bottom[2] (sample weights) must be finite and non-negative")
            self._weight = w * self._valid
            loss = -np.sum(logs * self._weight)
            self._norm = _normalizer(self._mode, self._outer, self._inner,
                                     float(self._weight.sum()), total=float(w.sum()))
        else:
            self._weight = None
            loss = -np.sum(logs[self._valid])
            self._norm = _normalizer(self._mode, self._outer, self._inner, int(valid.sum()))
        top[0].data[...] = loss / self._norm
        if len(top) > 1:
            top[1].data.reshape(dims)[...] = self._prob

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        self._no_label_backward(propagate_down, (2,), "sample weight")
        if not propagate_down[0]:
            return
        grad = self._prob.copy()
        at_label = np.take_along_axis(grad, self._label3, axis=1) - 1
        np.put_along_axis(grad, self._label3, at_label, axis=1)
        # ignored positions get no gradient at all; weighted samples their weight's share
        grad *= self._valid if self._weight is None else self._weight
        grad *= self._loss_weight(top) / self._norm
        bottom[0].diff.reshape(grad.shape)[...] = grad


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(_LossLayer):
    """Cross-entropy of sigmoid(x) against targets t in [0, 1], computed stably as
    loss_i = -(x*(t - [x>=0]) - log(1 + exp(-|x|))), which equals
    -(t*log(sig) + (1-t)*log(1-sig)).

    Bottoms: x (any shape, N first), targets t with the same count. Top: the loss (shape ()).
    Normalization: Caffe 1.0 divides by the batch size N = shape(0). That remains the default
    here; loss_param.normalization (or legacy normalize) and loss_param.ignore_label are honored
    only when set explicitly (targets whose int value equals ignore_label then add neither loss
    nor gradient, and VALID counts the rest). FULL = count, BATCH_SIZE = N, NONE = 1 (all >= 1).
    Gradient: (sigmoid(x) - t) * loss_weight / normalizer.
    """

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self._ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self._mode = _normalization_mode(lp, _Norm.BATCH_SIZE)

    def reshape(self, bottom, top):
        self._reshape_loss(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"inputs must have the same count: bottom[0] has shape "
                             f"{bottom[0].shape}, bottom[1] has shape {bottom[1].shape}")

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        t = bottom[1].data.reshape(-1)
        if self._ignore is None:
            valid = np.ones(x.shape, bool)
        else:
            valid = np.trunc(t) != self._ignore
        e = np.exp(-np.abs(x))
        # sigmoid without overflow: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) for x < 0.
        self._sig = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)
        per = x * (t - (x >= 0)) - np.log1p(e)
        loss = -np.sum(per[valid])
        self._valid = valid
        outer = bottom[0].shape[0]
        self._norm = _normalizer(self._mode, outer, bottom[0].count // outer, int(valid.sum()))
        top[0].data[...] = loss / self._norm

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down, what="target")
        if not propagate_down[0]:
            return
        t = bottom[1].data.reshape(-1)
        grad = (self._sig - t) * self._valid * (self._loss_weight(top) / self._norm)
        bottom[0].diff.reshape(-1)[...] = grad


@register_layer("EuclideanLoss")
class EuclideanLossLayer(_LossLayer):
    """loss = sum((a - b)^2) / N / 2, N = shape(0).

    Bottoms: a and b with the same first dimension and the same count(1) (so the same count;
    their shapes may otherwise differ, as in Caffe). Top: the loss (shape ()).
    Gradients go to both bottoms: +-(a - b) * loss_weight / N (force_backward may reach both).
    """

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottom, top):
        self._reshape_loss(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"inputs must have the same dimension: bottom[0] has shape "
                             f"{bottom[0].shape}, bottom[1] has shape {bottom[1].shape}")

    def forward(self, bottom, top):
        self._diff = bottom[0].data.reshape(-1) - bottom[1].data.reshape(-1)
        top[0].data[...] = np.dot(self._diff, self._diff) / bottom[0].shape[0] / 2

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * self._loss_weight(top) / bottom[i].shape[0]
                bottom[i].diff.reshape(-1)[...] = alpha * self._diff


@register_layer("HingeLoss")
class HingeLossLayer(_LossLayer):
    """One-vs-all hinge loss: t = x with the true-class entry negated, t = max(0, 1 + t);
    L1: loss = sum(t) / N, L2: loss = sum(t^2) / N.

    Params: hinge_loss_param.norm (L1 default, L2).
    Bottoms: scores x (N x ...; dim = count / N classes), labels with N values.
    Top: the loss (shape ()). Gradient: sign(t) (L1) or 2t (L2), negated at the true class,
    times loss_weight / N.
    """

    def reshape(self, bottom, top):
        self._reshape_loss(bottom, top)
        num, _ = self._num_dim(bottom)
        if bottom[1].count != num:
            raise self.error(f"need one label per example: bottom[0] has shape {bottom[0].shape}, "
                             f"bottom[1] has shape {bottom[1].shape}")
        norm = self.param.hinge_loss_param.norm
        if norm not in (crema_pb2.HingeLossParameter.L1, crema_pb2.HingeLossParameter.L2):
            raise self.error(f"unknown hinge_loss_param.norm {norm}")

    def forward(self, bottom, top):
        num, dim = self._num_dim(bottom)
        labels, _ = self._labels(bottom[1], dim)
        rows = np.arange(num)
        t = bottom[0].data.reshape(num, dim).copy()
        t[rows, labels] *= -1
        t = np.maximum(0, 1 + t)
        self._t, self._label = t, labels
        if self.param.hinge_loss_param.norm == crema_pb2.HingeLossParameter.L1:
            loss = np.sum(np.abs(t)) / num
        else:
            loss = np.dot(t.reshape(-1), t.reshape(-1)) / num
        top[0].data[...] = loss

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        num, _ = self._num_dim(bottom)
        g = self._t.copy()
        g[np.arange(num), self._label] *= -1
        lw = self._loss_weight(top)
        if self.param.hinge_loss_param.norm == crema_pb2.HingeLossParameter.L1:
            g = np.sign(g) * (lw / num)
        else:
            g = g * (lw * 2 / num)
        bottom[0].diff.reshape(g.shape)[...] = g


@register_layer("ContrastiveLoss")
class ContrastiveLossLayer(_LossLayer):
    """Contrastive loss on pairs (Hadsell et al.), as Caffe computes it.

    Params: contrastive_loss_param { margin (1.0), legacy_version (false) }.
    Bottoms: a and b (N x C, or N x C x 1 x 1), similarity y (N values; int(y) != 0 means similar).
    Top: the loss (shape ()). With d^2 = ||a - b||^2:
      similar: d^2; dissimilar: legacy max(margin - d^2, 0), else max(margin - d, 0)^2;
      loss = sum / N / 2.
    Gradient to a (b gets the negation), times loss_weight / N: similar (a - b); dissimilar,
    when margin - d (legacy: margin - d^2) > 0: legacy -(a - b), else
    -(margin - d) / (d + 1e-4) * (a - b). The 1e-4 is Caffe's guard against d = 0 and makes the
    non-legacy gradient slightly smaller than the exact derivative, as in Caffe.
    """
    exact_num_bottom = 3

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        self._reshape_loss(bottom, top)
        a, b, y = bottom
        for i, blob in enumerate(bottom):
            if blob.num_axes > 4:
                raise self.error(f"bottom[{i}] has shape {blob.shape}: at most 4 axes")
        if a.channels != b.channels or a.height != 1 or a.width != 1 \
                or b.height != 1 or b.width != 1:
            raise self.error(f"bottom[0] and bottom[1] must both be N x C x 1 x 1 with the same "
                             f"C: bottom[0] has shape {a.shape}, bottom[1] has shape {b.shape}")
        if y.count != a.shape[0] or y.channels != 1 or y.height != 1 or y.width != 1:
            raise self.error(f"bottom[2] must hold one similarity value per pair: bottom[0] has "
                             f"shape {a.shape}, bottom[2] has shape {y.shape}")

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        self._diff = bottom[0].data.reshape(num, -1) - bottom[1].data.reshape(num, -1)
        self._dist_sq = np.sum(self._diff * self._diff, axis=1)
        self._similar = np.trunc(bottom[2].data.reshape(-1)) != 0
        margin = self.param.contrastive_loss_param.margin
        if self.param.contrastive_loss_param.legacy_version:
            dissimilar = np.maximum(margin - self._dist_sq, 0.0)
        else:
            dissimilar = np.maximum(margin - np.sqrt(self._dist_sq), 0.0) ** 2
        per = np.where(self._similar, self._dist_sq, dissimilar)
        top[0].data[...] = np.sum(per) / num / 2

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down, indices=(2,), what="similarity")
        margin = self.param.contrastive_loss_param.margin
        for i, sign in ((0, 1.0), (1, -1.0)):
            if not propagate_down[i]:
                continue
            alpha = sign * self._loss_weight(top) / bottom[i].shape[0]
            if self.param.contrastive_loss_param.legacy_version:
                mdist = margin - self._dist_sq
                beta = np.full(mdist.shape, -alpha)
            else:
                dist = np.sqrt(self._dist_sq)
                mdist = margin - dist
                beta = -alpha * mdist / (dist + 1e-4)
            coef = np.where(self._similar, alpha, np.where(mdist > 0, beta, 0.0))
            bottom[i].diff.reshape(self._diff.shape)[...] = coef[:, None] * self._diff


class _ProbabilityLossLayer(_LossLayer):
    """Shared checks of the probability-input losses: N examples of dim = count / N
    probabilities and one label per example."""

    def _check_labels_shape(self, bottom):
        num, _ = self._num_dim(bottom)
        lab = bottom[1]
        if lab.count != num:
            raise self.error(f"need one label per example (N x 1 x 1 x 1): bottom[0] has shape "
                             f"{bottom[0].shape}, bottom[1] has shape {lab.shape}")


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(_ProbabilityLossLayer):
    """loss = -sum_n log(max(p[n, label_n], 1e-20)) / N, on probabilities (not logits).

    Bottoms: probabilities p (N x ...; dim = count / N classes), labels with N values.
    Top: the loss (shape ()). Gradient at the label entry: -loss_weight / N / max(p, 1e-20),
    zero elsewhere. The clamp is Caffe's kLOG_THRESHOLD (1e-20).
    """

    def reshape(self, bottom, top):
        self._reshape_loss(bottom, top)
        self._check_labels_shape(bottom)

    def forward(self, bottom, top):
        num, dim = self._num_dim(bottom)
        labels, _ = self._labels(bottom[1], dim)
        p = bottom[0].data.reshape(num, dim)[np.arange(num), labels]
        self._label = labels
        self._p = np.maximum(p, LOG_THRESHOLD)
        top[0].data[...] = -np.sum(np.log(self._p)) / num

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        num, dim = self._num_dim(bottom)
        g = np.zeros((num, dim), dtype=bottom[0].diff.dtype)
        g[np.arange(num), self._label] = -self._loss_weight(top) / num / self._p
        bottom[0].diff.reshape(num, dim)[...] = g


@register_layer("InfogainLoss")
class InfogainLossLayer(_LossLayer):
    """Caffe 1.0's InfogainLoss: a softmax over infogain_loss_param.axis turns the scores x into
    probabilities p, and each non-ignored position pays the infogain-weighted log loss
    loss = -sum_{valid} sum_k H[label, k] * log(max(p_k, 1e-20)) / normalizer.
    With H the identity this is SoftmaxWithLoss, except for the clamp: Caffe's InfogainLoss
    clamps at kLOG_THRESHOLD (1e-20), its SoftmaxWithLoss at FLT_MIN.

    Params: infogain_loss_param { source: a binary BlobProto file holding H, read at setup and
    used when there is no third bottom; axis (1; negative counts from the end) };
    loss_param { ignore_label, normalization (default VALID) }. The legacy loss_param.normalize
    is refused, as Caffe refuses it for this layer.
    Bottoms: scores x (outer x K x inner around the axis), labels with outer * inner values,
    optional H. H holds K * K values, read row-major as K x K whatever its shape (Caffe's check
    is on the count; its documented shape is 1 x 1 x K x K).
    Tops: the loss (shape ()); optional top[1] = the softmax probabilities (shape of x), which
    receives no gradient (as in Caffe).
    Normalizer: FULL: outer*inner, VALID: the number of non-ignored labels, BATCH_SIZE: outer,
    NONE: 1, never below 1.
    Gradient at a valid position: (p_k * sum_j H[label, j] - H[label, k]) * loss_weight /
    normalizer, the exact derivative of the unclamped loss (Caffe's); ignored positions get 0.
    No gradient flows to the labels or to H.
    """
    exact_num_bottom = None
    min_bottom = 2
    max_bottom = 3
    exact_num_top = None
    min_top = 1
    max_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def setup(self, bottom, top):
        lp = self.param.loss_param
        if lp.HasField("normalize"):
            raise self.error("loss_param.normalize is deprecated for InfogainLoss: use "
                             "loss_param.normalization (FULL, VALID, BATCH_SIZE or NONE)")
        self._ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self._mode = lp.normalization
        self._file_H = None
        if len(bottom) >= 3:
            return
        ip = self.param.infogain_loss_param
        if not ip.HasField("source") or not ip.source:
            raise self.error("infogain matrix source must be specified "
                             "(infogain_loss_param.source) when there is no third bottom")
        try:
            with open(ip.source, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise self.error(f"cannot read infogain matrix file {ip.source!r}: {exc}") from None
        proto = crema_pb2.BlobProto()
        try:
            proto.ParseFromString(data)
            self._file_H = blobproto_to_array(proto)
        except (DecodeError, WeightsError) as exc:  # not a BlobProto, or data/shape mismatch
            raise self.error(f"infogain matrix file {ip.source!r} is not a valid BlobProto: "
                             f"{exc}") from None

    def _infogain(self, bottom):
        if len(bottom) >= 3:
            return bottom[2].data, "bottom[2]"
        return self._file_H, f"file {self.param.infogain_loss_param.source!r}"

    def reshape(self, bottom, top):
        self._reshape_loss(bottom, top)
        x = bottom[0]
        axis_param = self.param.infogain_loss_param.axis
        try:
            axis = x.canonical_axis(axis_param)
        except ShapeError as exc:
            raise self.error(f"infogain_loss_param.axis: {exc}") from None
        self._outer, self._classes, self._inner = \
            x.count_range(0, axis), x.shape[axis], x.count_range(axis + 1)
        if self._classes < 1:
            raise self.error(f"bottom[0] shape {x.shape} has no classes along "
                             f"infogain_loss_param.axis {axis_param}")
        if self._outer * self._inner != bottom[1].count:
            raise self.error(
                f"number of labels must match number of predictions: bottom[0] shape "
                f"{x.shape} with infogain_loss_param.axis {axis_param} needs "
                f"{self._outer * self._inner} labels, bottom[1] shape {bottom[1].shape} has "
                f"{bottom[1].count}")
        H, where = self._infogain(bottom)
        k = self._classes
        if H.size != k * k:
            raise self.error(f"the infogain matrix in {where} has shape {H.shape} ({H.size} "
                             f"values), but bottom[0] shape {x.shape} has {k} classes along "
                             f"infogain_loss_param.axis {axis_param}: H must be {k} x {k} "
                             f"(1 x 1 x {k} x {k})")
        if len(top) > 1:
            top[1].reshape(x.shape)

    def forward(self, bottom, top):
        dims = (self._outer, self._classes, self._inner)
        self._prob = softmax3(bottom[0].data.reshape(dims))
        labels, valid = self._labels(bottom[1], self._classes, self._ignore)
        H, _ = self._infogain(bottom)
        H = np.asarray(H, dtype=self._prob.dtype).reshape(self._classes, self._classes)
        # H's row for each position's label, laid out like the probabilities (outer, K, inner)
        rows = H[labels].reshape(self._outer, self._inner, self._classes).transpose(0, 2, 1)
        self._valid = valid.reshape(self._outer, 1, self._inner)
        self._rows = rows * self._valid
        loss = -np.sum(self._rows * np.log(np.maximum(self._prob, LOG_THRESHOLD)))
        self._norm = _normalizer(self._mode, self._outer, self._inner, int(valid.sum()))
        top[0].data[...] = loss / self._norm
        if len(top) > 1:
            top[1].data.reshape(dims)[...] = self._prob

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        self._no_label_backward(propagate_down, indices=(2,), what="infogain matrix")
        if not propagate_down[0]:
            return
        # d/dx_k of -sum_j H[l, j] log p_j is p_k * sum_j H[l, j] - H[l, k]; self._rows is
        # already zero at ignored positions, so they get no gradient
        grad = self._prob * self._rows.sum(axis=1, keepdims=True) - self._rows
        grad *= self._loss_weight(top) / self._norm
        bottom[0].diff.reshape(grad.shape)[...] = grad


@register_layer("Accuracy")
class AccuracyLayer(Layer):
    """Top-k classification accuracy (no gradient).

    Params: accuracy_param { top_k (1), axis (1), ignore_label }.
    Bottoms: scores x (outer x C x inner around `axis`), labels with outer * inner values.
    Tops: accuracy = correct / non-ignored count (shape (); NaN when every label is ignored, as
    Caffe's 0/0); optional top[1] = per-class accuracy (shape (C,), 0 for absent classes).
    A prediction is correct when the true class is among the first top_k entries of the scores
    sorted descending by (score, class index), Caffe's std::greater on (value, index) pairs:
    ties go to the larger class index. I.e. fewer than top_k classes c have x_c > x_label, or
    x_c == x_label with c > label.
    """
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def allow_force_backward(self, bottom_index):
        return False

    def setup(self, bottom, top):
        ap = self.param.accuracy_param
        self._top_k = ap.top_k
        self._ignore = ap.ignore_label if ap.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        try:
            axis = bottom[0].canonical_axis(self.param.accuracy_param.axis)
        except ShapeError as exc:
            raise self.error(f"accuracy_param.axis: {exc}") from None
        self._outer = bottom[0].count_range(0, axis)
        self._channels = bottom[0].shape[axis]
        self._inner = bottom[0].count_range(axis + 1)
        if self._channels < 1:
            raise self.error(f"bottom[0] shape {bottom[0].shape} has no classes along axis {axis}")
        if self._outer * self._inner != bottom[1].count:
            raise self.error(
                f"number of labels must match number of predictions: bottom[0] shape "
                f"{bottom[0].shape} with axis {axis} needs {self._outer * self._inner} labels, "
                f"bottom[1] shape {bottom[1].shape} has {bottom[1].count}")
        if self._top_k > self._channels:
            raise self.error(f"top_k ({self._top_k}) must be less than or equal to the number of "
                             f"classes ({self._channels}, bottom[0] shape {bottom[0].shape})")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self._channels,))
        self.kernel = "numpy"

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self._outer, self._channels, self._inner)
        raw = bottom[1].data.reshape(-1)
        if not np.all(np.isfinite(raw)):
            raise self.error(f"label value {raw[~np.isfinite(raw)][0]} in bottom[1] is not finite")
        labels = np.trunc(raw).astype(np.int64)
        valid = np.ones(labels.shape, bool) if self._ignore is None else labels != self._ignore
        out = valid & ((labels < 0) | (labels >= self._channels))
        if out.any():
            pos = int(np.argmax(out))
            raise self.error(f"label value {raw[pos]:g} at position {pos} of bottom[1] is out of "
                             f"range [0, {self._channels})")
        labels = np.where(valid, labels, 0)
        lab3 = labels.reshape(self._outer, 1, self._inner)
        xl = np.take_along_axis(x, lab3, axis=1)
        cls = np.arange(self._channels).reshape(1, -1, 1)
        ahead = (x > xl) | ((x == xl) & (cls > lab3))
        correct = (ahead.sum(axis=1).reshape(-1) < self._top_k) & valid
        count = int(valid.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            top[0].data[...] = np.float64(correct.sum()) / np.float64(count)
        if len(top) > 1:
            seen = np.bincount(labels[valid], minlength=self._channels)
            hits = np.bincount(labels[correct], minlength=self._channels)
            top[1].data[...] = np.where(seen == 0, 0.0, hits / np.maximum(seen, 1))

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("Accuracy has no gradient: it cannot backpropagate to its bottoms")
