"""YOLO-style detection on a grid of cells (the climate workload: Racah et al. 2017, whose head
follows YOLO v1, Redmon et al. 2016), with the box encoding shared by the loss and the decoder.

Prediction layout, per image and cell (gy, gx) of a Gh x Gw grid whose cells are `stride` pixels:
    channel 0            objectness o                p_obj = sigmoid(o + log(q / (1 - q))), q the
                                                     `obj_prior` (0.5: no offset)
    channels 1 .. C      class logits                p(class) = softmax
    channels C+1, C+2    ty, tx: the box centre inside the cell, in cell units (0..1)
    channels C+3, C+4    th, tw: log(height / prior_h), log(width / prior_w)
A true box (ymin, xmin, ymax, xmax, class) belongs to the cell holding its centre. One box per
cell (as YOLO v1): when two centres share a cell the larger box is kept, the other is ignored.
"""
import ast

import numpy as np

from ..layer import Layer
from ..registry import register_layer

DEFAULTS = {"num_classes": 4, "stride": 8.0, "prior": 8.0, "coord": 5.0, "size": 7.0,
            "obj": 1.0, "noobj": 0.5, "cls": 1.0, "obj_prior": 0.5}


def obj_offset(obj_prior):
    """The logit added to channel 0 so that a zero output means p_obj = obj_prior: the prior
    initialisation of Lin et al. 2017 ("Focal loss"), written into the parametrisation because
    Caffe's fillers cannot give one output channel of a convolution its own bias."""
    p = float(obj_prior)
    if not 0.0 < p < 1.0:
        raise ValueError(f"obj_prior must lie in (0, 1), got {obj_prior}")
    return float(np.log(p / (1.0 - p)))


def _split_prior(prior):
    if np.ndim(prior) == 0:
        return float(prior), float(prior)
    ph, pw = prior
    return float(ph), float(pw)


def encode_targets(boxes, grid_shape, stride, prior, num_classes):
    """Cell targets of a batch of true boxes.

    boxes: (N, K, 5) rows ymin, xmin, ymax, xmax, class in pixels (class < 0: padding).
    Returns (obj (N,Gh,Gw) float 0/1, cls (N,Gh,Gw) int (0 where no object), t (N,4,Gh,Gw) with
    ty, tx, th, tw targets (0 where no object)). Raises ValueError for a box without area or a
    class outside [0, num_classes).
    """
    boxes = np.asarray(boxes, np.float64)
    n = boxes.shape[0]
    gh, gw = grid_shape
    ph, pw = _split_prior(prior)
    obj = np.zeros((n, gh, gw))
    cls = np.zeros((n, gh, gw), np.int64)
    t = np.zeros((n, 4, gh, gw))
    for i in range(n):
        valid = boxes[i][boxes[i, :, 4] >= 0]
        if not len(valid):
            continue
        h = valid[:, 2] - valid[:, 0]
        w = valid[:, 3] - valid[:, 1]
        if np.any(h <= 0) or np.any(w <= 0):
            raise ValueError(f"image {i}: a box without area: {valid[(h <= 0) | (w <= 0)][0]}")
        c = valid[:, 4].astype(np.int64)
        if np.any(c >= num_classes) or np.any(valid[:, 4] != c):
            raise ValueError(f"image {i}: class values {valid[:, 4]} must be integers in "
                             f"[0, {num_classes})")
        for k in np.argsort(-(h * w), kind="stable"):  # larger boxes claim their cells first
            cy = (valid[k, 0] + valid[k, 2]) / 2 / stride
            cx = (valid[k, 1] + valid[k, 3]) / 2 / stride
            gy = int(np.clip(np.floor(cy), 0, gh - 1))
            gx = int(np.clip(np.floor(cx), 0, gw - 1))
            if obj[i, gy, gx]:
                continue
            obj[i, gy, gx] = 1.0
            cls[i, gy, gx] = c[k]
            t[i, :, gy, gx] = (cy - gy, cx - gx, np.log(h[k] / ph), np.log(w[k] / pw))
    return obj, cls, t


