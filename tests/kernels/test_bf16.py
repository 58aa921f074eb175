"""bf16 kernels (kernels/include/crema/bf16.h) against numpy references, every table row.

Tolerances (stated, and why they hold):
- float32 -> bf16 conversion: bit-exact against engine.reference.bf16 (round to nearest even,
  denormals to signed zero, NaN quiet) for every row.
- GEMM: the reference is float64 on the bf16-rounded operands, so the only error left is the
  float32 accumulation: |c - ref| <= 2 * k * 2^-24 * (|alpha| |op(A)| @ |op(B)| + |beta c|)
  elementwise (the standard gamma_k bound, with a factor 2 for the epilogue's roundings).
- Convolution passes, the direct VDPBF16PS row and the im2col + bf16 GEMM row (the latter
  under every ISA cap): the same bound with k the length of each output's sum (C/G*R*S + 1
  forward, K/G*R*S data gradient, N*P*Q + 1 weight gradient), the magnitudes from the float64
  convolution of the absolute values; the fused ReLU is 1-Lipschitz, so the forward bound holds
  after it too.
- The Winograd row (forward and data gradient) rounds the transformed input V and filter U to
  bf16, not x and w, so its reference is engine.reference.winograd in float64 with V and U
  rounded (`operands`). The kernel computes V and U in float32 first, so an element close to a
  bf16 rounding boundary may round the other way (one bf16 step, a few in a hundred thousand):
  against that reference the RMS difference is at most 1e-3 of the output's RMS and the largest
  5e-2 of it (a wrong layout or lost term gives order 1). Its accuracy against the exact float64
  convolution, stated and checked: RMS error at most 3e-2 of the output's RMS (measured 1.2-1.7e-2
  for unit-variance data, seven times the direct bf16 rows' 2.4e-3: the F(4x4) transforms
  amplify the operands' rounding, see kernels/src/bf16/winograd_bf16_avx512bf16.cpp).
"""
import numpy as np
import pytest

from engine import bf16, kernels
from engine.reference import bf16 as ref
from engine.reference import winograd as rw

GEMM_ROWS = ("bf16gemm_avx512_bf16_14x32", "bf16gemm_avx512_12x32", "bf16gemm_avx2_4x16",
             "bf16gemm_scalar_4x8")
CONVERT_ROWS = ("to_bf16_avx512_bf16", "to_bf16_avx512", "to_bf16_avx2", "to_bf16_scalar")
EPS32 = 2.0 ** -24


def _row_or_skip(op, name):
    rows = {r[0]: r for r in (bf16.conv_rows(op) if op in bf16.CONV_OPS else bf16.rows(op))}
    if name not in rows:
        pytest.skip(f"this build of engine._kernels has no {name} (compiler or platform)")
    _, isa, runnable = rows[name]
    width = "avx512" if isa == "avx512_bf16" else isa  # the cap is on vector widths
    reason = kernels.isa_skip_reason(width)
    if reason is not None:
        pytest.skip(reason)
    if not runnable:
        info = kernels.cpu_info()
        pytest.skip(f"this CPU ({info['model'] or info['vendor']}) lacks {isa}")
    return name


def _special_floats(rng):
    tiny = rng.standard_normal(300).astype(np.float32) * np.float32(1e-39)  # denormals
    normal = rng.standard_normal(3000).astype(np.float32) * np.float32(10.0) ** rng.integers(
        -30, 30, 3000).astype(np.float32)
    # exact ties (low 16 bits 0x8000) on both parities, overflow to inf, specials
    ties = (rng.integers(0, 1 << 16, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    ties = ties[np.isfinite(ties)]
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4e38, -3.4e38,
                        np.finfo(np.float32).tiny, 1e-45], dtype=np.float32)
    return np.concatenate([tiny, normal, ties, special])


@pytest.mark.parametrize("row", CONVERT_ROWS)
def test_conversion_rounds_to_nearest_even_bit_exact(row):
    _row_or_skip("convert", row)
    x = _special_floats(np.random.default_rng(1))
    for n in (x.size, 1, 15, 17, 33):  # vector tails
        got = bf16.to_bf16(x[:n], row=row)
        np.testing.assert_array_equal(got, ref.to_bf16(x[:n]), err_msg=f"{row} n={n}")
    np.testing.assert_array_equal(bf16.from_bf16(ref.to_bf16(x)).view(np.uint32),
                                  ref.round_bf16(x).view(np.uint32))


