"""engine.metrics on hand-built cases: weighted ROC/AUC, TPR at a fixed FPR, IoU, NMS, VOC AP/mAP."""
import numpy as np
import pytest

from engine.metrics import (auc, average_precision, box_iou, detection_ap, nms, roc_auc,
                            roc_curve, tpr_at_fpr)


# -- ROC -------------------------------------------------------------------------------------------

def test_roc_perfect_reversed_and_constant():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], labels) == 0.5  # all tied: the diagonal


def test_roc_points_by_hand():
    # ranked: sig .9, bkg .8, sig .7, bkg .6
    fpr, tpr, thr = roc_curve([0.6, 0.9, 0.7, 0.8], [0, 1, 1, 0])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.8, 0.7, 0.6])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    # 3 of the 4 (signal, background) pairs are ordered correctly
    assert auc(fpr, tpr) == pytest.approx(0.75)


def test_roc_ties_form_one_threshold_whatever_the_order():
    a = roc_curve([0.5, 0.5, 0.9], [1, 0, 1])
    b = roc_curve([0.5, 0.5, 0.9], [0, 1, 1])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    fpr, tpr, thr = a
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.5])
    np.testing.assert_array_equal(fpr, [0, 0, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1])
    # the tie counts half: 1 pair won, 1 pair tied -> (1 + 0.5) / 2
    assert auc(fpr, tpr) == pytest.approx(0.75)


def test_auc_is_the_weighted_mann_whitney_statistic():
    g = np.random.default_rng(3)
    scores = np.round(g.normal(size=60), 1)  # rounding makes many ties
    labels = (g.uniform(size=60) < 0.4).astype(int)
    labels[:2] = [0, 1]
    w = g.uniform(0.1, 3.0, 60)
    s, b = labels == 1, labels == 0
    diff = scores[s][:, None] - scores[b][None, :]
    pair_w = w[s][:, None] * w[b][None, :]
    expect = (np.sum(pair_w * (diff > 0)) + 0.5 * np.sum(pair_w * (diff == 0))) / pair_w.sum()
    assert roc_auc(scores, labels, w) == pytest.approx(expect, rel=1e-12)


def test_integer_weights_equal_duplicated_samples():
    g = np.random.default_rng(7)
    scores = g.uniform(size=25)
    labels = np.r_[0, 1, (g.uniform(size=23) < 0.5).astype(int)]
    counts = g.integers(1, 5, 25)
    fw, tw, hw = roc_curve(scores, labels, counts.astype(float))
    fd, td, hd = roc_curve(np.repeat(scores, counts), np.repeat(labels, counts))
    np.testing.assert_allclose(fw, fd, rtol=1e-12)
    np.testing.assert_allclose(tw, td, rtol=1e-12)
    np.testing.assert_array_equal(hw, hd)
    # a zero weight removes the event
    w = np.ones(25)
    w[5] = 0.0
    assert roc_auc(scores, labels, w) == pytest.approx(
        roc_auc(np.delete(scores, 5), np.delete(labels, 5)))


def test_roc_rejects_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        roc_curve([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        roc_curve([0.1, 0.2], [0, 1], [1.0, -1.0])
    with pytest.raises(ValueError, match="0 .background. or 1"):
        roc_curve([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="monotone"):
        auc([0, 0.5, 0.2], [0, 1, 1])


def test_tpr_at_fpr_interpolates_and_takes_the_top_of_a_step():
    fpr = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    tpr = np.array([0.0, 0.5, 0.5, 1.0, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.0) == 0.5        # vertical step at 0: its top
    assert tpr_at_fpr(fpr, tpr, 0.25) == 0.5       # flat segment
    assert tpr_at_fpr(fpr, tpr, 0.5) == 1.0        # vertical step at 0.5
    f2, t2 = np.array([0.0, 0.2, 1.0]), np.array([0.0, 0.6, 1.0])
    assert tpr_at_fpr(f2, t2, 0.1) == pytest.approx(0.3)  # on the straight line
    assert tpr_at_fpr(f2, t2, 0.6) == pytest.approx(0.8)
    np.testing.assert_allclose(tpr_at_fpr(f2, t2, [0.1, 0.6, 1.0]), [0.3, 0.8, 1.0])
    with pytest.raises(ValueError, match="outside"):
        tpr_at_fpr(f2, t2, 1.5)


# -- detection -------------------------------------------------------------------------------------

def test_box_iou_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    # overlap 5x10 = 50, union 150
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 1 / 3, 0.0, 0.0]])
    assert box_iou(b, a).shape == (4, 1)


def test_nms_keeps_the_best_of_each_cluster():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 1, 10, 11]])
    scores = np.array([0.6, 0.9, 0.5, 0.3])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2])
    # a high threshold suppresses nothing: all kept, by decreasing score
    np.testing.assert_array_equal(nms(boxes, scores, 0.95), [1, 0, 2, 3])


def test_average_precision_all_points_by_hand():
    # ranked: TP, FP, TP with 2 true boxes -> recall .5 .5 1, precision 1 .5 2/3
    ap = average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3])
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert average_precision([0.5], [1.0]) == pytest.approx(0.5)  # half found, perfectly


def test_detection_ap_matching_duplicates_thresholds_and_padding():
    pad = [-1, -1, -1, -1, -1]
    truths = [np.array([[0, 0, 10, 10, 0], [20, 20, 30, 30, 0], pad, pad]),
              np.array([[0, 0, 40, 40, 2], pad])]
    dets = [np.array([[0, 0, 10, 10, 0, 0.9],     # TP
                      [0, 0, 10, 10, 0, 0.8],     # duplicate -> FP
                      [20, 22, 30, 32, 0, 0.7],   # IoU 80/120 = 2/3 -> TP
                      [0, 0, 10, 10, 1, 0.95]]),  # class 1 has no truth: ignored
            np.array([[0, 0, 20, 20, 2, 0.5]])]   # IoU 400/1600 = 0.25
    ap, m = detection_ap(dets, truths, num_classes=4, iou_threshold=0.1)
    assert ap[0] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert np.isnan(ap[1]) and np.isnan(ap[3])
    assert ap[2] == pytest.approx(1.0)
    assert m == pytest.approx((ap[0] + ap[2]) / 2)
    ap5, m5 = detection_ap(dets, truths, num_classes=4, iou_threshold=0.5)
    assert ap5[0] == pytest.approx(ap[0]) and ap5[2] == 0.0  # 0.25 fails the stricter test
    assert m5 == pytest.approx(ap[0] / 2)


def test_detection_ap_wrong_class_and_missing_detections():
    truths = [np.array([[0, 0, 10, 10, 3]])]
    ap, m = detection_ap([np.array([[0, 0, 10, 10, 1, 0.9]])], truths, 4, 0.5)
    assert ap[3] == 0.0 and m == 0.0  # right place, wrong class: nothing found
    ap, m = detection_ap([np.zeros((0, 6))], truths, 4, 0.5)
    assert ap[3] == 0.0