def decode_predictions(pred, stride, prior, num_classes, score_threshold=0.01, top_k=100,
                       obj_prior=0.5):
    """Boxes from a prediction blob (N, 5 + C, Gh, Gw) (the layout in the module docstring).

    Each cell proposes one box with its most probable class and score p_obj * p(class), as YOLO
    does. Returns a list of N arrays (D, 6): ymin, xmin, ymax, xmax, class, score, at most top_k
    per image with score >= score_threshold, highest first (no suppression: see metrics.nms).
    """
    x = np.asarray(pred, np.float64)
    n, ch, gh, gw = x.shape
    if ch != 5 + num_classes:
        raise ValueError(f"prediction has {ch} channels; {num_classes} classes need "
                         f"{5 + num_classes}")
    ph, pw = _split_prior(prior)
    p_obj = _sigmoid(x[:, 0] + obj_offset(obj_prior))
    logits = x[:, 1:1 + num_classes]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p_cls = e / e.sum(axis=1, keepdims=True)
    best = p_cls.argmax(axis=1)
    score = p_obj * p_cls.max(axis=1)
    gy, gx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    t = x[:, 1 + num_classes:]
    cy = (gy + np.clip(t[:, 0], 0, 1)) * stride
    cx = (gx + np.clip(t[:, 1], 0, 1)) * stride
    # clip log sizes so a wild prediction cannot overflow exp
    h = ph * np.exp(np.clip(t[:, 2], -10, 10))
    w = pw * np.exp(np.clip(t[:, 3], -10, 10))
    out = []
    for i in range(n):
        rows = np.stack([cy[i] - h[i] / 2, cx[i] - w[i] / 2, cy[i] + h[i] / 2, cx[i] + w[i] / 2,
                         best[i], score[i]], axis=-1).reshape(-1, 6)
        rows = rows[rows[:, 5] >= score_threshold]
        out.append(rows[np.argsort(-rows[:, 5], kind="stable")[:top_k]])
    return out


