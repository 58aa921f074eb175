"""Winograd convolution F(m x m, 3 x 3) in numpy: the readable statement of the algorithm that the
native kernels (kernels/src/conv/winograd_*.cpp) implement, their test oracle, and the fallback
of engine.kernels.winograd_conv2d_forward for arrays the native kernels do not take.

Scope: Caffe's cross-correlation y[n,k,y,x] = b[k] + sum_{c,i,j} w[k,c,i,j] x[n,c,y-ph+i,x-pw+j]
with a 3x3 kernel, stride 1, dilation 1, one group, any zero padding.

The algorithm (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"), for an
output tile of m x m pixels read from an alpha x alpha input tile (alpha = m + 2):
    U = G g G^T            filter transform, alpha x alpha per (k, c)        (computed once)
    V = B^T d B            input transform, alpha x alpha per (tile, c)
    M[xi] = V[xi] . U[xi]  for each of the alpha^2 positions xi: a [tiles x C] . [C x K] product
    Y = A^T M A            output transform, m x m per (tile, k); then + bias
Border tiles read zeros outside the padded image and their outputs beyond the image are dropped.

The matrices come from the Toom-Cook construction (winograd_matrices): evaluate the filter and the
data polynomials at n = m + 2 points (n - 1 finite ones and infinity), multiply pointwise,
interpolate. For the correlation y = T(g)^T d (the transpose of the linear convolution T(g) h):
    G   = the n x 3 evaluation matrix of g (rows [1, p, p^2]; infinity: [0, 0, 1]),
    A^T = the transpose of the n x m evaluation matrix of h (rows [1, p, .., p^(m-1)]; infinity:
          [0, .., 0, 1]),
    B^T = the inverse transpose of the n x n evaluation matrix of the product.
Each row i of B^T is then divided by a scale s_i and row i of G multiplied by it (the product
G[i] * B^T[i] is what matters), with s_i chosen so that B^T's row becomes integers with no common
factor: the per-tile transforms (B^T, A^T) stay small exact integers, the fractions move into G,
which is applied once per filter.

Interpolation points (the accuracy study lives in bench/winograd.py --points and its numbers in
kernels/include/crema/winograd.h):
    F(2x2, 3x3): 0, 1, -1, inf (the only sensible choice; every entry is 0, +-1 or +-1/2).
    F(4x4, 3x3): 0, 1, -1, 1/2, -2, inf. Lavin's 0, +-1, +-2 needs A^T entries up to 8 and B^T
        entries up to 5; replacing the pair +-2 by 1/2 and -2 (reciprocal points) balances the
        magnitudes of the transforms and gives the smallest float32 error of the sets measured
        (as Barabasz, Anderson, Soodhalter & Gregg 2020 also found for this tile size).
"""
from fractions import Fraction

import numpy as np

KERNEL = 3
INF = None  # the point at infinity

POINTS = {
    2: (0, 1, -1, INF),
    4: (0, 1, -1, Fraction(1, 2), -2, INF),
}
LAVIN_POINTS_F4 = (0, 1, -1, 2, -2, INF)


