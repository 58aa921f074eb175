import math

import numpy as np
import pytest

import engine
from engine.errors import LayerError
from engine.io import array_to_blobproto
from engine.testing import check_gradient, layer_from_text, run_forward

FLT_MIN = float(np.finfo(np.float32).tiny)


def rng(seed):
    return np.random.default_rng(seed)


def backward_with_weight(layer, bottom, top, weight, propagate):
    """Run backward with top[0].diff = loss weight; returns the bottom diffs."""
    top[0].diff[...] = weight
    for k in range(1, len(top)):
        top[k].diff[...] = 0.0
    layer.backward(top, propagate, bottom)
    return [b.diff.copy() for b in bottom]


# ------------------------------------------------------------------------------------------
# SoftmaxWithLoss
# ------------------------------------------------------------------------------------------

def naive_softmax_loss(x, labels, ignore=None, mode="VALID"):
    """Explicit loops over (n, h, w) for an N x C x H x W input and N x H x W labels."""
    n_, c_, h_, w_ = x.shape
    labels = np.asarray(labels).reshape(n_, h_, w_)
    loss, count = 0.0, 0
    grad = np.zeros_like(x)
    for n in range(n_):
        for h in range(h_):
            for w in range(w_):
                lab = int(labels[n, h, w])
                if ignore is not None and lab == ignore:
                    continue
                col = [x[n, c, h, w] for c in range(c_)]
                m = max(col)
                z = sum(math.exp(v - m) for v in col)
                p = [math.exp(v - m) / z for v in col]
                loss -= math.log(max(p[lab], FLT_MIN))
                for c in range(c_):
                    grad[n, c, h, w] = p[c] - (1.0 if c == lab else 0.0)
                count += 1
    norm = {"FULL": n_ * h_ * w_, "VALID": count, "BATCH_SIZE": n_, "NONE": 1}[mode]
    norm = max(1.0, norm)
    return loss / norm, grad / norm


def test_softmax_loss_hand_values():
    layer = layer_from_text('name: "loss" type: "SoftmaxWithLoss"')
    x = np.array([[0.0, np.log(2.0), np.log(5.0)], [1.0, 1.0, 1.0]])
    bottom, top = run_forward(layer, [x, np.array([2.0, 0.0])])
    assert top[0].shape == ()
    expected = -(math.log(5 / 8) + math.log(1 / 3)) / 2
    assert float(top[0].data) == pytest.approx(expected, rel=1e-12)
    assert layer.is_loss
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    diffs = backward_with_weight(layer, bottom, top, 3.0, [True, False])
    np.testing.assert_allclose(
        diffs[0], 3.0 / 2 * np.array([[1 / 8, 2 / 8, 5 / 8 - 1], [1 / 3 - 1, 1 / 3, 1 / 3]]),
        rtol=1e-12)


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_softmax_loss_spatial_forward_backward_modes(mode):
    r = rng(3)
    x = r.standard_normal((2, 3, 2, 2))
    labels = r.integers(0, 3, size=(2, 2, 2)).astype(float)
    labels[0, 0, 1] = labels[1, 1, 0] = 255
    text = (f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: 255 normalization: {mode} }}')
    layer = layer_from_text(text)
    bottom, top = run_forward(layer, [x, labels])
    loss, grad = naive_softmax_loss(x, labels, ignore=255, mode=mode)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    diffs = backward_with_weight(layer, bottom, top, 0.5, [True, False])
    np.testing.assert_allclose(diffs[0], 0.5 * grad, rtol=1e-12, atol=1e-15)
    # ignored positions get exactly zero gradient in every channel
    assert np.all(diffs[0][0, :, 0, 1] == 0) and np.all(diffs[0][1, :, 1, 0] == 0)
    check_gradient(text, [x, labels], check_bottom=[0])


def test_softmax_loss_gradient_plain():
    r = rng(4)
    x = r.standard_normal((3, 4))
    check_gradient('type: "SoftmaxWithLoss"', [x, np.array([0.0, 3.0, 1.0])], check_bottom=[0])


def test_softmax_loss_label_shape_n_1_h_w():
    r = rng(5)
    x = r.standard_normal((2, 3, 2, 2))
    labels = r.integers(0, 3, size=(2, 1, 2, 2)).astype(float)
    layer = layer_from_text('type: "SoftmaxWithLoss"')
    _, top = run_forward(layer, [x, labels])
    assert float(top[0].data) == pytest.approx(naive_softmax_loss(x, labels)[0], rel=1e-12)


def test_softmax_loss_other_axis():
    # softmax over the last axis: x is N x H x C, labels N x H
    r = rng(6)
    x = r.standard_normal((2, 3, 4))
    labels = r.integers(0, 4, size=(2, 3)).astype(float)
    layer = layer_from_text('type: "SoftmaxWithLoss" softmax_param { axis: -1 }')
    _, top = run_forward(layer, [x, labels])
    loss, _ = naive_softmax_loss(np.transpose(x, (0, 2, 1))[..., None], labels[..., None])
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    check_gradient('type: "SoftmaxWithLoss" softmax_param { axis: 2 }', [x, labels],
                   check_bottom=[0])


