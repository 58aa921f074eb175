"""Evaluation metrics of the two science workloads, in plain numpy.

HEP (signal vs background classification, evaluated with event weights):
    roc_curve(scores, labels, weights=None) -> (fpr, tpr, thresholds)
    auc(fpr, tpr)
    roc_auc(scores, labels, weights=None)
    tpr_at_fpr(fpr, tpr, target_fpr)

Climate (object detection, ExtremeWeather style; boxes are (ymin, xmin, ymax, xmax)):
    box_iou(a, b)                     pairwise intersection over union
    nms(boxes, scores, iou_threshold) greedy non-maximum suppression
    average_precision(recall, precision)   VOC all-points interpolation
    detection_ap(detections, truths, num_classes, iou_threshold) -> per-class AP, mAP

Conventions: a weight multiplies an event's contribution exactly as if the event were repeated that
many times, so integer weights equal duplicating samples. Boxes are continuous coordinates (a box
from 0 to 10 is 10 wide; there is no Pascal-VOC "+1 pixel").
"""
import numpy as np

__all__ = ["roc_curve", "auc", "roc_auc", "tpr_at_fpr", "box_iou", "nms", "average_precision",
           "detection_ap"]


# -- ROC -------------------------------------------------------------------------------------------

def _check_binary(scores, labels, weights):
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores ({scores.size}) and labels ({labels.size}) differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite numbers")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"labels must be 0 (background) or 1 (signal); got values "
                         f"{np.unique(labels)[:5]}")
    if weights is None:
        weights = np.ones(scores.shape)
    else:
        weights = np.asarray(weights, np.float64).reshape(-1)
        if weights.shape != scores.shape:
            raise ValueError(f"weights ({weights.size}) and scores ({scores.size}) differ in "
                             "length")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative")
    return scores, labels.astype(bool), weights


def roc_curve(scores, labels, weights=None):
    """The (weighted) receiver operating characteristic of a score that is high for signal.

    scores: (N,) classifier outputs; labels: (N,) 1 = signal (positive), 0 = background;
    weights: optional (N,) non-negative event weights (e.g. cross section / events generated).
    Returns (fpr, tpr, thresholds), each (K+1,): selecting `score >= thresholds[k]` keeps the
    weighted fraction tpr[k] of the signal and fpr[k] of the background. Thresholds are the
    distinct scores in decreasing order, preceded by +inf (nothing selected: the point (0, 0)),
    so both rates are non-decreasing and end at (1, 1). Tied scores form one threshold: a tie
    between signal and background is a diagonal segment, not a staircase that depends on the
    input order. Raises ValueError when a class has zero total weight (the rate is undefined).
    """
    scores, is_sig, weights = _check_binary(scores, labels, weights)
    total_sig = float(weights[is_sig].sum())
    total_bkg = float(weights[~is_sig].sum())
    if total_sig <= 0 or total_bkg <= 0:
        raise ValueError(f"roc_curve needs both classes with positive weight: signal "
                         f"{total_sig:g}, background {total_bkg:g}")
    order = np.argsort(-scores, kind="mergesort")
    s, sig, w = scores[order], is_sig[order], weights[order]
    tp = np.cumsum(np.where(sig, w, 0.0))
    fp = np.cumsum(np.where(sig, 0.0, w))
    # The last position of each run of equal scores is where that threshold's counts are final.
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tpr = np.r_[0.0, tp[last] / total_sig]
    fpr = np.r_[0.0, fp[last] / total_bkg]
    thresholds = np.r_[np.inf, s[last]]
    # cumsum rounding must not push the end point past 1
    return np.minimum(fpr, 1.0), np.minimum(tpr, 1.0), thresholds


def auc(fpr, tpr):
    """Area under a curve given by its points, by the trapezoidal rule.

    fpr: (K,) x coordinates, monotone (non-decreasing or non-increasing); tpr: (K,) y values.
    For a ROC curve from roc_curve this equals P(score_sig > score_bkg) + P(tie)/2 (weighted),
    the Mann-Whitney statistic. Returns a float; raises ValueError for non-monotone x.
    """
    x = np.asarray(fpr, np.float64).reshape(-1)
    y = np.asarray(tpr, np.float64).reshape(-1)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"auc needs two equal-length arrays of at least 2 points; got "
                         f"{x.size} and {y.size}")
    dx = np.diff(x)
    if np.all(dx >= 0):
        sign = 1.0
    elif np.all(dx <= 0):
        sign = -1.0
    else:
        raise ValueError("auc: x must be monotone (sorted), as a ROC curve's fpr is")
    return sign * float(np.sum(dx * (y[1:] + y[:-1]) / 2))


def roc_auc(scores, labels, weights=None):
    """Area under the (weighted) ROC curve of `scores` for `labels` (see roc_curve): 1 for a
    perfect separation, 0 for a perfectly reversed one, 0.5 for a constant score."""
    fpr, tpr, _ = roc_curve(scores, labels, weights)
    return auc(fpr, tpr)


