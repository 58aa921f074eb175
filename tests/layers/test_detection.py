"""YoloDetectionLoss: value by hand, gradient checks (labeled, unlabeled and weighted images), box
encoding and decoding, parameters."""
import numpy as np
import pytest

from engine.errors import LayerError
from engine.layers.detection import decode_predictions, encode_targets
from engine.testing.gradcheck import check_gradient, layer_from_text, run_forward

LAYER = 'type: "YoloDetectionLoss" python_param { param_str: "%s" }'
DEFAULT = LAYER % "{'stride': 8, 'prior': 8}"


def batch(seed=0, n=3, gh=3, gw=4):
    g = np.random.default_rng(seed)
    pred = g.normal(size=(n, 9, gh, gw))
    boxes = -np.ones((n, 4, 5))
    boxes[0, 0] = [2, 3, 12, 9, 1]      # centre (7, 6): cell (0, 0)
    boxes[0, 1] = [10, 20, 22, 30, 3]   # centre (16, 25): cell (2, 3)
    boxes[2, 0] = [0, 8, 6, 14, 0]      # centre (3, 11): cell (0, 1)
    boxes[2, 1] = [9, 1, 12, 4, 2]      # centre (10.5, 2.5): cell (1, 0)
    return pred, boxes


def test_gradient_with_labeled_unlabeled_and_weighted_images():
    pred, boxes = batch()
    check_gradient(DEFAULT, [pred, boxes, np.array([1.0, 0.0, 1.0])], check_bottom=[0])
    check_gradient(DEFAULT, [pred, boxes, np.array([0.3, 1.0, 2.5])], check_bottom=[0])
    check_gradient(DEFAULT, [pred, boxes], check_bottom=[0])  # no weights: all labeled
    other = LAYER % ("{'coord': 2, 'size': 3, 'obj': 1.5, 'noobj': 0.2, 'cls': 0.7, "
                     "'obj_prior': 0.01}")
    check_gradient(other, [pred * 3, boxes, np.array([1.0, 1.0, 0.0])], check_bottom=[0])


def test_unlabeled_images_add_nothing():
    pred, boxes = batch()
    w = np.array([1.0, 0.0, 1.0])
    layer = layer_from_text(DEFAULT)
    bottom, top = run_forward(layer, [pred, boxes, w])
    base = float(top[0].data)
    pred2 = pred.copy()
    pred2[1] = np.random.default_rng(9).normal(size=pred[1].shape) * 10
    _, top2 = run_forward(layer_from_text(DEFAULT), [pred2, boxes, w])
    assert float(top2[0].data) == pytest.approx(base, rel=1e-12)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False, False], bottom)
    assert np.all(bottom[0].diff[1] == 0) and np.any(bottom[0].diff[0] != 0)
    # dropping the unlabeled image from the batch changes nothing either (per-labeled-image mean)
    _, top3 = run_forward(layer_from_text(DEFAULT), [pred[[0, 2]], boxes[[0, 2]], w[[0, 2]]])
    assert float(top3[0].data) == pytest.approx(base, rel=1e-12)
    # no labeled image at all: zero loss, zero gradient
    layer0 = layer_from_text(DEFAULT)
    bottom0, top0 = run_forward(layer0, [pred, boxes, np.zeros(3)])
    assert float(top0[0].data) == 0.0
    top0[0].diff[...] = 1.0
    layer0.backward(top0, [True, False, False], bottom0)
    assert np.all(bottom0[0].diff == 0)


def softplus(x):
    return np.log1p(np.exp(x))


def test_loss_value_by_hand():
    # one image, a 1 x 2 grid of 8-px cells, one box in the second cell
    pred = np.zeros((1, 9, 1, 2))
    pred[0, 0] = [0.5, -1.0]                   # objectness logits
    pred[0, 1:5, 0, 1] = [0.0, 2.0, 0.0, 0.0]  # class logits of the object cell
    pred[0, 5:, 0, 1] = [0.25, 0.5, 2.0, 0.1]  # ty, tx, th, tw
    boxes = -np.ones((1, 2, 5))
    boxes[0, 0] = [1, 10, 5, 18, 1]  # centre (3, 14): cell (0, 1), offsets (3/8, 6/8); 4 x 8 px
    ty, tx, th, tw = 3 / 8, 6 / 8, np.log(4 / 8), np.log(8 / 8)

    def sl1(d):
        return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
    coord = 5 * (sl1(0.25 - ty) + sl1(0.5 - tx))
    size = 7 * (sl1(2.0 - th) + sl1(0.1 - tw))
    obj = softplus(1.0)            # -log sigmoid(-1)
    noobj = 0.5 * softplus(0.5)    # -log(1 - sigmoid(0.5))
    logits = np.array([0.0, 2.0, 0.0, 0.0])
    cls = -(logits[1] - np.log(np.exp(logits).sum()))
    layer = layer_from_text(DEFAULT)
    _, top = run_forward(layer, [pred, boxes, np.ones(1)], n_top=2)
    assert float(top[0].data) == pytest.approx(coord + size + obj + noobj + cls, rel=1e-12)
    np.testing.assert_allclose(top[1].data, [coord, size, obj, noobj, cls], rtol=1e-12)