@pytest.mark.parametrize("normalize, mode", [("true", "VALID"), ("false", "BATCH_SIZE")])
def test_softmax_loss_legacy_normalize(normalize, mode):
    r = rng(7)
    x = r.standard_normal((2, 3, 1, 2))
    labels = np.array([[0.0, 9.0], [2.0, 1.0]])
    layer = layer_from_text(f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: 9 '
                            f'normalize: {normalize} }}')
    _, top = run_forward(layer, [x, labels])
    loss, _ = naive_softmax_loss(x, labels, ignore=9, mode=mode)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)


def test_softmax_loss_normalization_overrides_normalize():
    x = rng(8).standard_normal((2, 3))
    layer = layer_from_text('type: "SoftmaxWithLoss" loss_param { normalize: false '
                            'normalization: NONE }')
    _, top = run_forward(layer, [x, np.array([1.0, 2.0])])
    loss, _ = naive_softmax_loss(x[..., None, None], [1, 2], mode="NONE")
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)


def test_softmax_loss_all_ignored_is_zero():
    layer = layer_from_text('type: "SoftmaxWithLoss" loss_param { ignore_label: -1 }')
    bottom, top = run_forward(layer, [np.ones((2, 3)), np.array([-1.0, -1.0])])
    assert float(top[0].data) == 0.0  # normalizer max(1, 0) = 1, no NaN
    diffs = backward_with_weight(layer, bottom, top, 1.0, [True, False])
    assert np.all(diffs[0] == 0)


def test_softmax_loss_two_tops():
    r = rng(9)
    x = r.standard_normal((2, 3, 2))
    labels = r.integers(0, 3, size=(2, 2)).astype(float)
    layer = layer_from_text('type: "SoftmaxWithLoss"')
    _, top = run_forward(layer, [x, labels], n_top=2)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(top[1].data, e / e.sum(axis=1, keepdims=True), rtol=1e-12)
    assert top[0].shape == () and top[1].shape == x.shape
    # only top[0] is a loss: its gradient ignores top[1]'s diff, as in Caffe
    check_gradient('type: "SoftmaxWithLoss"', [x, labels], n_top=2, check_bottom=[0],
                   top_indices=[0])


def test_softmax_loss_probability_clamped_at_flt_min():
    layer = layer_from_text('type: "SoftmaxWithLoss"')
    _, top = run_forward(layer, [np.array([[0.0, 1000.0]]), np.array([0.0])])
    assert float(top[0].data) == pytest.approx(-math.log(FLT_MIN), rel=1e-12)


@pytest.mark.parametrize("bad", [3.0, -1.0])
def test_softmax_loss_label_out_of_range(bad):
    layer = layer_from_text('type: "SoftmaxWithLoss"')
    with pytest.raises(LayerError, match=f"label value {bad:g}"):
        run_forward(layer, [np.zeros((2, 3)), np.array([0.0, bad])])


def test_softmax_loss_label_count_mismatch():
    layer = layer_from_text('type: "SoftmaxWithLoss"')
    with pytest.raises(LayerError, match=r"\(2, 3, 2\).*\(2, 3\)"):
        run_forward(layer, [np.zeros((2, 3, 2)), np.zeros((2, 3))])


def test_softmax_loss_first_dim_mismatch():
    layer = layer_from_text('type: "SoftmaxWithLoss"')
    with pytest.raises(LayerError, match=r"\(2, 3\).*\(3,\)"):
        run_forward(layer, [np.zeros((2, 3)), np.zeros((3,))])


def test_softmax_loss_rejects_label_backward():
    layer = layer_from_text('type: "SoftmaxWithLoss"')
    bottom, top = run_forward(layer, [np.zeros((2, 3)), np.zeros((2,))])
    with pytest.raises(LayerError, match="label"):
        backward_with_weight(layer, bottom, top, 1.0, [True, True])


# ------------------------------------------------------------------------------------------
# SigmoidCrossEntropyLoss
# ------------------------------------------------------------------------------------------

def naive_sigmoid_ce(x, t):
    total = 0.0
    for xi, ti in zip(np.ravel(x), np.ravel(t)):
        s = 1.0 / (1.0 + math.exp(-xi))
        total -= ti * math.log(s) + (1 - ti) * math.log(1 - s)
    return total


def test_sigmoid_ce_forward_and_gradient():
    r = rng(10)
    x = r.standard_normal((3, 2, 2)) * 2
    t = r.uniform(0, 1, size=(3, 4))  # same count, other shape
    layer = layer_from_text('type: "SigmoidCrossEntropyLoss"')
    bottom, top = run_forward(layer, [x, t])
    assert top[0].shape == ()
    assert float(top[0].data) == pytest.approx(naive_sigmoid_ce(x, t) / 3, rel=1e-12)
    diffs = backward_with_weight(layer, bottom, top, 2.0, [True, False])
    sig = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(diffs[0], 2.0 * (sig - t.reshape(x.shape)) / 3, rtol=1e-12)
    check_gradient('type: "SigmoidCrossEntropyLoss"', [x, t], check_bottom=[0])