def _gemm_case(rng, m, n, k, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return ref.to_bf16(a), ref.to_bf16(b)


def _check_gemm(row, m, n, k, trans_a, trans_b, alpha, beta, seed):
    rng = np.random.default_rng(seed)
    a, b = _gemm_case(rng, m, n, k, trans_a, trans_b)
    fa, fb = ref.from_bf16(a).astype(np.float64), ref.from_bf16(b).astype(np.float64)
    opa, opb = (fa.T if trans_a else fa), (fb.T if trans_b else fb)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c = c0.copy()
    bf16.gemm(a, b, c, alpha, beta, trans_a, trans_b, row=row)
    want = alpha * (opa @ opb) + (beta * c0 if beta != 0.0 else 0.0)
    bound = 2 * max(k, 1) * EPS32 * (abs(alpha) * (np.abs(opa) @ np.abs(opb)) +
                                     abs(beta) * np.abs(c0)) + 1e-30
    err = np.abs(c - want)
    assert np.all(err <= bound), (f"{row} {m}x{n}x{k} ta={trans_a} tb={trans_b}: worst error "
                                  f"{err.max():.3g}, bound there {bound.flat[err.argmax()]:.3g}")


@pytest.mark.parametrize("row", GEMM_ROWS)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_gemm_matches_float64_reference_on_random_shapes(row, trans_a, trans_b):
    _row_or_skip("gemm", row)
    rng = np.random.default_rng(7)
    shapes = [(1, 1, 1), (3, 5, 2), (14, 32, 64), (15, 33, 65)]
    shapes += [tuple(int(v) for v in rng.integers(1, 90, 3)) for _ in range(4)]
    shapes += [(40, 70, 1100)]  # more than one k block (KC) for every row
    for i, (m, n, k) in enumerate(shapes):
        alpha, beta = [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)][i % 3]
        _check_gemm(row, m, n, k, trans_a, trans_b, alpha, beta, seed=i)


@pytest.mark.parametrize("row", GEMM_ROWS)
def test_gemm_beta_zero_ignores_garbage_and_k_zero_scales(row):
    _row_or_skip("gemm", row)
    a = np.zeros((4, 3), np.uint16)
    b = ref.to_bf16(np.ones((3, 5), np.float32))
    c = np.full((4, 5), np.nan, np.float32)
    bf16.gemm(a, b, c, 1.0, 0.0, row=row)
    np.testing.assert_array_equal(c, 0.0)
    c = np.ones((4, 5), np.float32)
    bf16.gemm(np.zeros((4, 0), np.uint16), np.zeros((0, 5), np.uint16), c, 1.0, 3.0, row=row)
    np.testing.assert_array_equal(c, 3.0)


def test_rows_are_all_listed_and_the_cap_chooses_them(isa):
    names = [r[0] for r in bf16.rows("gemm")]
    assert names[-1] == "bf16gemm_scalar_4x8" and set(names) <= set(GEMM_ROWS)
    chosen = bf16.kernel_name("gemm")
    if isa == "avx512":  # VDPBF16PS where the CPU has it, the AVX-512F fallback otherwise
        has_bf16 = kernels.cpu_info()["avx512_bf16"] and GEMM_ROWS[0] in names
        assert chosen == (GEMM_ROWS[0] if has_bf16 else GEMM_ROWS[1])
    else:
        assert chosen == f"bf16gemm_{isa}_" + ("4x16" if isa == "avx2" else "4x8")
    assert bf16.kernel_name("convert").endswith(chosen.split("_", 1)[1].rsplit("_", 1)[0])


def test_gemm_refuses_bad_arguments():
    a = np.zeros((3, 4), np.uint16)
    with pytest.raises(ValueError, match="op\\(a\\) is 3 x 4 but op\\(b\\) is 5 x 2"):
        bf16.gemm(a, np.zeros((5, 2), np.uint16), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="c is 2 x 2, the product is 3 x 2"):
        bf16.gemm(a, np.zeros((4, 2), np.uint16), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="c must be a C-contiguous float32"):
        bf16.gemm(a, np.zeros((4, 2), np.uint16), np.zeros((3, 2), np.float64))
    with pytest.raises(ValueError, match="no row named 'nope'"):
        bf16.gemm(a, np.zeros((4, 2), np.uint16), np.zeros((3, 2), np.float32), row="nope")