def _softplus(x):
    """log(1 + e^x) without overflow."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def parse_params(param):
    """The loss settings of a LayerParameter: a future `yolo_loss_param` message when the proto
    has one, otherwise a Python dict literal in python_param.param_str (crema's proto has no
    message for this layer yet), e.g. param_str: "{'coord': 5, 'noobj': 0.5, 'stride': 8}"."""
    values = dict(DEFAULTS)
    if "yolo_loss_param" in param.DESCRIPTOR.fields_by_name and param.HasField("yolo_loss_param"):
        msg = param.yolo_loss_param
        for key in DEFAULTS:
            if key in msg.DESCRIPTOR.fields_by_name and msg.HasField(key):
                values[key] = getattr(msg, key)
        return values
    text = param.python_param.param_str.strip() if param.HasField("python_param") else ""
    if not text:
        return values
    try:
        given = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"param_str {text!r} is not a Python dict literal: {e}") from None
    if not isinstance(given, dict):
        raise ValueError(f"param_str {text!r} must be a dict literal")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown keys {unknown} in param_str; known: {sorted(DEFAULTS)}")
    values.update(given)
    return values


@register_layer("YoloDetectionLoss")
class YoloDetectionLossLayer(Layer):
    """YOLO detection loss with per-image labeled weights (semi-supervised training).

    Bottoms: pred (N, 5 + C, Gh, Gw) (layout in the module docstring); boxes (N, K, 5) true boxes
    ymin, xmin, ymax, xmax, class in pixels, -1 rows are padding; optional labeled (N values,
    >= 0): the weight of each image's loss, 0 for unlabeled images, which then add nothing and
    get no gradient (without this bottom every image counts as labeled; a labeled image without
    boxes still teaches "no object" everywhere).
    Tops: the loss (shape ()); optional top[1] (5,) = its terms (coord, size, obj, noobj, cls),
    for logs (no gradient, loss weight 0 by default).
    Params (python_param.param_str dict literal; defaults are Racah et al.'s penalties):
    num_classes 4, stride 8 (pixels per cell), prior 8 (box size, pixels, or (h, w)),
    coord 5 (ty, tx), size 7 (th, tw), obj 1, noobj 0.5, cls 1, obj_prior 0.5 (the objectness
    a zero output means: 0.01 starts the net at "about 1 cell in 100 holds an object").
    With m the object cells, SL1 the smooth-L1 (Huber, beta 1) and w_n the labeled weights:
      L_n = coord * sum_m SL1(ty) + SL1(tx) + size * sum_m SL1(th) + SL1(tw)
            + obj * sum_m -log p_obj + noobj * sum_{not m} -log(1 - p_obj)
            + cls * sum_m -log p(class)
      loss = sum_n w_n L_n / sum_n w_n   (per labeled image; 0 when no image is labeled).
    """
    is_loss = True
    min_bottom = 2
    max_bottom = 3
    min_top = 1
    max_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def setup(self, bottom, top):
        try:
            p = parse_params(self.param)
        except ValueError as e:
            raise self.error(str(e)) from None
        self.num_classes = int(p["num_classes"])
        self.stride = float(p["stride"])
        self.prior = p["prior"]
        self.weights = {k: float(p[k]) for k in ("coord", "size", "obj", "noobj", "cls")}
        try:
            self.obj_offset = obj_offset(p["obj_prior"])
        except ValueError as e:
            raise self.error(str(e)) from None
        if self.num_classes < 1 or self.stride <= 0 or min(self.weights.values()) < 0:
            raise self.error(f"bad settings {p}: need num_classes >= 1, stride > 0 and "
                             "non-negative weights")

    def reshape(self, bottom, top):
        pred, boxes = bottom[0], bottom[1]
        c = 5 + self.num_classes
        if pred.num_axes != 4 or pred.shape[1] != c:
            raise self.error(f"bottom[0] (predictions) has shape {pred.shape}; expected "
                             f"(N, {c}, Gh, Gw) for {self.num_classes} classes")
        if boxes.num_axes != 3 or boxes.shape[0] != pred.shape[0] or boxes.shape[2] != 5:
            raise self.error(f"bottom[1] (boxes) has shape {boxes.shape}; expected "
                             f"({pred.shape[0]}, K, 5)")
        if len(bottom) > 2 and bottom[2].count != pred.shape[0]:
            raise self.error(f"bottom[2] (labeled weights) has {bottom[2].count} values for "
                             f"{pred.shape[0]} images")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((5,))
        self.kernel = "numpy"

    def forward(self, bottom, top):
        x = bottom[0].data
        n, _, gh, gw = x.shape
        c = self.num_classes
        try:
            obj, cls, target = encode_targets(bottom[1].data, (gh, gw), self.stride, self.prior,
                                              c)
        except ValueError as e:
            raise self.error(f"bottom[1] (boxes): {e}") from None
        if len(bottom) > 2:
            w = bottom[2].data.reshape(n).astype(np.float64)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise self.error("bottom[2] (labeled weights) must be finite and non-negative")
        else:
            w = np.ones(n)
        wsum = float(w.sum())
        self._norm = wsum if wsum > 0 else 1.0
        wn = w[:, None, None]
        o = x[:, 0] + self.obj_offset
        logits = x[:, 1:1 + c]
        t = x[:, 1 + c:]
        # objectness: -log sigmoid(o) = softplus(-o); -log(1 - sigmoid(o)) = softplus(o)
        l_obj = np.sum(wn * obj * _softplus(-o))
        l_noobj = np.sum(wn * (1 - obj) * _softplus(o))
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        picked = np.take_along_axis(log_prob, cls[:, None], axis=1)[:, 0]
        l_cls = np.sum(wn * obj * -picked)
        d = t - target
        ad = np.abs(d)
        sl1 = np.where(ad < 1, 0.5 * d * d, ad - 0.5)
        l_coord = np.sum(wn * obj * (sl1[:, 0] + sl1[:, 1]))
        l_size = np.sum(wn * obj * (sl1[:, 2] + sl1[:, 3]))
        W = self.weights
        terms = np.array([W["coord"] * l_coord, W["size"] * l_size, W["obj"] * l_obj,
                          W["noobj"] * l_noobj, W["cls"] * l_cls]) / self._norm
        top[0].data[...] = terms.sum()
        if len(top) > 1:
            top[1].data[...] = terms
        # saved for backward
        self._obj, self._cls, self._d, self._wn = obj, cls, d, wn
        self._prob = np.exp(log_prob)

    def backward(self, top, propagate_down, bottom):
        for i in (1, 2):
            if i < len(propagate_down) and propagate_down[i]:
                raise self.error(f"cannot backpropagate to bottom[{i}] (boxes / labeled weights)")
        if not propagate_down[0]:
            return
        W = self.weights
        c = self.num_classes
        obj, wn = self._obj, self._wn
        o = bottom[0].data[:, 0] + self.obj_offset
        grad = np.zeros(bottom[0].shape)
        sig = _sigmoid(o)
        grad[:, 0] = wn * (W["obj"] * obj * (sig - 1.0) + W["noobj"] * (1 - obj) * sig)
        onehot = np.zeros_like(self._prob)
        np.put_along_axis(onehot, self._cls[:, None], 1.0, axis=1)
        grad[:, 1:1 + c] = W["cls"] * (wn * obj)[:, None] * (self._prob - onehot)
        dsl1 = np.clip(self._d, -1.0, 1.0)  # derivative of smooth-L1
        scale = np.array([W["coord"], W["coord"], W["size"], W["size"]])[None, :, None, None]
        grad[:, 1 + c:] = scale * (wn * obj)[:, None] * dsl1
        bottom[0].diff[...] = grad * (top[0].diff.flat[0] / self._norm)