def test_sigmoid_ce_extreme_inputs_stable():
    layer = layer_from_text('type: "SigmoidCrossEntropyLoss"')
    _, top = run_forward(layer, [np.array([[200.0, -200.0]]), np.array([[0.0, 1.0]])],
                         dtype=np.float32)
    assert float(top[0].data) == pytest.approx(400.0, rel=1e-6)


def test_sigmoid_ce_explicit_normalization_and_ignore():
    r = rng(11)
    x = r.standard_normal((2, 3))
    t = np.array([[1.0, 0.0, -1.0], [0.0, -1.0, 1.0]])
    text = ('type: "SigmoidCrossEntropyLoss" '
            'loss_param { ignore_label: -1 normalization: VALID }')
    layer = layer_from_text(text)
    bottom, top = run_forward(layer, [x, t])
    keep = t != -1
    assert float(top[0].data) == pytest.approx(naive_sigmoid_ce(x[keep], t[keep]) / 4, rel=1e-12)
    diffs = backward_with_weight(layer, bottom, top, 1.0, [True, False])
    assert np.all(diffs[0][~keep] == 0)
    check_gradient(text, [x, t], check_bottom=[0])
    layer = layer_from_text('type: "SigmoidCrossEntropyLoss" loss_param { normalization: FULL }')
    _, top = run_forward(layer, [x, np.abs(t)])
    assert float(top[0].data) == pytest.approx(naive_sigmoid_ce(x, np.abs(t)) / 6, rel=1e-12)


def test_sigmoid_ce_count_mismatch():
    layer = layer_from_text('type: "SigmoidCrossEntropyLoss"')
    with pytest.raises(LayerError, match=r"\(2, 3\).*\(2, 4\)"):
        run_forward(layer, [np.zeros((2, 3)), np.zeros((2, 4))])


# ------------------------------------------------------------------------------------------
# EuclideanLoss
# ------------------------------------------------------------------------------------------

def test_euclidean_hand_values():
    layer = layer_from_text('type: "EuclideanLoss"')
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [1.0, 1.0]])
    bottom, top = run_forward(layer, [a, b])
    assert float(top[0].data) == pytest.approx((1 + 0 + 4 + 9) / 2 / 2)
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1)
    diffs = backward_with_weight(layer, bottom, top, 2.0, [True, True])
    np.testing.assert_allclose(diffs[0], 2.0 * (a - b) / 2)
    np.testing.assert_allclose(diffs[1], -2.0 * (a - b) / 2)


def test_euclidean_gradient_both_bottoms():
    r = rng(12)
    check_gradient('type: "EuclideanLoss"', [r.standard_normal((2, 3, 2)),
                                             r.standard_normal((2, 6))], check_bottom=[0, 1])


@pytest.mark.parametrize("shape_b", [(2, 4), (3, 3)])
def test_euclidean_count_mismatch(shape_b):
    layer = layer_from_text('type: "EuclideanLoss"')
    with pytest.raises(LayerError, match=r"\(2, 3\).*" + str(shape_b).replace("(", r"\(")
                       .replace(")", r"\)")):
        run_forward(layer, [np.zeros((2, 3)), np.zeros(shape_b)])


# ------------------------------------------------------------------------------------------
# HingeLoss
# ------------------------------------------------------------------------------------------

def naive_hinge(x, labels, p):
    n_, k_ = x.shape
    total = 0.0
    for n in range(n_):
        for k in range(k_):
            delta = 1.0 if k == int(labels[n]) else -1.0
            total += max(0.0, 1.0 - delta * x[n, k]) ** p
    return total / n_


def hinge_data():
    r = rng(13)
    x = r.uniform(-0.6, 0.6, size=(3, 4))
    labels = np.array([1.0, 0.0, 3.0])
    x[0, 2] = -2.0  # inactive non-label entry (1 + x < 0)
    x[2, 3] = 2.5   # inactive label entry (1 - x < 0)
    return x, labels


@pytest.mark.parametrize("norm, p", [("L1", 1), ("L2", 2)])
def test_hinge_forward_and_gradient(norm, p):
    x, labels = hinge_data()
    text = f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}'
    layer = layer_from_text(text)
    bottom, top = run_forward(layer, [x, labels])
    assert float(top[0].data) == pytest.approx(naive_hinge(x, labels, p), rel=1e-12)
    diffs = backward_with_weight(layer, bottom, top, 1.0, [True, False])
    assert diffs[0][0, 2] == 0 and diffs[0][2, 3] == 0
    check_gradient(text, [x, labels], check_bottom=[0])


