# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Caffe's DataTransformer for a batch, in nogil loops (built by setup.py with Cython).

    transform(x, out, h_off, w_off, flip, mean_image, mean_values, scale)

x: (N, C, H, W) uint8 or float32, C-contiguous; out: (N, C, CH, CW) float32, C-contiguous, with
CH <= H and CW <= W. Image n is read from the window starting at (h_off[n], w_off[n]), flipped
horizontally when flip[n] != 0, and written as (pixel - mean) * scale, where the mean is
mean_image[c, h_off + h, w_off + w] (a (C, H, W) float32 image) or mean_values[c] (a (C,) float32
vector), or 0 when both are None. The random offsets and flips are drawn by the caller (engine.rng),
so that all randomness stays in one stream."""
import numpy as np

ctypedef fused pixel_t:
    unsigned char
    float


cdef void _run(const pixel_t[:, :, :, ::1] x, float[:, :, :, ::1] out,
               const long long[::1] h_off, const long long[::1] w_off,
               const unsigned char[::1] flip, const float[:, :, ::1] mean_image,
               const float[::1] mean_values, int mode, float scale) noexcept nogil:
    cdef Py_ssize_t n, c, h, w, wo, hi, wi
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], CH = out.shape[2], CW = out.shape[3]
    cdef float m
    for n in range(N):
        for c in range(C):
            m = mean_values[c] if mode == 2 else 0.0
            for h in range(CH):
                hi = h_off[n] + h
                for w in range(CW):
                    wi = w_off[n] + w
                    wo = CW - 1 - w if flip[n] else w
                    if mode == 1:
                        m = mean_image[c, hi, wi]
                    out[n, c, h, wo] = (<float>x[n, c, hi, wi] - m) * scale


def transform(x, out, h_off, w_off, flip, mean_image=None, mean_values=None, float scale=1.0):
    n, c, h, w = x.shape
    if out.dtype != np.float32 or out.ndim != 4 or out.shape[0] != n or out.shape[1] != c:
        raise ValueError("out must be float32 (N, C, CH, CW) matching x")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    cdef long long[::1] ho = np.ascontiguousarray(h_off, dtype=np.int64)
    cdef long long[::1] wo = np.ascontiguousarray(w_off, dtype=np.int64)
    cdef unsigned char[::1] fl = np.ascontiguousarray(flip, dtype=np.uint8)
    if ho.shape[0] != n or wo.shape[0] != n or fl.shape[0] != n:
        raise ValueError("h_off, w_off and flip need one entry per image")
    ch, cw = out.shape[2], out.shape[3]
    for i in range(n):
        if ho[i] < 0 or wo[i] < 0 or ho[i] + ch > h or wo[i] + cw > w:
            raise ValueError(f"crop window of image {i} is outside the {h}x{w} image")
    cdef int mode = 0
    cdef float[:, :, ::1] mi = np.zeros((1, 1, 1), dtype=np.float32)
    cdef float[::1] mv = np.zeros(1, dtype=np.float32)
    if mean_image is not None:
        if tuple(mean_image.shape) != (c, h, w):
            raise ValueError(f"mean image has shape {mean_image.shape}, images ({c}, {h}, {w})")
        mi = np.ascontiguousarray(mean_image, dtype=np.float32)
        mode = 1
    elif mean_values is not None:
        vals = np.ascontiguousarray(mean_values, dtype=np.float32).ravel()
        if vals.shape[0] == 1:
            vals = np.repeat(vals, c)
        if vals.shape[0] != c:
            raise ValueError(f"{vals.shape[0]} mean values for {c} channels")
        mv = vals
        mode = 2
    cdef float[:, :, :, ::1] o = out
    cdef const unsigned char[:, :, :, ::1] xu
    cdef const float[:, :, :, ::1] xf
    if x.dtype == np.uint8:
        xu = np.ascontiguousarray(x)
        with nogil:
            _run(xu, o, ho, wo, fl, mi, mv, mode, scale)
    else:
        xf = np.ascontiguousarray(x, dtype=np.float32)
        with nogil:
            _run(xf, o, ho, wo, fl, mi, mv, mode, scale)
