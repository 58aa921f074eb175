"""The solver's native passes over the parameter arena (crema/eltwise.h: sgd_update, all_finite)
against numpy, for every ISA: the SGD step must give numpy's floats bit for bit (Caffe's float32
operations, one rounding each, in Caffe's order), on random sizes (vector tails, several
threaded blocks) and on special values."""
import numpy as np
import pytest

from engine import kernels
from engine import _kernels as native  # must be built: a missing module fails here

F = np.float32


def numpy_sgd(data, diff, history, lr_mult, decay_mult, diff_scale, weight_decay,
              regularization, rate, momentum, apply):
    """The reference: one float32 numpy operation per step of Caffe's SGD, in its order."""
    g = diff * F(diff_scale) if F(diff_scale) != 1 else diff.copy()
    if regularization is not None:
        local_decay = decay_mult * F(weight_decay)
        g = g + local_decay * (data if regularization == "L2" else np.sign(data))
    h = history * F(momentum) + (lr_mult * F(rate)) * g
    return (data - h if apply else data.copy()), h, h.copy()


def random_arena(rng, n):
    scale = F(10.0) ** rng.integers(-6, 3, n).astype(F)  # magnitudes where rounding shows
    return (rng.standard_normal(n).astype(F) * scale, rng.standard_normal(n).astype(F) * scale,
            rng.standard_normal(n).astype(F) * scale,
            rng.choice([0.0, 1.0, 2.0, 0.37], n).astype(F),
            rng.choice([0.0, 1.0, 0.5], n).astype(F))


def bits(a):
    return a.view(np.uint32)


SIZES = [1, 7, 15, 16, 17, 31, 33, 1000, 16384, 16385, 70001]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("regularization", [None, "L2", "L1"])
def test_sgd_update_matches_numpy_bit_for_bit(isa, n, regularization):
    rng = np.random.default_rng(n)
    for diff_scale, apply in ((1.0, True), (F(1) / F(3), False)):
        data, diff, history, lr_mult, decay_mult = random_arena(rng, n)
        params = dict(diff_scale=diff_scale, weight_decay=F(5e-4), regularization=regularization,
                      rate=F(0.0123), momentum=F(0.9), apply=apply)
        want_data, want_diff, want_history = numpy_sgd(data, diff, history, lr_mult, decay_mult,
                                                       **params)
        assert kernels.sgd_update(data, diff, history, lr_mult, decay_mult, **params)
        what = f"{isa} n={n} {regularization} scale={diff_scale} apply={apply}"
        np.testing.assert_array_equal(bits(diff), bits(want_diff), err_msg=f"diff {what}")
        np.testing.assert_array_equal(bits(history), bits(want_history), err_msg=f"h {what}")
        np.testing.assert_array_equal(bits(data), bits(want_data), err_msg=f"data {what}")


@pytest.mark.parametrize("regularization", [None, "L2", "L1"])
def test_sgd_update_special_values_follow_numpy(isa, regularization):
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3.4e38, 3.4e38, 1.0, -2.0],
                       F)
    # every pair (data, diff) of special values, with zero and non-zero multipliers and history
    data, diff = (a.ravel() for a in np.meshgrid(special, special))
    data, diff = np.tile(data, 4), np.tile(diff, 4)
    n = data.size
    lr_mult = np.repeat(F([0, 1, 2, 0]), n // 4)
    decay_mult = np.repeat(F([0, 1, 0, 1]), n // 4)
    history = np.resize(special[::-1], n).astype(F)
    params = dict(diff_scale=1.0, weight_decay=F(0.01), regularization=regularization,
                  rate=F(0.1), momentum=F(0.9), apply=True)
    with np.errstate(all="ignore"):
        want = numpy_sgd(data, diff, history, lr_mult, decay_mult, **params)
    assert kernels.sgd_update(data, diff, history, lr_mult, decay_mult, **params)
    for got, expected, name in zip((data, diff, history), want, ("data", "diff", "history")):
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} {isa} {regularization}")
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(np.signbit(got[finite]), np.signbit(expected[finite]),
                                      err_msg=f"{name} zero signs {isa} {regularization}")


def test_sgd_update_rejects_mismatched_sizes_and_codes():
    a, b = np.zeros(8, F), np.zeros(9, F)
    with pytest.raises(ValueError, match="differ in size"):
        native.sgd_update(a, a.copy(), a.copy(), a.copy(), b, 1.0, 0.0, 0, 0.1, 0.9, True)
    with pytest.raises(ValueError, match="regularization must be"):
        native.sgd_update(a, a.copy(), a.copy(), a.copy(), a.copy(), 1.0, 0.0, 3, 0.1, 0.9, True)


def test_sgd_update_declines_arrays_it_cannot_take():
    """float64 or strided arrays: the wrapper leaves them alone and says so (the solver then runs
    its numpy rule)."""
    x = np.ones(16)
    assert not kernels.sgd_update(x, x.copy(), x.copy(), x.copy(), x.copy(), diff_scale=1.0,
                                  weight_decay=0.0, regularization=None, rate=0.1, momentum=0.9,
                                  apply=True)
    assert np.all(x == 1)


@pytest.mark.parametrize("n", SIZES)
def test_all_finite_finds_every_non_finite_value(isa, n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-3e38, 3e38, n).astype(F)  # large but finite: their float32 sum overflows
    assert kernels.all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        for where in {0, n - 1, int(rng.integers(0, n))}:
            y = x.copy()
            y[where] = bad
            assert not kernels.all_finite(y), f"{isa} n={n} {bad} at {where}"
    assert kernels.all_finite(np.zeros(0, F))


def test_solver_kernel_follows_the_isa_cap(isa):
    assert kernels.solver_kernel_name(np.zeros(1, F)) == f"solver_{isa}"