def test_hinge_default_is_l1_hand_value():
    layer = layer_from_text('type: "HingeLoss"')
    # row 0: label 0: max(0, 1 - 0.5) + max(0, 1 + 0.2) = 1.7 ; row 1: label 1: 0.9 + 1.0
    _, top = run_forward(layer, [np.array([[0.5, 0.2], [0.0, 0.1]]), np.array([0.0, 1.0])])
    assert float(top[0].data) == pytest.approx((1.7 + 1.9) / 2)


def test_hinge_label_out_of_range():
    layer = layer_from_text('type: "HingeLoss"')
    with pytest.raises(LayerError, match="label value 4"):
        run_forward(layer, [np.zeros((2, 4)), np.array([1.0, 4.0])])


# ------------------------------------------------------------------------------------------
# ContrastiveLoss
# ------------------------------------------------------------------------------------------

def naive_contrastive(a, b, y, margin, legacy):
    total = 0.0
    for i in range(a.shape[0]):
        d2 = sum((a[i, c] - b[i, c]) ** 2 for c in range(a.shape[1]))
        if int(y[i]):
            total += d2
        elif legacy:
            total += max(margin - d2, 0.0)
        else:
            total += max(margin - math.sqrt(d2), 0.0) ** 2
    return total / a.shape[0] / 2


def contrastive_data():
    r = rng(14)
    a = r.uniform(-0.4, 0.4, size=(4, 3, 1, 1))
    b = r.uniform(-0.4, 0.4, size=(4, 3, 1, 1))
    b[3] = a[3] + 2.0  # a dissimilar pair beyond the margin: no loss, no gradient
    y = np.array([1.0, 0.0, 0.0, 0.0])
    return a, b, y


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_forward(legacy):
    a, b, y = contrastive_data()
    layer = layer_from_text('type: "ContrastiveLoss" contrastive_loss_param { margin: 1.5 '
                            f'legacy_version: {str(legacy).lower()} }}')
    bottom, top = run_forward(layer, [a, b, y])
    expected = naive_contrastive(a.reshape(4, 3), b.reshape(4, 3), y, 1.5, legacy)
    assert float(top[0].data) == pytest.approx(expected, rel=1e-6)  # margin is a float32
    assert layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    diffs = backward_with_weight(layer, bottom, top, 1.0, [True, True, False])
    assert np.all(diffs[0][3] == 0) and np.all(diffs[1][3] == 0)


def test_contrastive_gradient_legacy():
    a, b, y = contrastive_data()
    check_gradient('type: "ContrastiveLoss" contrastive_loss_param { legacy_version: true '
                   'margin: 1.5 }', [a, b, y], check_bottom=[0, 1])


def test_contrastive_gradient_new():
    a, b, y = contrastive_data()
    # Caffe divides by (d + 1e-4) instead of d, so the analytic gradient is off by ~1e-4 / d
    # relative to the exact derivative: a 1e-3 tolerance covers it (d ~ 0.5 here).
    check_gradient('type: "ContrastiveLoss" contrastive_loss_param { margin: 1.5 }',
                   [a, b, y], check_bottom=[0, 1], rtol=1e-3)


def test_contrastive_new_gradient_uses_caffe_epsilon():
    a = np.array([[0.3, 0.0]])
    b = np.array([[0.0, 0.4]])
    layer = layer_from_text('type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }')
    bottom, top = run_forward(layer, [a, b, np.array([0.0])])
    assert float(top[0].data) == pytest.approx((2 - 0.5) ** 2 / 2)
    diffs = backward_with_weight(layer, bottom, top, 1.0, [True, True, False])
    beta = -(2 - 0.5) / (0.5 + 1e-4)
    np.testing.assert_allclose(diffs[0], beta * (a - b), rtol=1e-12)
    np.testing.assert_allclose(diffs[1], -beta * (a - b), rtol=1e-12)


def test_contrastive_shape_errors():
    layer = layer_from_text('type: "ContrastiveLoss"')
    with pytest.raises(LayerError, match=r"\(2, 3\).*\(2, 4\)"):
        run_forward(layer, [np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2)])
    layer = layer_from_text('type: "ContrastiveLoss"')
    with pytest.raises(LayerError, match=r"\(2, 3\).*\(3,\)"):
        run_forward(layer, [np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3)])
    layer = layer_from_text('type: "ContrastiveLoss"')
    with pytest.raises(LayerError, match=r"\(2, 3, 2\)"):
        run_forward(layer, [np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.zeros(2)])


# ------------------------------------------------------------------------------------------
# MultinomialLogisticLoss (probability inputs)
# ------------------------------------------------------------------------------------------

def probabilities(seed, n, k):
    p = rng(seed).uniform(0.1, 1.0, size=(n, k))
    return p / p.sum(axis=1, keepdims=True)


