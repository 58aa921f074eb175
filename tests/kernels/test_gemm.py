"""SGEMM (engine.kernels.sgemm) against float64 numpy on random seeded shapes, for every ISA this
CPU and build support, and the InnerProduct layer's float32 (native) path against its float64
(numpy) path."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine import kernels
from engine.testing import layer_from_text, run_forward

from engine import _kernels as native  # must be built: a missing module fails here
ISAS = kernels.runnable_isas()


def _operands(rng, m, n, k, ta, tb, pad):
    """op(a) m x k, op(b) k x n as float32 arrays; pad > 0 makes them row-strided views."""
    def mat(r, c):
        full = rng.standard_normal((r, c + pad)).astype(np.float32)
        return full[:, :c]
    a = mat(k, m) if ta else mat(m, k)
    b = mat(n, k) if tb else mat(k, n)
    return a, b


def _check(c, want, k, what):
    # float32 accumulation over k terms of unit-variance products: error ~ sqrt(k) * eps * |.|
    tol = 1e-5 * (4 + np.sqrt(k)) * (1 + np.abs(want))
    bad = np.argwhere(~(np.abs(c - want) <= tol))
    assert bad.size == 0, (f"{what}: {len(bad)} wrong, first at {tuple(bad[0])}: "
                           f"got {c[tuple(bad[0])]}, want {want[tuple(bad[0])]}")


def test_every_isa_has_a_kernel(monkeypatch):
    names = set()
    for i in ISAS:
        kernels.set_max_isa(i)
        name = native.sgemm_kernel_name()
        assert name.startswith(f"sgemm_{i}_")
        names.add(name)
    assert len(names) == len(ISAS)


# The fixture only sets the ISA cap, which every generated example should share.
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 300), n=st.integers(1, 300), k=st.integers(1, 300),
       ta=st.booleans(), tb=st.booleans(), pad=st.sampled_from([0, 0, 3]),
       alpha=st.sampled_from([1.0, -0.5, 2.0]), beta=st.sampled_from([0.0, 1.0, 0.25]),
       seed=st.integers(0, 2**16))
def test_sgemm_matches_float64(isa, m, n, k, ta, tb, pad, alpha, beta, seed):
    rng = np.random.default_rng(seed)
    a, b = _operands(rng, m, n, k, ta, tb, pad)
    c_full = rng.standard_normal((m, n + pad)).astype(np.float32)
    c = c_full[:, :n]
    c0 = c.astype(np.float64)
    if beta == 0.0:
        c[...] = np.nan  # garbage that beta == 0 must ignore
    if pad:
        c_full[:, n:] = 7.0
    oa = (a.T if ta else a).astype(np.float64)
    ob = (b.T if tb else b).astype(np.float64)
    want = alpha * (oa @ ob) + (beta * c0 if beta != 0.0 else 0.0)
    assert kernels.sgemm_kernel_name(a, b, c) == native.sgemm_kernel_name()
    kernels.sgemm(a, b, c, alpha, beta, trans_a=ta, trans_b=tb)
    _check(c, want, k, f"{isa} m={m} n={n} k={k} ta={ta} tb={tb} alpha={alpha} beta={beta}")
    if pad:  # the padding between rows is untouched
        assert np.all(c_full[:, n:] == 7.0)


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 500, 3), (700, 1, 5), (15, 33, 1000),
                                   (29, 65, 385), (337, 97, 769)])
def test_sgemm_block_edges(isa, m, n, k):
    """Sizes around the tiles and the KC/MC blocks (several K slices accumulate into C)."""
    rng = np.random.default_rng(m * n + k)
    for ta in (False, True):
        for tb in (False, True):
            a, b = _operands(rng, m, n, k, ta, tb, 0)
            c = np.full((m, n), np.nan, np.float32)
            kernels.sgemm(a, b, c, trans_a=ta, trans_b=tb)
            want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
            _check(c, want, k, f"{isa} m={m} n={n} k={k} ta={ta} tb={tb}")


def test_sgemm_with_threads(isa):
    old = kernels.get_num_threads()
    try:
        kernels.set_num_threads(3)
        rng = np.random.default_rng(5)
        a, b = _operands(rng, 131, 517, 413, False, True, 0)
        c = rng.standard_normal((131, 517)).astype(np.float32)
        want = a.astype(np.float64) @ b.T.astype(np.float64) + 0.5 * c
        kernels.sgemm(a, b, c, 1.0, 0.5, trans_b=True)
        _check(c, want, 413, f"{isa} 3 threads")
    finally:
        kernels.set_num_threads(old)


def test_sgemm_zero_k_and_zero_alpha_scale_c(isa):
    a = np.zeros((4, 0), np.float32)
    b = np.zeros((0, 5), np.float32)
    c = np.full((4, 5), 2.0, np.float32)
    kernels.sgemm(a, b, c, 1.0, 0.5)
    np.testing.assert_array_equal(c, 1.0)
    c[...] = np.nan
    kernels.sgemm(a, b, c, 1.0, 0.0)
    np.testing.assert_array_equal(c, 0.0)
    a2 = np.ones((4, 3), np.float32)
    b2 = np.ones((3, 5), np.float32)
    c[...] = 4.0
    kernels.sgemm(a2, b2, c, 0.0, 0.5)
    np.testing.assert_array_equal(c, 2.0)


def test_sgemm_rejects_bad_arguments():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="does not fit|product is"):
        native.sgemm(a, b, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"op\(b\)"):
        native.sgemm(a, b, np.ones((3, 5), np.float32), trans_b=True)
    with pytest.raises(ValueError, match="float32"):
        native.sgemm(a.astype(np.float64), b, np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        native.sgemm(a, b, np.ones(15, np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        native.sgemm(np.ones((3, 8), np.float32)[:, ::2], b, np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="writeable"):
        c = np.ones((3, 5), np.float32)
        c.flags.writeable = False
        native.sgemm(a, b, c)
    with pytest.raises(ValueError, match="does not fit"):
        kernels.sgemm(a.astype(np.float64), b, np.ones((3, 4), np.float32))


def test_sgemm_numpy_fallback_for_float64():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 7))
    b = rng.standard_normal((5, 3))
    c = np.full((7, 3), np.nan)
    assert kernels.sgemm_kernel_name(a, b, c) == "numpy"
    kernels.sgemm(a, b, c, 2.0, 0.0, trans_a=True)
    np.testing.assert_allclose(c, 2.0 * a.T @ b)


# -- InnerProduct: float32 (native SGEMM) against float64 (numpy) ----------------------------

def _ip_text(extra):
    return ('name: "ip" type: "InnerProduct" inner_product_param { num_output: 37 '
            'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } '
            f'{extra} }}')


@pytest.mark.parametrize("extra", ["", "transpose: true", "axis: 2", "axis: 2 transpose: true",
                                   "bias_term: false"])
def test_inner_product_float32_matches_float64(isa, extra):
    x64 = np.random.default_rng(3).standard_normal((3, 5, 7, 2))
    l64 = layer_from_text(_ip_text(extra))
    b64, t64 = run_forward(l64, [x64], seed=4)
    assert l64.kernel == "numpy"
    l32 = layer_from_text(_ip_text(extra))
    b32, t32 = run_forward(l32, [x64], dtype=np.float32, seed=4)
    assert l32.kernel == native.sgemm_kernel_name()
    for p32, p64 in zip(l32.blobs, l64.blobs):  # the same weights in both precisions
        p32.data[...] = p64.data
    l32.forward(b32, t32)
    k = l64.K
    _check(t32[0].data.astype(np.float64), t64[0].data, k, f"{isa} {extra!r} forward")

    dy = np.random.default_rng(5).standard_normal(t64[0].shape)
    for top, bottom, layer in ((t64, b64, l64), (t32, b32, l32)):
        top[0].diff[...] = dy
        for p in layer.blobs:
            p.diff[...] = 1.0  # parameter gradients accumulate
        layer.backward(top, [True], bottom)
    _check(b32[0].diff.astype(np.float64), b64[0].diff, l64.N, f"{isa} {extra!r} bottom diff")
    for i, (p32, p64) in enumerate(zip(l32.blobs, l64.blobs)):
        _check(p32.diff.astype(np.float64), p64.diff, l64.M, f"{isa} {extra!r} blob {i} diff")


def test_inner_product_reference_mode_uses_numpy(monkeypatch):
    monkeypatch.setenv("CREMA_KERNELS", "reference")
    layer = layer_from_text(_ip_text(""))
    run_forward(layer, [np.ones((2, 3))], dtype=np.float32)
    assert layer.kernel == "numpy"
