"""Native kernels against the numpy reference, on random seeded shapes, for every ISA this CPU and
build support (the ISA cap, kernels.set_max_isa, picks the table row; an ISA this process cannot run is
a skip that says why)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from engine import kernels
from engine.reference import im2col as ref

from engine import _kernels as native  # must be built: a missing module fails here
ISAS = kernels.runnable_isas()


def test_cpu_info_reports_the_cpu_and_isa(monkeypatch):
    kernels.set_max_isa("avx512")
    monkeypatch.delenv("CREMA_KERNELS", raising=False)
    info = kernels.cpu_info()
    assert info["logical_cores"] >= 1
    assert "scalar" in info["usable_isas"] and info["isa"] in info["usable_isas"]
    assert info["kernels"] == "native"
    assert set(info["usable_isas"]) <= set(info["built_isas"])
    assert info["usable_isas"] == [i for i in info["built_isas"] if i in info["cpu_isas"]]


def test_isa_cap_changes_the_chosen_kernel(monkeypatch):
    kernels.set_max_isa("scalar")
    assert native.cpu_info()["isa"] == "scalar"
    assert native.relu_kernel_name() == "relu_scalar"
    for isa in ISAS:
        kernels.set_max_isa(isa)
        assert native.cpu_info()["isa"] == isa
        assert native.relu_kernel_name() == f"relu_{isa}"


geometries = st.tuples(
    st.integers(1, 5),                     # channels
    st.integers(1, 13), st.integers(1, 13),  # H, W
    st.integers(1, 5), st.integers(1, 5),  # kh, kw
    st.integers(0, 2), st.integers(0, 2),  # pad
    st.integers(1, 3), st.integers(1, 3),  # stride
    st.integers(1, 2), st.integers(1, 2),  # dilation
).filter(lambda g: ref.out_size(g[1], g[3], g[5], g[7], g[9]) > 0
         and ref.out_size(g[2], g[4], g[6], g[8], g[10]) > 0)


@settings(max_examples=60, deadline=None)
@given(g=geometries, seed=st.integers(0, 2**16))
def test_im2col_and_col2im_match_reference(g, seed):
    c, h, w = g[:3]
    im = np.random.default_rng(seed).standard_normal((c, h, w)).astype(np.float32)
    rows = c * g[3] * g[4]
    cols = ref.out_size(h, g[3], g[5], g[7], g[9]) * ref.out_size(w, g[4], g[6], g[8], g[10])
    for isa in ISAS:  # im2col/col2im are portable; run them under every cap anyway
        col = np.full((rows, cols), np.nan, np.float32)
        native.im2col(im, g, col)
        expected = ref.im2col(im, g)
        np.testing.assert_array_equal(col, expected, err_msg=f"im2col {g}")
        back = np.full((c, h, w), np.nan, np.float32)
        native.col2im(col, g, back)
        np.testing.assert_allclose(back, ref.col2im(expected, g), rtol=1e-6, atol=1e-6,
                                   err_msg=f"col2im {g}")


def test_im2col_rejects_wrong_buffer_sizes():
    im = np.zeros((2, 5, 5), np.float32)
    with pytest.raises(ValueError, match="column buffer"):
        native.im2col(im, (2, 5, 5, 3, 3, 0, 0, 1, 1, 1, 1), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="kernel larger"):
        native.im2col(im, (2, 5, 5, 9, 9, 0, 0, 1, 1, 1, 1), np.zeros((1,), np.float32))
    with pytest.raises(ValueError, match="positive"):
        native.im2col(im, (2, 5, 5, 3, 3, 0, 0, 0, 1, 1, 1), np.zeros((1,), np.float32))


@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 31, 33, 1000])
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_matches_reference(isa, n, slope):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    y = np.full(n, np.nan, np.float32)
    native.relu_forward(x, y, slope)
    expected = np.where(x > 0, x, np.float32(slope) * x)
    np.testing.assert_array_equal(y, expected, err_msg=f"relu forward {isa} n={n}")
    dx = np.full(n, np.nan, np.float32)
    native.relu_backward(x, dy, dx, slope)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, np.float32(slope) * dy),
                                  err_msg=f"relu backward {isa} n={n}")
    inplace = x.copy()
    native.relu_forward(inplace, inplace, slope)
    np.testing.assert_array_equal(inplace, expected)


def test_kernels_fall_back_to_numpy_for_float64_and_reference_mode(monkeypatch):
    x = np.array([-1.0, 2.0])
    y = np.empty(2)
    kernels.relu_forward(x, y, 0.5)
    np.testing.assert_array_equal(y, [-0.5, 2.0])
    monkeypatch.setenv("CREMA_KERNELS", "reference")
    assert not kernels.native_available()
    assert kernels.cpu_info()["kernels"].startswith("reference")
    x32 = x.astype(np.float32)
    assert kernels.relu_kernel_name(x32) == "numpy"