def test_multinomial_logistic_forward_and_gradient():
    p = probabilities(15, 3, 4)
    labels = np.array([2.0, 0.0, 3.0])
    layer = layer_from_text('type: "MultinomialLogisticLoss"')
    bottom, top = run_forward(layer, [p, labels])
    expected = -(math.log(p[0, 2]) + math.log(p[1, 0]) + math.log(p[2, 3])) / 3
    assert float(top[0].data) == pytest.approx(expected, rel=1e-12)
    diffs = backward_with_weight(layer, bottom, top, 1.5, [True, False])
    want = np.zeros_like(p)
    want[[0, 1, 2], [2, 0, 3]] = -1.5 / 3 / p[[0, 1, 2], [2, 0, 3]]
    np.testing.assert_allclose(diffs[0], want, rtol=1e-12)
    check_gradient('type: "MultinomialLogisticLoss"', [p.reshape(3, 4, 1, 1), labels],
                   check_bottom=[0])


def test_multinomial_logistic_zero_probability_clamped():
    layer = layer_from_text('type: "MultinomialLogisticLoss"')
    _, top = run_forward(layer, [np.array([[0.0, 1.0]]), np.array([0.0])])
    assert float(top[0].data) == pytest.approx(-math.log(1e-20), rel=1e-12)


def test_multinomial_logistic_errors():
    layer = layer_from_text('type: "MultinomialLogisticLoss"')
    with pytest.raises(LayerError, match="label value 2"):
        run_forward(layer, [np.full((2, 2), 0.5), np.array([0.0, 2.0])])
    layer = layer_from_text('type: "MultinomialLogisticLoss"')
    with pytest.raises(LayerError, match=r"\(2, 2\).*\(2, 2\)"):
        run_forward(layer, [np.full((2, 2), 0.5), np.zeros((2, 2))])


# ------------------------------------------------------------------------------------------
# InfogainLoss (Caffe 1.0: scores, an internal softmax over infogain_loss_param.axis)
# ------------------------------------------------------------------------------------------

def naive_infogain(x, labels, H, axis=1, ignore=None, mode="VALID"):
    """Explicit loops over every position of `x` outside `axis`; returns the loss and its
    gradient per unit loss weight, from the definition (softmax, clamped log, normalizer)."""
    xm = np.moveaxis(np.asarray(x, float), axis, -1)
    k_ = xm.shape[-1]
    positions = xm.reshape(-1, k_)
    labels = np.asarray(labels).reshape(-1)
    H = np.asarray(H, float).reshape(k_, k_)
    loss, count = 0.0, 0
    grad = np.zeros_like(positions)
    for i, col in enumerate(positions):
        lab = int(labels[i])
        if ignore is not None and lab == ignore:
            continue
        m = max(col)
        z = sum(math.exp(v - m) for v in col)
        p = [math.exp(v - m) / z for v in col]
        for k in range(k_):
            loss -= H[lab, k] * math.log(max(p[k], 1e-20))
        row_sum = sum(H[lab, j] for j in range(k_))
        for k in range(k_):
            grad[i, k] = p[k] * row_sum - H[lab, k]
        count += 1
    outer = int(np.prod(np.shape(x)[:axis % np.ndim(x)]))
    norm = {"FULL": positions.shape[0], "VALID": count, "BATCH_SIZE": outer, "NONE": 1}[mode]
    norm = max(1.0, norm)
    grad = np.moveaxis(grad.reshape(xm.shape), -1, axis)
    return loss / norm, grad / norm


def infogain_matrix(seed, k):
    return rng(seed).uniform(0.0, 1.0, size=(k, k))


def test_infogain_third_bottom_forward_and_gradient():
    x = rng(16).standard_normal((3, 4))
    labels = np.array([1.0, 3.0, 0.0])
    H = infogain_matrix(17, 4).reshape(1, 1, 4, 4)
    layer = layer_from_text('type: "InfogainLoss"')
    bottom, top = run_forward(layer, [x, labels, H])
    loss, grad = naive_infogain(x, labels, H)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    diffs = backward_with_weight(layer, bottom, top, 2.0, [True, False, False])
    np.testing.assert_allclose(diffs[0], 2.0 * grad, rtol=1e-10, atol=1e-14)
    check_gradient('type: "InfogainLoss"', [x, labels, H], check_bottom=[0])


def test_infogain_identity_equals_softmax_with_loss():
    x = rng(18).standard_normal((2, 3, 2, 2))
    labels = rng(18).integers(0, 3, size=(2, 2, 2)).astype(float)
    _, lt = run_forward(layer_from_text('type: "InfogainLoss"'), [x, labels, np.eye(3)])
    _, st = run_forward(layer_from_text('type: "SoftmaxWithLoss"'), [x, labels])
    assert float(lt[0].data) == pytest.approx(float(st[0].data), rel=1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 3, 3), (3, 3), (9,)])