def tpr_at_fpr(fpr, tpr, target_fpr):
    """The true-positive rate of the ROC curve at a given false-positive rate.

    fpr, tpr: a ROC curve as returned by roc_curve (fpr non-decreasing). target_fpr: a float or
    array in [0, 1]. Between two points the curve is the straight line (the operating points a
    random mix of the two thresholds reaches); where the curve has a vertical step at exactly the
    target (several points with the same fpr), the highest tpr of the step is returned: the best
    efficiency reachable without exceeding the target background rate. Returns a float for a
    scalar target, else an array.
    """
    x = np.asarray(fpr, np.float64).reshape(-1)
    y = np.asarray(tpr, np.float64).reshape(-1)
    if x.shape != y.shape or x.size < 2:
        raise ValueError("tpr_at_fpr needs a ROC curve of at least 2 points")
    if np.any(np.diff(x) < 0):
        raise ValueError("tpr_at_fpr: fpr must be non-decreasing (as roc_curve returns it)")
    t = np.asarray(target_fpr, np.float64)
    if np.any(~np.isfinite(t)) or np.any(t < x[0]) or np.any(t > x[-1]):
        raise ValueError(f"target fpr {target_fpr} outside the curve's range "
                         f"[{x[0]:g}, {x[-1]:g}]")
    flat = t.reshape(-1)
    # the last point with fpr <= target: the top of a vertical step sitting at the target
    i = np.searchsorted(x, flat, side="right") - 1
    j = np.minimum(i + 1, x.size - 1)
    span = x[j] - x[i]
    frac = np.divide(flat - x[i], span, out=np.zeros_like(flat), where=span > 0)
    out = (y[i] + frac * (y[j] - y[i])).reshape(t.shape)
    return float(out) if out.ndim == 0 else out


# -- detection -------------------------------------------------------------------------------------

def box_iou(a, b):
    """Pairwise intersection over union of boxes (ymin, xmin, ymax, xmax).

    a: (M, 4), b: (K, 4) (a single box (4,) is taken as (1, 4)). Returns (M, K). A box with no
    area has IoU 0 with everything (no division by zero).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression: indices of the boxes kept, highest score first.

    boxes: (M, 4) as (ymin, xmin, ymax, xmax); scores: (M,). A box is dropped when its IoU with a
    higher-scoring kept box exceeds iou_threshold. Equal scores keep the earlier box first.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="mergesort")
    keep = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        if not rest.size:
            break
        overlap = box_iou(boxes[best], boxes[rest])[0]
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, np.int64)


def average_precision(recall, precision):
    """Average precision with the Pascal VOC 2010+ all-points interpolation.

    recall, precision: (K,) along the ranked detections (recall non-decreasing). The precision
    envelope p_interp(r) = max_{r' >= r} p(r') makes the curve monotone; AP is the area under it,
    sum_i (r_{i+1} - r_i) p_interp(r_{i+1}), with the curve closed at recall 0 and 1 (precision 0
    beyond the last detection's recall).
    """
    r = np.r_[0.0, np.asarray(recall, np.float64).reshape(-1), 1.0]
    p = np.r_[0.0, np.asarray(precision, np.float64).reshape(-1), 0.0]
    p = np.maximum.accumulate(p[::-1])[::-1]
    step = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[step + 1] - r[step]) * p[step + 1]))


def detection_ap(detections, truths, num_classes, iou_threshold):
    """Per-class average precision and their mean (mAP) for a set of images.

    detections: one entry per image, an array (D, 6) of rows (ymin, xmin, ymax, xmax, class,
    score). truths: one entry per image, an array (T, 5) of rows (ymin, xmin, ymax, xmax, class);
    rows with class < 0 are padding (ExtremeWeather's -1 rows) and are ignored.
    Matching (Pascal VOC): per class, the detections of all images in decreasing score order;
    each looks up the true box of its class in its image that it overlaps most; it is a true
    positive when that IoU exceeds iou_threshold and the box is not yet taken, otherwise a false
    positive (so duplicates are false positives). AP per class by average_precision.
    Returns (ap, mAP): ap is (num_classes,) with NaN for a class without true boxes (it has no
    recall), mAP the mean over the other classes (NaN when there is none). A class with true
    boxes and no detections has AP 0.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    ap = np.full(num_classes, np.nan)
    dets = [np.asarray(d, np.float64).reshape(-1, 6) for d in detections]
    gts = [np.asarray(t, np.float64).reshape(-1, 5) for t in truths]
    for c in range(num_classes):
        gt_c = [g[g[:, 4] == c, :4] for g in gts]
        n_true = sum(len(g) for g in gt_c)
        if n_true == 0:
            continue
        rows = [(img, d[k, 5], d[k, :4]) for img, d in enumerate(dets)
                for k in np.nonzero(d[:, 4] == c)[0]]
        if not rows:
            ap[c] = 0.0
            continue
        order = np.argsort(-np.array([r[1] for r in rows]), kind="mergesort")
        taken = [np.zeros(len(g), bool) for g in gt_c]
        tp = np.zeros(len(rows))
        for rank, k in enumerate(order):
            img, _, box = rows[k]
            if not len(gt_c[img]):
                continue
            iou = box_iou(box, gt_c[img])[0]
            best = int(np.argmax(iou))
            if iou[best] > iou_threshold and not taken[img][best]:
                taken[img][best] = True
                tp[rank] = 1.0
        ctp = np.cumsum(tp)
        recall = ctp / n_true
        precision = ctp / np.arange(1, len(rows) + 1)
        ap[c] = average_precision(recall, precision)
    have = ~np.isnan(ap)
    return ap, (float(ap[have].mean()) if have.any() else float("nan"))
