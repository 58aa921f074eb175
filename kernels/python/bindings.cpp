// engine._kernels: float32 C-contiguous arrays in, results written into caller-allocated outputs,
// the GIL released around every kernel. Shapes are validated here so a bad call raises
// ValueError instead of touching memory it does not own.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "crema/eltwise.h"
#include "crema/gemm.h"
#include "crema/im2col.h"
#include "crema/isa.h"
#include "crema/peak.h"
#include "crema/pool.h"
#include "crema/threads.h"

namespace py = pybind11;
void bind_conv(py::module_& m);  // bind_conv.cpp: direct convolution
void bind_winograd(py::module_& m);  // bind_winograd.cpp: Winograd convolution
void bind_gemm(py::module_& m);  // bind_gemm.cpp: SGEMM
void bind_bf16(py::module_& m);  // bind_bf16.cpp: bfloat16 conversion, GEMM and convolution
using Arr = py::array_t<float, py::array::c_style>;

namespace {

void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

float* mut(Arr& a, const char* what) {
  require(a.writeable(), std::string(what) + " must be writeable");
  return a.mutable_data();
}

crema::Conv2dGeom geom(const py::tuple& t) {
  require(py::len(t) == 11, "geometry must be (C, H, W, kh, kw, ph, pw, sh, sw, dh, dw)");
  crema::Conv2dGeom g{};
  int64_t* f[] = {&g.channels, &g.height, &g.width, &g.kernel_h, &g.kernel_w, &g.pad_h,
                  &g.pad_w, &g.stride_h, &g.stride_w, &g.dilation_h, &g.dilation_w};
  for (int i = 0; i < 11; ++i) *f[i] = t[i].cast<int64_t>();
  require(g.channels > 0 && g.height > 0 && g.width > 0, "image dimensions must be positive");
  require(g.kernel_h > 0 && g.kernel_w > 0 && g.stride_h > 0 && g.stride_w > 0 &&
              g.dilation_h > 0 && g.dilation_w > 0 && g.pad_h >= 0 && g.pad_w >= 0,
          "kernel, stride and dilation must be positive and pad non-negative");
  require(g.out_h() > 0 && g.out_w() > 0, "kernel larger than the padded image");
  return g;
}

// A checked pooling geometry (PoolGeometry): made once per layer reshape, immutable after.
crema::PoolGeom make_pool_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kernel_h,
                               int64_t kernel_w, int64_t pad_h, int64_t pad_w, int64_t stride_h,
                               int64_t stride_w, int64_t pooled_h, int64_t pooled_w) {
  crema::PoolGeom g{N, C, H, W, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                    pooled_h, pooled_w};
  const char* err = crema::pool_geom_error(g);
  require(err == nullptr, std::string("pooling geometry: ") + (err ? err : ""));
  return g;
}

py::tuple pool_tuple(const crema::PoolGeom& g) {
  return py::make_tuple(g.num, g.channels, g.height, g.width, g.kernel_h, g.kernel_w, g.pad_h,
                        g.pad_w, g.stride_h, g.stride_w, g.pooled_h, g.pooled_w);
}

// a * b * c * d, or -1 when it overflows int64 (no array can have that many elements).
int64_t count4(int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) ||
      __builtin_mul_overflow(r, d, &r))
    return -1;
  return r;
}

void check_pool_sizes(const char* op, const crema::PoolGeom& g, py::ssize_t in_size,
                      py::ssize_t out_size, const char* in_name, const char* out_name) {
  const int64_t in = count4(g.num, g.channels, g.height, g.width);
  const int64_t out = count4(g.num, g.channels, g.pooled_h, g.pooled_w);
  require(in >= 0 && in == in_size,
          std::string(op) + ": " + in_name + " has " + std::to_string(in_size) +
              " elements, the geometry needs N*C*H*W = " + std::to_string(in));
  require(out >= 0 && out == out_size,
          std::string(op) + ": " + out_name + " has " + std::to_string(out_size) +
              " elements, the geometry needs N*C*pooled_h*pooled_w = " + std::to_string(out));
}

using MaskArr = py::array_t<int32_t, py::array::c_style>;

// The argmax mask: an int32, C-contiguous array (never a converted copy, which would hide writes).
MaskArr as_mask(const py::handle& obj, const char* op) {
  require(MaskArr::check_(obj), std::string(op) + ": mask must be a C-contiguous int32 array");
  return py::reinterpret_borrow<MaskArr>(obj);
}