def test_infogain_source_file(tmp_path, shape):
    H = np.array([[1.0, 0.5, 0.0], [0.25, 1.0, 0.5], [0.0, 0.75, 2.0]], np.float32)
    path = tmp_path / "H.binaryproto"
    path.write_bytes(array_to_blobproto(H.reshape(shape)).SerializeToString())
    x = rng(19).standard_normal((2, 3))
    labels = np.array([0.0, 2.0])
    text = f'type: "InfogainLoss" infogain_loss_param {{ source: "{path}" }}'
    _, top = run_forward(layer_from_text(text), [x, labels])
    assert float(top[0].data) == pytest.approx(naive_infogain(x, labels, H)[0], rel=1e-12)
    check_gradient(text, [x, labels], check_bottom=[0])


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_infogain_normalization_and_ignore_label(mode):
    x = rng(22).standard_normal((2, 3, 2, 3))
    labels = np.array([[[0, 2, -1], [1, -1, 2]], [[2, 2, 0], [-1, 1, 0]]], float)
    H = infogain_matrix(23, 3)
    text = f'type: "InfogainLoss" loss_param {{ ignore_label: -1 normalization: {mode} }}'
    layer = layer_from_text(text)
    bottom, top = run_forward(layer, [x, labels, H])
    loss, grad = naive_infogain(x, labels, H, ignore=-1, mode=mode)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    diffs = backward_with_weight(layer, bottom, top, 0.5, [True, False, False])
    np.testing.assert_allclose(diffs[0], 0.5 * grad, rtol=1e-10, atol=1e-14)
    assert np.all(diffs[0][1, :, 1, 0] == 0.0)  # an ignored position gets no gradient
    check_gradient(text, [x, labels, H], check_bottom=[0])


def test_infogain_default_normalization_is_valid():
    x = rng(24).standard_normal((2, 3, 2))
    labels = np.array([[0.0, 5.0], [5.0, 1.0]])
    H = infogain_matrix(25, 3)
    _, top = run_forward(layer_from_text('type: "InfogainLoss" loss_param { ignore_label: 5 }'),
                         [x, labels, H])
    assert float(top[0].data) == pytest.approx(
        naive_infogain(x, labels, H, ignore=5, mode="VALID")[0], rel=1e-12)


def test_infogain_all_ignored_is_zero_loss_and_gradient():
    layer = layer_from_text('type: "InfogainLoss" loss_param { ignore_label: 0 }')
    bottom, top = run_forward(layer, [rng(26).standard_normal((2, 3)), np.zeros(2), np.eye(3)])
    assert float(top[0].data) == 0.0
    diffs = backward_with_weight(layer, bottom, top, 1.0, [True, False, False])
    assert np.all(diffs[0] == 0.0)


@pytest.mark.parametrize("axis", [2, -1])
def test_infogain_axis(axis):
    x = rng(27).standard_normal((2, 3, 4))  # 4 classes on the last axis
    labels = rng(28).integers(0, 4, size=(2, 3)).astype(float)
    H = infogain_matrix(29, 4)
    text = f'type: "InfogainLoss" infogain_loss_param {{ axis: {axis} }}'
    layer = layer_from_text(text)
    bottom, top = run_forward(layer, [x, labels, H])
    loss, grad = naive_infogain(x, labels, H, axis=2)
    assert float(top[0].data) == pytest.approx(loss, rel=1e-12)
    # the same positions with the classes moved to axis 1 give the same loss
    _, moved = run_forward(layer_from_text('type: "InfogainLoss"'),
                           [np.moveaxis(x, 2, 1), labels, H])
    assert float(moved[0].data) == pytest.approx(loss, rel=1e-12)
    diffs = backward_with_weight(layer, bottom, top, 1.0, [True, False, False])
    np.testing.assert_allclose(diffs[0], grad, rtol=1e-10, atol=1e-14)
    check_gradient(text, [x, labels, H], check_bottom=[0])


def test_infogain_second_top_is_the_softmax_and_takes_no_gradient():
    x = rng(30).standard_normal((2, 3, 2))
    labels = np.array([[0.0, 2.0], [1.0, 1.0]])
    H = infogain_matrix(31, 3)
    layer = layer_from_text('type: "InfogainLoss"')
    bottom, top = run_forward(layer, [x, labels, H], n_top=2)
    assert top[1].shape == x.shape
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(top[1].data, e / e.sum(axis=1, keepdims=True), rtol=1e-12)
    top[0].diff[...] = 1.0
    top[1].diff[...] = 7.0  # Caffe ignores any gradient arriving at the probabilities
    layer.backward(top, [True, False, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, naive_infogain(x, labels, H)[1],
                               rtol=1e-10, atol=1e-14)
    check_gradient('type: "InfogainLoss"', [x, labels, H], n_top=2, check_bottom=[0],
                   top_indices=[0])


def test_infogain_in_a_net_with_both_tops(tmp_path):
    """The probabilities top has loss weight 0 in a net, and the loss reaches the scores."""
    path = tmp_path / "net.prototxt"
    path.write_text("""force_backward: true
layer { name: "in" type: "Input" top: "x" top: "label" top: "H"
        input_param { shape { dim: 2 dim: 3 dim: 2 } shape { dim: 2 dim: 2 }
                      shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }
layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" bottom: "H"
        top: "loss" top: "prob" loss_param { ignore_label: 1 normalization: FULL } }
""")
    net = engine.Net(str(path), engine.TRAIN)
    x = rng(32).standard_normal((2, 3, 2))
    labels = np.array([[0.0, 1.0], [2.0, 2.0]])
    H = infogain_matrix(33, 3)
    net.blobs["x"].data[...] = x
    net.blobs["label"].data[...] = labels
    net.blobs["H"].data[...] = H.reshape(1, 1, 3, 3)
    out = net.forward()
    loss, grad = naive_infogain(x, labels, H, ignore=1, mode="FULL")
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["prob"] == 0.0
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1.0, rtol=1e-6)
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, grad, rtol=1e-4, atol=1e-6)