def _inverse(mat):
    """Exact inverse of a square matrix of Fractions (Gauss-Jordan)."""
    n = len(mat)
    a = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(mat)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        inv = 1 / a[col][col]
        a[col] = [v * inv for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [v - f * p for v, p in zip(a[r], a[col])]
    return [row[n:] for row in a]


def _evaluation(points, degree_plus_one):
    """Rows [1, p, .., p^(d-1)] for finite p and [0, .., 0, 1] for infinity (leading coefficient)."""
    rows = []
    for p in points:
        if p is INF:
            rows.append([Fraction(int(j == degree_plus_one - 1)) for j in range(degree_plus_one)])
        else:
            p = Fraction(p)
            rows.append([p ** j for j in range(degree_plus_one)])
    return rows


def _lcm(a, b):
    from math import gcd
    return a * b // gcd(a, b)


def winograd_matrices_exact(m, points=None, r=KERNEL):
    """(A^T, G, B^T) as lists of Fractions for F(m, r) with the given points (n - 1 finite ones
    followed by None for infinity, n = m + r - 1)."""
    from math import gcd
    points = POINTS[m] if points is None else tuple(points)
    n = m + r - 1
    if len(points) != n or points[-1] is not INF:
        raise ValueError(f"F({m}, {r}) needs {n} points ending with infinity, got {points}")
    vg = _evaluation(points, r)            # n x r
    vh = _evaluation(points, m)            # n x m
    vp = _evaluation(points, n)            # n x n
    inv = _inverse(vp)                     # B^T = inv^T
    bt = [[inv[j][i] for j in range(n)] for i in range(n)]
    at = [[vh[i][j] for i in range(n)] for j in range(m)]
    g = [list(row) for row in vg]
    for i in range(n):
        den = 1
        for v in bt[i]:
            den = _lcm(den, v.denominator)
        num = 0
        for v in bt[i]:
            num = gcd(num, (v * den).numerator)
        scale = Fraction(den, num)          # B^T row * scale: coprime integers
        # Make the first nonzero entry of the row positive.
        first = next(v for v in bt[i] if v != 0)
        if first < 0:
            scale = -scale
        bt[i] = [v * scale for v in bt[i]]
        g[i] = [v / scale for v in g[i]]
    return at, g, bt


def winograd_matrices(m, points=None, dtype=np.float64):
    """(A^T [m x n], G [n x 3], B^T [n x n]) as numpy arrays (n = m + 2)."""
    at, g, bt = winograd_matrices_exact(m, points)
    conv = lambda rows: np.array([[float(v) for v in row] for row in rows], dtype=dtype)
    return conv(at), conv(g), conv(bt)


def output_size(size, pad):
    return size + 2 * pad - KERNEL + 1


def tiles(size, pad, m):
    """Number of m-wide output tiles along an axis."""
    return -(-output_size(size, pad) // m)


def choose_tile(out_h, out_w, channels, out_channels):
    """The tile the native kernels recommend (winograd_choose_tile in kernels/src/conv/
    winograd_common.cpp, mirrored here): F(4x4) unless F(2x2)'s estimated work -- tiles x alpha^2
    x (the GEMM row plus its share of the transforms), channels padded to 16 -- is lower, which
    only happens for outputs a few pixels wide."""
    cpad, kpad = -(-channels // 16) * 16, -(-out_channels // 16) * 16

    def cost(m):
        t = (-(-out_h // m)) * (-(-out_w // m))
        return float(t) * (m + 2) ** 2 * (float(cpad) * kpad + 8.0 * (cpad + kpad))
    return 2 if cost(2) < cost(4) else 4


def transform_filter(weight, m, points=None, dtype=None):
    """weight (K, C, 3, 3) -> U (n, n, C, K) = G g G^T per (k, c), in `dtype` (default: weight's)."""
    dtype = weight.dtype if dtype is None else dtype
    _, g_mat, _ = winograd_matrices(m, points, dtype)
    u = np.einsum("ai,kcij,bj->abck", g_mat, weight.astype(dtype), g_mat)
    return np.ascontiguousarray(u, dtype=dtype)


def input_tiles(x, pad, m):
    """x (N, C, H, W) -> d (N, C, th, tw, n, n): the zero-padded input tile of every output tile."""
    n_img, channels, height, width = x.shape
    ph, pw = pad
    th, tw = tiles(height, ph, m), tiles(width, pw, m)
    n = m + KERNEL - 1
    hp, wp = m * th + KERNEL - 1, m * tw + KERNEL - 1
    padded = np.zeros((n_img, channels, hp, wp), dtype=x.dtype)
    rows, cols = min(height, hp - ph), min(width, wp - pw)
    padded[:, :, ph:ph + rows, pw:pw + cols] = x[:, :, :rows, :cols]
    s = padded.strides
    return np.lib.stride_tricks.as_strided(
        padded, shape=(n_img, channels, th, tw, n, n),
        strides=(s[0], s[1], m * s[2], m * s[3], s[2], s[3]), writeable=False)


def conv2d_forward(x, weight, bias=None, pad=(0, 0), m=4, points=None, u=None, operands=None):
    """Winograd F(m x m, 3 x 3) convolution. x (N, C, H, W), weight (K, C, 3, 3), bias (K,) or
    None. Every step runs in x's dtype (float32 reproduces the native kernels' rounding
    behaviour, float64 checks the algebra). `u` may pass a precomputed transform_filter result.
    `operands`, a function of an array, is applied to the transformed input V and filter U before
    their product (engine.reference.bf16.round_bf16 gives the bf16-operand kernels' arithmetic).
    Returns (N, K, H + 2ph - 2, W + 2pw - 2)."""
    dtype = x.dtype
    n_img, channels, height, width = x.shape
    k_out = weight.shape[0]
    if weight.shape != (k_out, channels, KERNEL, KERNEL):
        raise ValueError(f"weight shape {weight.shape} does not match ({k_out}, {channels}, 3, 3)")
    ph, pw = pad
    oh, ow = output_size(height, ph), output_size(width, pw)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"3x3 kernel larger than the padded input {x.shape} with pad {pad}")
    at, _, bt = winograd_matrices(m, points, dtype)
    if u is None:
        u = transform_filter(weight, m, points, dtype)
    d = input_tiles(x, pad, m)                                   # N C th tw n n
    v = np.einsum("ai,nctuij,bj->abntuc", bt, d, bt)             # n n N th tw C
    if operands is not None:
        u, v = (np.asarray(operands(a), dtype=dtype) for a in (u, v))
    mm = np.einsum("abntuc,abck->abntuk", v, u)                   # n n N th tw K
    y = np.einsum("ia,abntuk,jb->nktiuj", at, mm, at)            # N K th m tw m
    th, tw = y.shape[2], y.shape[4]
    y = y.reshape(n_img, k_out, th * m, tw * m)[:, :, :oh, :ow]
    if bias is not None:
        y = y + bias.astype(dtype).reshape(1, k_out, 1, 1)
    return np.ascontiguousarray(y, dtype=dtype)


def flip_filter(weight):
    """The filter of the data gradient: w'[c, k, i, j] = w[k, c, 2 - i, 2 - j]."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def conv2d_backward_data(dy, weight, pad=(0, 0), m=4, points=None, operands=None):
    """dx of the forward above: the correlation of dy with the flipped, transposed filter and
    padding 2 - pad (stride 1, 3x3 only). dy (N, K, P, Q) -> dx (N, C, P - 2 + 2ph', ...)."""
    ph, pw = pad
    return conv2d_forward(dy, flip_filter(weight), None, (KERNEL - 1 - ph, KERNEL - 1 - pw),
                          m, points, operands=operands)


def conv2d_backward_weights(x, dy, pad=(0, 0), m=4, points=None, operands=None):
    """(dw, db) of the forward above from x (N, C, H, W) and dy (N, K, P, Q), in x's dtype: each
    tile's output is A^T [U (.) V] A with U = G g G^T, so per position (a, b)
    dU[a, b] = sum over tiles of (A dY A^T)[a, b] V[a, b]^T and dw = G^T dU G; dY is zero beyond
    the output's edge (those tile outputs are cut off in the forward). db = dy summed over
    n, p, q. The native weight gradient (winograd_backward_weights) runs exactly these steps.
    `operands`, as in conv2d_forward, is applied to V and E before their product."""
    dtype = x.dtype
    n_img, channels, height, width = x.shape
    k_out = dy.shape[1]
    ph, pw = pad
    oh, ow = output_size(height, ph), output_size(width, pw)
    if dy.shape != (n_img, k_out, oh, ow):
        raise ValueError(f"dy shape {dy.shape} does not match ({n_img}, {k_out}, {oh}, {ow})")
    at, g_mat, bt = winograd_matrices(m, points, dtype)
    d = input_tiles(x, pad, m)                                   # N C th tw n n
    v = np.einsum("ai,nctuij,bj->abntuc", bt, d, bt)             # n n N th tw C
    th, tw = d.shape[2], d.shape[3]
    dy_tiles = np.zeros((n_img, k_out, th * m, tw * m), dtype=dtype)
    dy_tiles[:, :, :oh, :ow] = dy
    dy_tiles = dy_tiles.reshape(n_img, k_out, th, m, tw, m)
    e = np.einsum("ia,nktiuj,jb->abntuk", at, dy_tiles, at)      # n n N th tw K
    if operands is not None:
        v, e = (np.asarray(operands(a), dtype=dtype) for a in (v, e))
    du = np.einsum("abntuk,abntuc->abkc", e, v)                  # n n K C
    dw = np.einsum("ai,abkc,bj->kcij", g_mat, du, g_mat)
    db = dy.sum(axis=(0, 2, 3), dtype=dtype)
    return np.ascontiguousarray(dw, dtype=dtype), db
