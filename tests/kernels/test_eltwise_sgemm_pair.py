"""kernels.sgemm_pair (InnerProduct's weight and data gradients side by side at two threads):
the same floats as the two sgemm() calls one after the other, at one and two threads, for every
ISA; shape errors name the product."""
import numpy as np
import pytest

from engine import kernels
from engine import _kernels as native  # must be built: a missing module fails here


@pytest.fixture(params=[1, 2])
def threads(request):
    before = kernels.get_num_threads()
    kernels.set_num_threads(request.param)
    yield request.param
    kernels.set_num_threads(before)


def product(rng, m, n, k, trans_a, trans_b, beta):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    return a, b, c, beta, trans_a, trans_b


@pytest.mark.parametrize("shapes", [((500, 800, 64), (64, 800, 500)),   # LeNet's ip1
                                    ((10, 500, 64), (64, 500, 10)),     # LeNet's ip2
                                    ((1, 1, 1), (3, 5, 7)), ((33, 17, 129), (7, 300, 2))])
def test_sgemm_pair_equals_two_sgemm_calls(isa, threads, shapes):
    rng = np.random.default_rng(sum(shapes[0]) + sum(shapes[1]))
    first = product(rng, *shapes[0], True, False, 1.0)
    second = product(rng, *shapes[1], False, True, 0.0)
    want = []
    for a, b, c, beta, ta, tb in (first, second):
        out = c.copy()
        kernels.sgemm(a, b, out, 1.0, beta, trans_a=ta, trans_b=tb)
        want.append(out)
    kernels.sgemm_pair(first, second)
    for (_, _, got, *_), expected, which in zip((first, second), want, ("first", "second")):
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32),
                                      err_msg=f"{which} product, {isa}, {threads} threads")


def test_sgemm_pair_checks_shapes():
    rng = np.random.default_rng(0)
    good = product(rng, 4, 5, 6, False, False, 0.0)
    a, b, c, *_ = product(rng, 4, 5, 6, False, False, 0.0)
    with pytest.raises(ValueError, match=r"sgemm_pair \(second\): op\(a\) 4 x 6, op\(b\) 5 x 5"):
        native.sgemm_pair(*good[:3], 0.0, False, False, a, b[:5], c, 0.0, False, False)
    with pytest.raises(ValueError, match="the same c"):
        native.sgemm_pair(*good[:3], 0.0, False, False, a, b, good[2], 0.0, False, False)