def test_infogain_clamps_the_log_at_1e_20():
    # p = (1, e^-1000) underflows to (1, 0): the loss for H[0] = (0, 1) is -log(1e-20)
    _, top = run_forward(layer_from_text('type: "InfogainLoss"'),
                         [np.array([[0.0, -1000.0]]), np.array([0.0]),
                          np.array([[0.0, 1.0], [0.0, 0.0]])])
    assert float(top[0].data) == pytest.approx(-math.log(1e-20), rel=1e-12)


def test_infogain_errors(tmp_path):
    x = rng(20).standard_normal((2, 3))
    labels = np.array([0.0, 1.0])
    with pytest.raises(LayerError, match="source"):
        run_forward(layer_from_text('type: "InfogainLoss"'), [x, labels])
    missing = tmp_path / "nope.binaryproto"
    with pytest.raises(LayerError, match="nope.binaryproto"):
        run_forward(layer_from_text(f'type: "InfogainLoss" infogain_loss_param '
                                    f'{{ source: "{missing}" }}'), [x, labels])
    with pytest.raises(LayerError, match=r"\(2, 2\) \(4 values\).* 3 classes.*3 x 3"):
        run_forward(layer_from_text('type: "InfogainLoss"'), [x, labels, np.eye(2)])
    with pytest.raises(LayerError, match="label value 3"):
        run_forward(layer_from_text('type: "InfogainLoss"'), [x, np.array([3.0, 0.0]),
                                                                np.eye(3)])
    with pytest.raises(LayerError, match=r"number of labels .* needs 4 labels.* has 2"):
        run_forward(layer_from_text('type: "InfogainLoss"'),
                    [rng(20).standard_normal((2, 3, 2)), labels, np.eye(3)])
    with pytest.raises(LayerError, match=r"infogain_loss_param.axis: axis 2 out of range"):
        run_forward(layer_from_text('type: "InfogainLoss" infogain_loss_param { axis: 2 }'),
                    [x, labels, np.eye(3)])
    for legacy in ("true", "false"):
        with pytest.raises(LayerError, match=r"normalize is deprecated.*normalization"):
            run_forward(layer_from_text(f'type: "InfogainLoss" loss_param {{ normalize: '
                                        f'{legacy} }}'), [x, labels, np.eye(3)])
    layer = layer_from_text('type: "InfogainLoss"')
    bottom, top = run_forward(layer, [x, labels, np.eye(3)])
    with pytest.raises(LayerError, match=r"cannot backpropagate to label input bottom\[1\]"):
        layer.backward(top, [True, True, False], bottom)
    with pytest.raises(LayerError, match=r"infogain matrix input bottom\[2\]"):
        layer.backward(top, [True, False, True], bottom)


# ------------------------------------------------------------------------------------------
# Accuracy
# ------------------------------------------------------------------------------------------

SCORES = np.array([[0.1, 0.5, 0.4],    # ranks: 1, 2, 0
                   [0.9, 0.05, 0.05],  # ranks: 0, then 2 before 1 (tie: larger index first)
                   [0.2, 0.3, 0.5],    # ranks: 2, 1, 0
                   [0.3, 0.3, 0.4]])   # ranks: 2, then 1 before 0


def accuracy(text, x, labels, n_top=1):
    _, top = run_forward(layer_from_text(f'type: "Accuracy" {text}'), [x, labels], n_top=n_top)
    return top


def test_accuracy_top1():
    top = accuracy("", SCORES, np.array([1.0, 0.0, 1.0, 2.0]))
    assert top[0].shape == ()
    assert float(top[0].data) == pytest.approx(3 / 4)


def test_accuracy_top2():
    top = accuracy("accuracy_param { top_k: 2 }", SCORES, np.array([0.0, 1.0, 1.0, 0.0]))
    # row 0: label 0 ranks 3rd -> wrong; row 1: label 1 ranks 3rd (tie lost to 2) -> wrong;
    # row 2: label 1 ranks 2nd -> right; row 3: label 0 ranks 3rd (tie lost to 1) -> wrong
    assert float(top[0].data) == pytest.approx(1 / 4)


def test_accuracy_ties_prefer_larger_index():
    x = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    top = accuracy("", x, np.array([1.0, 0.0]))
    assert float(top[0].data) == pytest.approx(1 / 2)  # class 1 wins the tie, class 0 loses
    top = accuracy("accuracy_param { top_k: 2 }", x, np.array([1.0, 0.0]))
    assert float(top[0].data) == pytest.approx(1.0)