def test_objectness_prior_offsets_the_logit():
    pred, boxes = batch()
    plain = layer_from_text(DEFAULT)
    _, t0 = run_forward(plain, [pred, boxes], n_top=2)
    shifted = pred.copy()
    offset = np.log(0.01 / 0.99)
    shifted[:, 0] -= offset  # the same probabilities, expressed with the prior's offset
    prior = layer_from_text(LAYER % "{'obj_prior': 0.01}")
    _, t1 = run_forward(prior, [shifted, boxes], n_top=2)
    np.testing.assert_allclose(t1[1].data, t0[1].data, rtol=1e-10)
    a = decode_predictions(pred, 8.0, 8.0, 4, score_threshold=0.0)
    b = decode_predictions(shifted, 8.0, 8.0, 4, score_threshold=0.0, obj_prior=0.01)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-10)
    # a zero output means p_obj = obj_prior
    zero = np.zeros((1, 9, 1, 1))
    d = decode_predictions(zero, 8.0, 8.0, 4, score_threshold=0.0, obj_prior=0.01)
    assert d[0][0, 5] == pytest.approx(0.01 * 0.25)


def test_encode_decode_round_trip_and_one_box_per_cell():
    boxes = -np.ones((2, 5, 5))
    boxes[0, 0] = [10.0, 20.0, 26.0, 50.0, 3]
    boxes[0, 1] = [40.0, 3.0, 47.0, 11.0, 1]
    boxes[1, 0] = [0.5, 0.5, 7.5, 7.5, 0]
    boxes[1, 1] = [1.0, 1.0, 6.0, 5.0, 2]  # same cell as the previous, smaller: ignored
    obj, cls, t = encode_targets(boxes, (6, 9), 8.0, 8.0, 4)
    assert obj.sum() == 3 and obj[1, 0, 0] == 1 and cls[1, 0, 0] == 0
    pred = np.zeros((2, 9, 6, 9))
    pred[:, 0] = np.where(obj > 0, 12.0, -12.0)
    onehot = np.eye(4)[cls].transpose(0, 3, 1, 2)
    pred[:, 1:5] = 12.0 * onehot
    pred[:, 5:] = t
    dets = decode_predictions(pred, 8.0, 8.0, 4, score_threshold=0.5)
    assert [len(d) for d in dets] == [2, 1]
    got = sorted(map(tuple, np.round(dets[0][:, :5], 9)))
    want = sorted(map(tuple, boxes[0, :2]))
    np.testing.assert_allclose(got, want, atol=1e-9)
    np.testing.assert_allclose(dets[1][0, :5], boxes[1, 0], atol=1e-9)
    assert np.all(dets[0][:, 5] > 0.99)
    # a perfect prediction has loss close to 0 for coordinates and classes
    layer = layer_from_text(DEFAULT)
    _, top = run_forward(layer, [pred, boxes], n_top=2)
    assert np.all(top[1].data < 1e-3)


def test_bad_inputs_raise_layer_errors():
    pred, boxes = batch()
    with pytest.raises(LayerError, match="obj_prior"):
        run_forward(layer_from_text(LAYER % "{'obj_prior': 1.0}"), [pred, boxes])
    with pytest.raises(LayerError, match="unknown keys"):
        run_forward(layer_from_text(LAYER % "{'gamma': 2}"), [pred, boxes])
    with pytest.raises(LayerError, match=r"expected \(N, 9, Gh, Gw\)"):
        run_forward(layer_from_text(DEFAULT), [pred[:, :8], boxes])
    with pytest.raises(LayerError, match="labeled weights"):
        run_forward(layer_from_text(DEFAULT), [pred, boxes, np.ones(2)])
    bad = boxes.copy()
    bad[0, 0, 4] = 7
    with pytest.raises(LayerError, match="class values"):
        run_forward(layer_from_text(DEFAULT), [pred, bad])
    with pytest.raises(LayerError, match="non-negative"):
        run_forward(layer_from_text(DEFAULT), [pred, boxes, np.array([1.0, -1.0, 1.0])])