crema::Isa isa_from_name(const std::string& name) {
  if (name == "avx512") return crema::Isa::avx512;
  if (name == "avx2") return crema::Isa::avx2;
  if (name == "scalar") return crema::Isa::scalar;
  throw py::value_error("unknown ISA '" + name + "' (avx512, avx2 or scalar)");
}

// GemmArgs over C-contiguous 2-D arrays (ValueError naming `what` when they do not fit).
crema::GemmArgs contiguous_gemm(const char* what, Arr& a, Arr& b, Arr& c, float beta,
                                bool trans_a, bool trans_b) {
  const std::string name(what);
  require(a.ndim() == 2 && b.ndim() == 2 && c.ndim() == 2, name + ": a, b and c must be 2-D");
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  require(K == Kb && c.shape(0) == M && c.shape(1) == N,
          name + ": op(a) " + std::to_string(M) + " x " + std::to_string(K) + ", op(b) " +
              std::to_string(Kb) + " x " + std::to_string(N) + " and c " +
              std::to_string(c.shape(0)) + " x " + std::to_string(c.shape(1)) + " do not fit");
  crema::GemmArgs g{trans_a, trans_b, M, N, K, 1.0f, a.data(), a.shape(1), b.data(), b.shape(1),
                    beta, mut(c, "c"), c.shape(1)};
  const char* err = crema::sgemm_args_error(g);
  require(err == nullptr, name + ": " + (err ? err : ""));
  return g;
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "crema native kernels (C++17)";
  bind_conv(m);
  bind_winograd(m);
  bind_gemm(m);
  bind_bf16(m);

  m.def("cpu_info", [] {
    const auto& c = crema::cpu_info();
    py::dict d;
    d["vendor"] = c.vendor;
    d["model"] = c.model;
    d["logical_cores"] = c.logical_cores;
    py::list cpu_isas, built, usable;
    cpu_isas.append("scalar");
    if (c.cpu_avx2) cpu_isas.append("avx2");
    if (c.cpu_avx512) cpu_isas.append("avx512");
    for (auto isa : crema::built_isas()) built.append(crema::isa_name(isa));
    for (auto isa : crema::built_isas())
      if (crema::isa_usable(isa)) usable.append(crema::isa_name(isa));
    d["cpu_isas"] = cpu_isas;
    d["built_isas"] = built;
    d["usable_isas"] = usable;
    d["isa"] = crema::isa_name(crema::active_isa());
    d["avx512_bf16"] = c.cpu_avx512_bf16;
    d["avx512_vnni"] = c.cpu_avx512_vnni;
    return d;
  });

  m.def("set_max_isa", [](const std::string& name) { crema::set_max_isa(isa_from_name(name)); },
        py::arg("isa"),
        "Cap the ISA every kernel table may choose (avx512, avx2 or scalar) for this process; "
        "it starts as CREMA_MAX_ISA, read once.");
  m.def("max_isa", [] { return std::string(crema::isa_name(crema::max_isa())); });

  m.def("im2col", [](Arr im, py::tuple g_, Arr col) {
    auto g = geom(g_);
    require(im.size() == g.channels * g.height * g.width, "im2col: image size does not match geometry");
    require(col.size() == g.channels * g.kernel_h * g.kernel_w * g.out_h() * g.out_w(),
            "im2col: column buffer size does not match geometry");
    const float* src = im.data();
    float* dst = mut(col, "col");
    py::gil_scoped_release nogil;
    crema::im2col(src, g, dst);
  }, py::arg("im"), py::arg("geometry"), py::arg("col").noconvert());

  m.def("col2im", [](Arr col, py::tuple g_, Arr im) {
    auto g = geom(g_);
    require(im.size() == g.channels * g.height * g.width, "col2im: image size does not match geometry");
    require(col.size() == g.channels * g.kernel_h * g.kernel_w * g.out_h() * g.out_w(),
            "col2im: column buffer size does not match geometry");
    const float* src = col.data();
    float* dst = mut(im, "im");
    py::gil_scoped_release nogil;
    crema::col2im(src, g, dst);
  }, py::arg("col"), py::arg("geometry"), py::arg("im").noconvert());

  m.def("relu_kernel_name", [] { return std::string(crema::relu_kernel().name); });

  m.def("relu_forward", [](Arr x, Arr y, float slope) {
    require(x.size() == y.size(), "relu_forward: x and y differ in size");
    const auto& k = crema::relu_kernel();
    const float* xp = x.data();
    float* yp = mut(y, "y");
    int64_t n = x.size();
    py::gil_scoped_release nogil;
    k.fn.fwd(xp, yp, n, slope);
  }, py::arg("x"), py::arg("y").noconvert(), py::arg("slope"));

  m.def("relu_backward", [](Arr x, Arr dy, Arr dx, float slope) {
    require(x.size() == dy.size() && x.size() == dx.size(), "relu_backward: sizes differ");
    const auto& k = crema::relu_kernel();
    const float* xp = x.data();
    const float* gp = dy.data();
    float* dp = mut(dx, "dx");
    int64_t n = x.size();
    py::gil_scoped_release nogil;
    k.fn.bwd(xp, gp, dp, n, slope);
  }, py::arg("x"), py::arg("dy"), py::arg("dx").noconvert(), py::arg("slope"));

  // Two independent products (InnerProduct's weight and data gradients). At two threads a
  // product of a batch of 64 rows gains little from the second thread (its packing runs on one),
  // so the two run side by side, one per thread (the nested regions inside each run on their own
  // thread), when their work pays for two threads (threads_for_work); otherwise, or where nested
  // regions would start more threads, one after the other.
  m.def("sgemm_pair", [](Arr a1, Arr b1, Arr c1, float beta1, bool trans_a1, bool trans_b1,
                         Arr a2, Arr b2, Arr c2, float beta2, bool trans_a2, bool trans_b2) {
    const crema::GemmArgs g1 = contiguous_gemm("sgemm_pair (first)", a1, b1, c1, beta1,
                                               trans_a1, trans_b1);
    const crema::GemmArgs g2 = contiguous_gemm("sgemm_pair (second)", a2, b2, c2, beta2,
                                               trans_a2, trans_b2);
    require(c1.data() != c2.data(), "sgemm_pair: the two products write the same c");
    py::gil_scoped_release nogil;
#if defined(CREMA_HAVE_OPENMP)
    const int64_t work =
        crema::total_work(g1.m * g1.n, g1.k) + crema::total_work(g2.m * g2.n, g2.k);
    if (crema::num_threads() == 2 && crema::threads_for_work(work, 2) == 2 &&
        omp_get_max_active_levels() <= 1) {
#pragma omp parallel for num_threads(2) schedule(static, 1)
      for (int i = 0; i < 2; ++i) crema::sgemm(i == 0 ? g1 : g2);
      return;
    }
#endif
    crema::sgemm(g1);
    crema::sgemm(g2);
  }, py::arg("a1"), py::arg("b1"), py::arg("c1").noconvert(), py::arg("beta1"),
     py::arg("trans_a1"), py::arg("trans_b1"), py::arg("a2"), py::arg("b2"),
     py::arg("c2").noconvert(), py::arg("beta2"), py::arg("trans_a2"), py::arg("trans_b2"));

  // -- solver passes over the parameter arena (engine/solvers/updates.py) ------------------
  m.def("solver_kernel_name", [] { return std::string(crema::solver_kernel().name); });

  m.def("sgd_update", [](Arr data, Arr diff, Arr history, Arr lr_mult, Arr decay_mult,
                         float diff_scale, float weight_decay, int regularization, float rate,
                         float momentum, bool apply) {
    const auto n = data.size();
    require(diff.size() == n && history.size() == n && lr_mult.size() == n &&
                decay_mult.size() == n,
            "sgd_update: data, diff, history, lr_mult and decay_mult differ in size");
    require(regularization >= 0 && regularization <= 2,
            "sgd_update: regularization must be 0 (none), 1 (L2) or 2 (L1)");
    const crema::SgdStep step{diff_scale, weight_decay,
                              static_cast<crema::Regularization>(regularization), rate, momentum,
                              apply};
    float* w = mut(data, "data");
    float* g = mut(diff, "diff");
    float* h = mut(history, "history");
    const float* lr = lr_mult.data();
    const float* decay = decay_mult.data();
    py::gil_scoped_release nogil;
    crema::sgd_update(w, g, h, lr, decay, n, step);
  }, py::arg("data").noconvert(), py::arg("diff").noconvert(), py::arg("history").noconvert(),
     py::arg("lr_mult").noconvert(), py::arg("decay_mult").noconvert(), py::arg("diff_scale"),
     py::arg("weight_decay"), py::arg("regularization"), py::arg("rate"), py::arg("momentum"),
     py::arg("apply"));

  m.def("all_finite", [](Arr x) {
    const float* p = x.data();
    const auto n = x.size();
    py::gil_scoped_release nogil;
    return crema::all_finite(p, n);
  }, py::arg("x").noconvert());

  // -- pooling -----------------------------------------------------------------------------
  using crema::PoolGeom;
  py::class_<PoolGeom>(m, "PoolGeometry",
                       "A checked, immutable 2-D pooling geometry: input N x C x H x W, the "
                       "window, pad and stride, and the pooled size (the layer's Caffe formula).")
      .def(py::init(&make_pool_geom), py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"),
           py::arg("kernel_h"), py::arg("kernel_w"), py::arg("pad_h"), py::arg("pad_w"),
           py::arg("stride_h"), py::arg("stride_w"), py::arg("pooled_h"), py::arg("pooled_w"))
      .def_readonly("N", &PoolGeom::num)
      .def_readonly("C", &PoolGeom::channels)
      .def_readonly("H", &PoolGeom::height)
      .def_readonly("W", &PoolGeom::width)
      .def_readonly("kernel_h", &PoolGeom::kernel_h)
      .def_readonly("kernel_w", &PoolGeom::kernel_w)
      .def_readonly("pad_h", &PoolGeom::pad_h)
      .def_readonly("pad_w", &PoolGeom::pad_w)
      .def_readonly("stride_h", &PoolGeom::stride_h)
      .def_readonly("stride_w", &PoolGeom::stride_w)
      .def_readonly("pooled_h", &PoolGeom::pooled_h)
      .def_readonly("pooled_w", &PoolGeom::pooled_w)
      .def("astuple", &pool_tuple,
           "(N, C, H, W, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, pooled_h, "
           "pooled_w)")
      .def("__eq__", [](const PoolGeom& a, const PoolGeom& b) {
        return pool_tuple(a).equal(pool_tuple(b));
      })
      .def("__repr__", [](const PoolGeom& g) {
        return "PoolGeometry" + std::string(py::str(pool_tuple(g)));
      })
      .def(py::pickle([](const PoolGeom& g) { return pool_tuple(g); },
                      [](const py::tuple& t) {
                        const auto v = t.cast<std::vector<int64_t>>();
                        require(v.size() == 12, "PoolGeometry: a pickled geometry has 12 sizes");
                        return make_pool_geom(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                                              v[8], v[9], v[10], v[11]);
                      }));

  m.def("pool_kernel_name", [](const std::string& op, const PoolGeom& g) {
    if (op == "max_fwd") return std::string(crema::max_pool_fwd_kernel(g).name);
    if (op == "max_bwd") return std::string(crema::max_pool_bwd_kernel(g).name);
    if (op == "ave_fwd") return std::string(crema::ave_pool_fwd_kernel(g).name);
    if (op == "ave_bwd") return std::string(crema::ave_pool_bwd_kernel(g).name);
    throw py::value_error("pool_kernel_name: op must be max_fwd, max_bwd, ave_fwd or ave_bwd, "
                          "got '" + op + "'");
  }, py::arg("op"), py::arg("geometry"));

  m.def("max_pool_forward", [](Arr x, const PoolGeom& g, Arr y, py::object mask) {
    check_pool_sizes("max_pool_forward", g, x.size(), y.size(), "x", "y");
    int32_t* mp = nullptr;
    MaskArr mask_arr;
    if (!mask.is_none()) {
      mask_arr = as_mask(mask, "max_pool_forward");
      require(mask_arr.size() == y.size(), "max_pool_forward: mask has " +
              std::to_string(mask_arr.size()) + " elements, y has " + std::to_string(y.size()));
      require(mask_arr.writeable(), "mask must be writeable");
      mp = mask_arr.mutable_data();
    }
    const auto& k = crema::max_pool_fwd_kernel(g);
    const float* xp = x.data();
    float* yp = mut(y, "y");
    py::gil_scoped_release nogil;
    k.fn(xp, g, yp, mp);
  }, py::arg("x"), py::arg("geometry"), py::arg("y").noconvert(), py::arg("mask") = py::none(),
     "MAX pooling of x (N, C, H, W) into y (N, C, pooled_h, pooled_w); the argmax (h*W + w in "
     "the plane, -1 for an empty window) goes into mask (int32, y's size) unless it is None.");

  m.def("max_pool_backward", [](Arr dy, py::object mask, const PoolGeom& g, Arr dx,
                                 py::object relu_y, float relu_slope) {
    check_pool_sizes("max_pool_backward", g, dx.size(), dy.size(), "dx", "dy");
    MaskArr mask_arr = as_mask(mask, "max_pool_backward");
    require(mask_arr.size() == dy.size(), "max_pool_backward: mask has " +
            std::to_string(mask_arr.size()) + " elements, dy has " + std::to_string(dy.size()));
    Arr y_arr;
    if (!relu_y.is_none()) {
      require(Arr::check_(relu_y), "max_pool_backward: relu_y must be a C-contiguous float32 array");
      y_arr = py::reinterpret_borrow<Arr>(relu_y);
      require(y_arr.size() == dy.size(), "max_pool_backward: relu_y has " +
              std::to_string(y_arr.size()) + " elements, dy has " + std::to_string(dy.size()));
    }
    const auto& k = crema::max_pool_bwd_kernel(g);
    const float* gp = dy.data();
    const int32_t* mp = mask_arr.data();
    const float* yp = relu_y.is_none() ? nullptr : y_arr.data();
    float* dp = mut(dx, "dx");
    py::gil_scoped_release nogil;
    k.fn(gp, mp, g, dp, yp, relu_slope);
  }, py::arg("dy"), py::arg("mask"), py::arg("geometry"), py::arg("dx").noconvert(),
     py::arg("relu_y") = py::none(), py::arg("relu_slope") = 0.f,
     "dx = 0, then dx[mask] += dy per plane (mask entries outside [0, H*W) are skipped); with "
     "relu_y (the forward's output), each dy is first the backward of an in-place ReLU "
     "(negative_slope relu_slope) at its argmax: relu_y > 0 ? dy : relu_slope * dy.");

  m.def("ave_pool_forward", [](Arr x, const PoolGeom& g, Arr y) {
    check_pool_sizes("ave_pool_forward", g, x.size(), y.size(), "x", "y");
    const auto& k = crema::ave_pool_fwd_kernel(g);
    const float* xp = x.data();
    float* yp = mut(y, "y");
    py::gil_scoped_release nogil;
    k.fn(xp, g, yp);
  }, py::arg("x"), py::arg("geometry"), py::arg("y").noconvert());

  m.def("ave_pool_backward", [](Arr dy, const PoolGeom& g, Arr dx) {
    check_pool_sizes("ave_pool_backward", g, dx.size(), dy.size(), "dx", "dy");
    const auto& k = crema::ave_pool_bwd_kernel(g);
    const float* gp = dy.data();
    float* dp = mut(dx, "dx");
    py::gil_scoped_release nogil;
    k.fn(gp, g, dp);
  }, py::arg("dy"), py::arg("geometry"), py::arg("dx").noconvert());

  // -- machine peak and threads -------------------------------------------------------------
  m.def("peak_gflops", [](const std::string& isa_name, double seconds) {
    crema::Isa isa = isa_from_name(isa_name);
    require(crema::isa_usable(isa), "peak_gflops: ISA '" + isa_name +
            "' is not usable here (CPU, build or the ISA cap)");
    require(seconds > 0 && seconds <= 60, "peak_gflops: seconds must be in (0, 60]");
    py::gil_scoped_release nogil;
    return crema::peak_gflops(isa, seconds);
  }, py::arg("isa"), py::arg("seconds") = 0.2,
     "Single-thread FP32 multiply-add GFLOP/s of this CPU with the given ISA (2 flops per lane).");

  m.def("openmp_enabled", &crema::openmp_enabled);
  m.def("get_num_threads", &crema::num_threads);
  m.def("set_num_threads", [](int n) {
    require(n >= 1, "set_num_threads: n must be at least 1, got " + std::to_string(n));
    // OpenMP aborts the process when it cannot start the threads it is asked for
    require(n <= 1024, "set_num_threads: at most 1024 threads, got " + std::to_string(n));
    crema::set_num_threads(n);
  }, py::arg("n"));
  m.def("requested_num_threads", &crema::requested_num_threads);
}