def test_accuracy_ignore_label_and_per_class():
    labels = np.array([1.0, -1.0, 2.0, 2.0])
    top = accuracy("accuracy_param { ignore_label: -1 }", SCORES, labels, n_top=2)
    # counted rows 0 (right), 2 (right), 3 (right)
    assert float(top[0].data) == pytest.approx(1.0)
    assert top[1].shape == (3,)
    np.testing.assert_allclose(top[1].data, [0.0, 1.0, 1.0])
    top = accuracy("", SCORES, np.array([1.0, 0.0, 0.0, 0.0]), n_top=2)
    assert float(top[0].data) == pytest.approx(2 / 4)
    np.testing.assert_allclose(top[1].data, [1 / 3, 1.0, 0.0])


def test_accuracy_all_ignored_is_nan():
    top = accuracy("accuracy_param { ignore_label: 7 }", SCORES, np.full(4, 7.0))
    assert np.isnan(float(top[0].data))


def test_accuracy_spatial_axis():
    r = rng(21)
    x = r.standard_normal((2, 3, 2, 2))
    labels = r.integers(0, 3, size=(2, 2, 2)).astype(float)
    top = accuracy("", x, labels)
    expected = np.mean(np.argmax(x, axis=1) == labels)
    assert float(top[0].data) == pytest.approx(expected)
    xt = np.transpose(x, (0, 2, 3, 1))  # classes on the last axis
    top = accuracy("accuracy_param { axis: -1 }", xt, labels)
    assert float(top[0].data) == pytest.approx(expected)


def test_accuracy_errors_and_no_backward():
    with pytest.raises(LayerError, match="top_k"):
        accuracy("accuracy_param { top_k: 4 }", SCORES, np.zeros(4))
    with pytest.raises(LayerError, match=r"\(4, 3\).*\(3,\)"):
        accuracy("", SCORES, np.zeros(3))
    with pytest.raises(LayerError, match="label value 3"):
        accuracy("", SCORES, np.array([0.0, 3.0, 0.0, 0.0]))
    layer = layer_from_text('type: "Accuracy"')
    bottom, top = run_forward(layer, [SCORES, np.zeros(4)])
    assert not layer.is_loss
    layer.backward(top, [False, False], bottom)  # nothing requested: fine
    with pytest.raises(LayerError, match="gradient"):
        layer.backward(top, [True, False], bottom)


def test_loss_layers_registered_with_scalar_tops():
    for name in ["SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss", "HingeLoss",
                 "ContrastiveLoss", "InfogainLoss", "MultinomialLogisticLoss", "Accuracy"]:
        assert name in engine.layer_type_list()
    layer = layer_from_text('type: "EuclideanLoss"')
    _, top = run_forward(layer, [np.ones((2, 2)), np.zeros((2, 2))], dtype=np.float32)
    assert top[0].shape == () and top[0].count == 1 and top[0].data.dtype == np.float32
    assert float(top[0].data) == pytest.approx(1.0)


# SoftmaxWithLoss with per-sample weights (crema extension: bottom[2])
def _weighted_reference(x, labels, w, mode):
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    nll = -np.log(p[np.arange(len(labels)), labels.astype(int)])
    norm = {"VALID": w.sum(), "FULL": w.sum(), "BATCH_SIZE": len(labels), "NONE": 1.0}[mode]
    return float((w * nll).sum() / norm)


@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_softmax_loss_sample_weights(mode):
    r = rng(11)
    x = r.standard_normal((5, 2))
    labels = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    w = np.array([0.5, 2.0, 0.0, 1.5, 0.25])
    text = f'type: "SoftmaxWithLoss" loss_param {{ normalization: {mode} }}'
    _, top = run_forward(layer_from_text(text), [x, labels, w])
    assert float(top[0].data) == pytest.approx(_weighted_reference(x, labels, w, mode), rel=1e-10)
    check_gradient(text, [x, labels, w], check_bottom=[0])


def test_softmax_loss_integer_weights_equal_repeated_samples():
    r = rng(12)
    x = r.standard_normal((3, 3))
    labels = np.array([2.0, 0.0, 1.0])
    _, weighted = run_forward(layer_from_text('type: "SoftmaxWithLoss"'),
                              [x, labels, np.array([2.0, 1.0, 3.0])])
    reps = [0, 0, 1, 2, 2, 2]
    _, repeated = run_forward(layer_from_text('type: "SoftmaxWithLoss"'), [x[reps], labels[reps]])
    assert float(weighted[0].data) == pytest.approx(float(repeated[0].data), rel=1e-12)


def test_softmax_loss_sample_weights_refused_when_bad():
    x = np.zeros((2, 2))
    with pytest.raises(LayerError, match="one weight per label"):
        run_forward(layer_from_text('type: "SoftmaxWithLoss"'), [x, np.zeros(2), np.ones(3)])
    with pytest.raises(LayerError, match="finite and non-negative"):
        run_forward(layer_from_text('type: "SoftmaxWithLoss"'),
                    [x, np.zeros(2), np.array([1.0, -1.0])])