# -- convolution ---------------------------------------------------------------------------------

CONV_ROWS = ("bf16conv_direct_avx512_bf16", "bf16conv_im2col_gemm")
CONV_CASES = [
    # N, C, H, W, K, R, S, ph, pw, sh, sw, dh, dw, G
    (2, 5, 9, 8, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    (1, 4, 11, 10, 6, 3, 2, 0, 1, 2, 3, 1, 2, 2),
    (3, 3, 7, 7, 4, 1, 1, 0, 0, 1, 1, 1, 1, 1),
    (1, 16, 12, 12, 8, 5, 5, 2, 2, 1, 1, 1, 1, 4),
    # several 16-channel blocks with tails on both sides, odd output width, a 14-pixel tile
    # plus a tail, a 2-block output tile plus a 1-block one
    (2, 37, 6, 17, 41, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    (1, 3, 30, 31, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1),  # first layer: 3 channels (2 pairs)
    (2, 34, 9, 11, 20, 3, 3, 0, 2, 2, 1, 2, 1, 2),  # row stride, dilation, groups, pad > crop
    (1, 32, 5, 5, 48, 3, 3, 3, 3, 1, 1, 1, 1, 1),  # pad larger than the data gradient's border
]


def _f64(geometry, fn, *arrays):
    """engine.kernels' numpy convolution (it runs on float64 arrays) of float64 copies."""
    return fn(*(None if a is None else np.array(a, dtype=np.float64) for a in arrays),
              geometry)


def _conv_data(geometry):
    n, c, h, w, k, r, s, ph, pw, sh, sw, dh, dw, g = geometry
    p, q = kernels.conv_output_hw(geometry)
    rng = np.random.default_rng(sum(geometry))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // g, r, s)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    dy = rng.standard_normal((n, k, p, q)).astype(np.float32)
    return x, wt, bias, dy


def _ref_fwd(geometry, x, wt, bias):
    n, k = geometry[0], geometry[4]
    p, q = kernels.conv_output_hw(geometry)

    def fwd(xx, ww, bb, geo):
        y = np.zeros((n, k, p, q))
        kernels.conv_forward(xx, ww, bb, y, geo)
        return y
    want = _f64(geometry, fwd, ref.round_bf16(x), ref.round_bf16(wt), bias)
    size = _f64(geometry, fwd, np.abs(ref.round_bf16(x)), np.abs(ref.round_bf16(wt)),
                np.abs(bias))
    return want, 2 * (wt[0].size + 1) * EPS32 * size + 1e-30


def _supported(op, row, geometry):
    """Whether `row` supports the geometry (else forcing it is refused, checked here)."""
    n, c, h, w, k, r, s, ph, pw, sh, sw, dh, dw, g = geometry
    if row != CONV_ROWS[0] or op == "fwd":
        return True
    return sw == 1 and (op == "bwd_weights" or sh == 1)


@pytest.mark.parametrize("geometry", CONV_CASES)
@pytest.mark.parametrize("row", CONV_ROWS)
def test_conv_rows_match_reference_on_bf16_operands(isa, row, geometry):
    _row_or_skip("fwd", row)
    n, c, h, w, k, r, s, ph, pw, sh, sw, dh, dw, g = geometry
    p, q = kernels.conv_output_hw(geometry)
    x, wt, bias, dy = _conv_data(geometry)
    xr, wr, dyr = ref.round_bf16(x), ref.round_bf16(wt), ref.round_bf16(dy)
    scratch = bf16.ConvScratch()

    def bwd_data(dd, ww, geo):
        dx = np.zeros((n, c, h, w))
        kernels.conv_backward_data(dd, ww, dx, geo)
        return dx

    def bwd_weights(xx, dd, geo):
        dwt = np.zeros((k, c // g, r, s))
        kernels.conv_backward_weights(xx, dd, dwt, None, geo)
        return dwt

    y = np.full((n, k, p, q), np.nan, np.float32)
    bf16.conv_forward(x, wt, bias, y, geometry, scratch, row=row)
    want, bound = _ref_fwd(geometry, x, wt, bias)
    assert np.all(np.abs(y - want) <= bound), f"{row} forward"

    dx = np.full((n, c, h, w), np.nan, np.float32)
    if _supported("bwd_data", row, geometry):
        bf16.conv_backward_data(dy, wt, dx, geometry, scratch, row=row)
        want = _f64(geometry, bwd_data, dyr, wr)
        bound = 2 * (k // g * r * s) * EPS32 * _f64(geometry, bwd_data, np.abs(dyr), np.abs(wr))
        assert np.all(np.abs(dx - want) <= bound + 1e-30), f"{row} backward data"
    else:
        with pytest.raises(ValueError, match="does not support this geometry"):
            bf16.conv_backward_data(dy, wt, dx, geometry, scratch, row=row)

    rng = np.random.default_rng(3)
    dw0 = rng.standard_normal((k, c // g, r, s)).astype(np.float32)
    db0 = rng.standard_normal(k).astype(np.float32)
    dwt, db = dw0.copy(), db0.copy()
    if _supported("bwd_weights", row, geometry):
        bf16.conv_backward_weights(x, dy, dwt, db, geometry, scratch, row=row)
        want = dw0 + _f64(geometry, bwd_weights, xr, dyr)
        bound = 2 * (n * p * q + 1) * EPS32 * (np.abs(dw0) + _f64(geometry, bwd_weights,
                                                                   np.abs(xr), np.abs(dyr)))
        assert np.all(np.abs(dwt - want) <= bound + 1e-30), f"{row} backward weights"
        # the bias gradient is float32 (dy itself, not its bf16 rounding)
        np.testing.assert_allclose(db, db0 + dy.astype(np.float64).sum(axis=(0, 2, 3)),
                                   rtol=1e-5, atol=1e-5)
    else:
        with pytest.raises(ValueError, match="does not support this geometry"):
            bf16.conv_backward_weights(x, dy, dwt, db, geometry, scratch, row=row)


@pytest.mark.parametrize("row", CONV_ROWS)
def test_conv_forward_fuses_relu_and_repacks_only_changed_weights(isa, row):
    _row_or_skip("fwd", row)
    geometry = CONV_CASES[4]
    n, k = geometry[0], geometry[4]
    p, q = kernels.conv_output_hw(geometry)
    x, wt, bias, _ = _conv_data(geometry)
    scratch = bf16.ConvScratch()
    y = np.empty((n, k, p, q), np.float32)
    bf16.conv_forward(x, wt, bias, y, geometry, scratch, relu_slope=0.25, row=row)
    want, bound = _ref_fwd(geometry, x, wt, bias)
    want = np.maximum(want, 0) + 0.25 * np.minimum(want, 0)
    assert np.all(np.abs(y - want) <= bound), f"{row} forward with ReLU"
    # the same weights again give the same bits (from the cache where the row keeps one) ...
    again = np.empty_like(y)
    bf16.conv_forward(x, wt, bias, again, geometry, scratch, relu_slope=0.25, row=row)
    np.testing.assert_array_equal(again, y)
    # ... and a changed weight is seen (one element: the cache compares every bit)
    wt[k - 1, 0, 1, 1] += 1.0
    bf16.conv_forward(x, wt, bias, y, geometry, scratch, relu_slope=0.25, row=row)
    want, bound = _ref_fwd(geometry, x, wt, bias)
    want = np.maximum(want, 0) + 0.25 * np.minimum(want, 0)
    assert np.all(np.abs(y - want) <= bound), f"{row} forward after a weight change"


def test_conv_rows_are_listed_and_chosen_by_rule(isa):
    for op in bf16.CONV_OPS:
        names = [r[0] for r in bf16.conv_rows(op)]
        assert names[-1] == CONV_ROWS[1]
        assert set(names) <= set(CONV_ROWS + (WINOGRAD_ROW, GEMM_RULE_ROW) + FP32_FEWC_ROWS)
    direct = (isa == "avx512" and kernels.cpu_info()["avx512_bf16"]
              and CONV_ROWS[0] in [r[0] for r in bf16.conv_rows("fwd")])
    unit, strided = CONV_CASES[0], CONV_CASES[1]
    assert bf16.conv_kernel_name("fwd", strided) == CONV_ROWS[0 if direct else 1]
    # 5 -> 7 channels: mostly channel padding for the direct kernel, so the GEMM rule's row
    assert bf16.conv_kernel_name("bwd_data", unit) == ("bf16conv_gemm_rule" if direct else
                                                       CONV_ROWS[1])
    # stride 2 (no direct row): im2col, by the rule's row where it holds (it does here)
    assert bf16.conv_kernel_name("bwd_data", strided) == ("bf16conv_gemm_rule" if direct else
                                                          CONV_ROWS[1])
    assert bf16.conv_kernel_name("bwd_weights", strided) == CONV_ROWS[1]  # sw 3: im2col
    # a 128-channel 3x3 layer (the HEP net's): Winograd where the float32 rule picks it, which
    # pins it per geometry (and across ranks); a geometry forced to direct gets the direct row
    hep = (2, 128, 16, 16, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1)
    winograd = direct and WINOGRAD_ROW in [r[0] for r in bf16.conv_rows("fwd")]
    for op in bf16.CONV_OPS:
        assert bf16.conv_kernel_name(op, hep) == (WINOGRAD_ROW if winograd else
                                                  CONV_ROWS[0 if direct else 1])
    forced = kernels.conv_geometry(hep, algo_fwd="direct", algo_bwd_data="direct",
                                   algo_bwd_weights="direct")
    for op in bf16.CONV_OPS:
        assert bf16.conv_kernel_name(op, forced) == CONV_ROWS[0 if direct else 1]
    # LeNet conv2's data gradient (mostly channel padding and border for the direct kernel): the
    # im2col + GEMM implementation, by the float32 tables' rule
    lenet2 = (64, 20, 12, 12, 50, 5, 5, 0, 0, 1, 1, 1, 1, 1)
    assert bf16.conv_kernel_name("bwd_data", lenet2) == (GEMM_RULE_ROW if direct else CONV_ROWS[1])
    assert bf16.conv_kernel_name("fwd", lenet2) == CONV_ROWS[0 if direct else 1]


GEMM_RULE_ROW = "bf16conv_gemm_rule"  # the im2col row's implementation, placed by a rule


FP32_FEWC_ROWS = ("fp32_direct_fewc_avx512", "fp32_direct_fewc_avx2")


@pytest.mark.parametrize("row", FP32_FEWC_ROWS)
def test_few_channel_forward_stays_float32(row):
    """A forward pass with at most 4 input channels per group runs the float32 few-channel
    kernel in bf16 mode: float32 rounding (bf16 operands would be off by about 1e-2)."""
    _row_or_skip("fwd", row)
    geometry = (2, 3, 20, 19, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1)
    n, k = geometry[0], geometry[4]
    p, q = kernels.conv_output_hw(geometry)
    x, wt, bias, _ = _conv_data(geometry)
    with kernels.isa_cap(row.rsplit("_", 1)[1]):
        assert bf16.conv_kernel_name("fwd", geometry) == row
        assert kernels.conv_kernel_name("fwd", geometry, x) == row.replace("fp32_", "")
        y, want = np.empty((n, k, p, q), np.float32), np.empty((n, k, p, q), np.float32)
        bf16.conv_forward(x, wt, bias, y, geometry, bf16.ConvScratch(), relu_slope=0.0)
        kernels.conv_forward(x, wt, bias, want, geometry, relu=True)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


WINOGRAD_ROW = "bf16conv_winograd_avx512_bf16"
WINOGRAD_CASES = [
    # N, C, H, W, K, R, S, ph, pw, sh, sw, dh, dw, G (3x3, stride 1, one group)
    (2, 37, 6, 17, 41, 3, 3, 1, 1, 1, 1, 1, 1, 1),    # channel tails; a 16-wide last U panel
    (1, 128, 16, 16, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1),  # the HEP net's layers
    (1, 160, 9, 11, 48, 3, 3, 0, 0, 1, 1, 1, 1, 1),   # two channel chunks summed; pad 0
    (2, 24, 5, 4, 20, 3, 3, 2, 1, 1, 1, 1, 1, 1),     # pad 2; a few-pixel output: F(2x2)
    (5, 20, 12, 12, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1),   # 45 tiles: the weight gradient's odd pair
    (3, 16, 36, 36, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1),   # 243 tiles: several blocks, an odd last
]


def _bf16_f64(a):
    return ref.round_bf16(np.asarray(a, np.float32)).astype(np.float64)


def _close_to_winograd_reference(got, want, exact, what):
    rms = np.sqrt(np.mean(want ** 2))
    diff = np.abs(got - want)
    assert np.sqrt(np.mean(diff ** 2)) <= 1e-3 * rms, f"{what}: RMS {diff.std() / rms:.3g}"
    assert diff.max() <= 5e-2 * rms, f"{what}: largest {diff.max() / rms:.3g}"
    err = np.sqrt(np.mean((got - exact) ** 2)) / np.sqrt(np.mean(exact ** 2))
    assert err <= 3e-2, f"{what}: RMS error {err:.3g} against the exact convolution"


@pytest.mark.parametrize("geometry", WINOGRAD_CASES)
def test_winograd_row_matches_reference_on_bf16_transformed_operands(geometry):
    _row_or_skip("fwd", WINOGRAD_ROW)
    n, c, h, w, k, r, s, ph, pw = geometry[:9]
    p, q = kernels.conv_output_hw(geometry)
    x, wt, bias, dy = _conv_data(geometry)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, wt, bias, dy))
    scratch = bf16.ConvScratch()

    y = np.full((n, k, p, q), np.nan, np.float32)
    bf16.conv_forward(x, wt, bias, y, geometry, scratch, row=WINOGRAD_ROW)
    m = rw.choose_tile(p, q, c, k)
    want = rw.conv2d_forward(x64, w64, b64, (ph, pw), m, operands=_bf16_f64)
    _close_to_winograd_reference(y, want, rw.conv2d_forward(x64, w64, b64, (ph, pw), m),
                                 f"forward F({m}x{m})")

    dx = np.full((n, c, h, w), np.nan, np.float32)
    bf16.conv_backward_data(dy, wt, dx, geometry, scratch, row=WINOGRAD_ROW)
    m = rw.choose_tile(h, w, k, c)
    want = rw.conv2d_backward_data(dy64, w64, (ph, pw), m, operands=_bf16_f64)
    _close_to_winograd_reference(dx, want, rw.conv2d_backward_data(dy64, w64, (ph, pw), m),
                                 f"data gradient F({m}x{m})")

    # the weight gradient rounds V and E (tile pairs), sums in float32 and adds into dw / db
    dw, db = np.ones_like(wt), np.ones_like(bias)
    bf16.conv_backward_weights(x, dy, dw, db, geometry, scratch, row=WINOGRAD_ROW)
    m = rw.choose_tile(p, q, c, k)
    want, want_db = rw.conv2d_backward_weights(x64, dy64, (ph, pw), m, operands=_bf16_f64)
    _close_to_winograd_reference(dw - 1, want, rw.conv2d_backward_weights(x64, dy64, (ph, pw),
                                                                          m)[0],
                                 f"weight gradient F({m}x{m})")
    np.testing.assert_allclose(db - 1, want_db, rtol=1e-5, atol=1e-5 * np.abs(want_db).max())

    # the fused ReLU acts on the same float32 sums; the cached U is refreshed by a changed weight
    relu = np.empty_like(y)
    bf16.conv_forward(x, wt, bias, relu, geometry, scratch, relu_slope=np.float32(0.25),
                      row=WINOGRAD_ROW)
    np.testing.assert_array_equal(relu, np.maximum(y, 0) + np.float32(0.25) * np.minimum(y, 0))
    wt[k - 1, c - 1, 2, 0] += 1.0
    bf16.conv_forward(x, wt, bias, y, geometry, scratch, row=WINOGRAD_ROW)
    fresh = np.empty_like(y)
    bf16.conv_forward(x, wt, bias, fresh, geometry, bf16.ConvScratch(), row=WINOGRAD_ROW)
    np.testing.assert_array_equal(y, fresh)


def test_im2col_rows_give_the_same_result_on_any_thread_count():
    """The im2col forward and data-gradient rows run each image in its own workspace slot on
    one thread: the result does not depend on the thread count or on how many slots fit."""
    import engine
    geometry = (5, 20, 12, 12, 50, 5, 5, 0, 0, 1, 1, 1, 1, 1)  # LeNet conv2, 5 images
    n, c, h, w, k = geometry[:5]
    p, q = kernels.conv_output_hw(geometry)
    x, wt, bias, dy = _conv_data(geometry)
    old = engine.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            engine.set_num_threads(threads)
            y = np.full((n, k, p, q), np.nan, np.float32)
            dx = np.full((n, c, h, w), np.nan, np.float32)
            bf16.conv_forward(x, wt, bias, y, geometry, bf16.ConvScratch(), row=CONV_ROWS[1])
            bf16.conv_backward_data(dy, wt, dx, geometry, bf16.ConvScratch(), row=CONV_ROWS[1])
            results.append((y, dx))
    finally:
        engine.set_num_threads(old)
    for a, b in zip(*results):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("geometry", [
    (1, 64, 64, 64, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1),   # two bands of output rows
    (1, 128, 96, 96, 4, 3, 3, 1, 1, 2, 1, 1, 1, 1),  # three bands; dx rows shared by two bands
])
def test_im2col_data_gradient_adds_bands_of_rows(geometry):
    """The im2col row's data gradient runs col2im band by band (bands of output rows of at most
    2^21 bf16 column elements), each band adding into dx rows the previous one reached."""
    _row_or_skip("bwd_data", CONV_ROWS[1])
    n, c, h, w, k, r, s, ph, pw, sh, sw, dh, dw, g = geometry
    _, wt, _, dy = _conv_data(geometry)

    def bwd_data(dd, ww):
        dx = np.zeros((n, c, h, w))
        kernels.conv_backward_data(dd, ww, dx, geometry)
        return dx
    want = bwd_data(_bf16_f64(dy), _bf16_f64(wt))
    bound = 2 * (k * r * s) * EPS32 * bwd_data(np.abs(_bf16_f64(dy)), np.abs(_bf16_f64(wt)))
    dx = np.full((n, c, h, w), np.nan, np.float32)
    bf16.conv_backward_data(dy, wt, dx, geometry, bf16.ConvScratch(), row=CONV_ROWS[1])
    assert np.all(np.abs(dx - want) <= bound + 1e-30)


BANDED_WGRAD_CASES = [
    # N, C, H, W, K, R, S, ph, pw, sh, sw, dh, dw, G
    (2, 3, 50, 200, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1),  # wide rows: bands of rows, a short last one
    (2, 5, 41, 300, 64, 3, 3, 2, 1, 2, 1, 2, 1, 1),  # row stride and dilation across bands
    (17, 3, 8, 8, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1),   # small images: bands of whole images
]


@pytest.mark.parametrize("geometry", BANDED_WGRAD_CASES)
def test_direct_weight_gradient_bands_match_reference_on_any_thread_count(geometry):
    """The direct row's weight gradient converts and uses its operands band by band (rows of an
    image, or whole small images, a partial last band): the reference on bf16 operands, the
    float32 bias gradient, and bit-identical results on 1 and 2 threads."""
    import engine
    _row_or_skip("bwd_weights", CONV_ROWS[0])
    n, c, h, w, k, r, s, ph, pw, sh, sw, dh, dw, g = geometry
    x, _, _, dy = _conv_data(geometry)
    def bwd_weights(xx, dd):
        out = np.zeros((k, c // g, r, s))
        kernels.conv_backward_weights(xx, dd, out, None, geometry)
        return out
    want = bwd_weights(_bf16_f64(x), _bf16_f64(dy))
    bound = 2 * (n * dy.shape[2] * dy.shape[3]) * EPS32 * bwd_weights(
        np.abs(_bf16_f64(x)), np.abs(_bf16_f64(dy))) + 1e-30
    old = engine.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            engine.set_num_threads(threads)
            dwt, db = np.zeros((k, c // g, r, s), np.float32), np.zeros(k, np.float32)
            bf16.conv_backward_weights(x, dy, dwt, db, geometry, bf16.ConvScratch(),
                                       row=CONV_ROWS[0])
            results.append((dwt, db))
    finally:
        engine.set_num_threads(old)
    dwt, db = results[0]
    assert np.all(np.abs(dwt - want) <= bound)
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5,
                               atol=1e-4)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_conv_refuses_wrong_sizes():
    geometry = CONV_CASES[0]
    scratch = bf16.ConvScratch()
    x = np.zeros((2, 5, 9, 8), np.float32)
    with pytest.raises(ValueError, match="y has 3 elements, the geometry needs"):
        bf16.conv_forward(x, np.zeros((7, 5, 3, 3), np.float32), None, np.zeros(3, np.float32),
                          geometry, scratch)
    with pytest.raises(ValueError, match="w has 3 elements, the geometry needs"):
        bf16.conv_forward(x, np.zeros(3, np.float32), None, np.zeros((2, 7, 9, 8), np.float32),
                          geometry, scratch)
    with pytest.raises(ValueError, match="group must be positive and divide"):
        bf16.conv_workspace_size((2, 5, 9, 8, 7, 3, 3, 1, 1, 1, 1, 1, 1, 2))
    with pytest.raises(ValueError, match="op must be 'fwd', 'bwd_data' or 'bwd_weights'"):
        bf16.conv_rows("backward")
