// pybind11 bindings of the direct convolution kernels (crema/conv.h).
//
// geometry = (N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w,
// group). Arrays are float32 and C-contiguous; outputs (y, dx, dw, db, workspace) must be
// exactly that (never a converted copy, which would hide the writes). Every size is checked
// against the geometry (ValueError) before the GIL is released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "crema/conv.h"

namespace py = pybind11;

namespace {

using Arr = py::array_t<float, py::array::c_style>;

void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

crema::ConvGeom conv_geom(const py::tuple& t) {
  require(py::len(t) == 14,
          "convolution geometry must be (N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, "
          "dilation_h, dilation_w, group), got " + std::to_string(py::len(t)) + " values");
  crema::ConvGeom g{};
  int64_t* f[] = {&g.N, &g.C, &g.H, &g.W, &g.K, &g.R, &g.S,
                  &g.ph, &g.pw, &g.sh, &g.sw, &g.dh, &g.dw, &g.G};
  for (int i = 0; i < 14; ++i) *f[i] = t[i].cast<int64_t>();
  const char* err = crema::conv_geom_error(g);
  require(err == nullptr, std::string("convolution geometry: ") + (err ? err : ""));
  return g;
}

// An output array: float32, C-contiguous, writeable, exactly `want` elements.
float* out_ptr(const py::handle& obj, const char* op, const char* name, int64_t want) {
  require(Arr::check_(obj), std::string(op) + ": " + name +
                                " must be a C-contiguous float32 array");
  auto a = py::reinterpret_borrow<Arr>(obj);
  require(a.writeable(), std::string(op) + ": " + name + " must be writeable");
  require(static_cast<int64_t>(a.size()) == want,
          std::string(op) + ": " + name + " has " + std::to_string(a.size()) +
              " elements, the geometry needs " + std::to_string(want));
  return a.mutable_data();
}

const float* in_ptr(const Arr& a, const char* op, const char* name, int64_t want) {
  require(static_cast<int64_t>(a.size()) == want,
          std::string(op) + ": " + name + " has " + std::to_string(a.size()) +
              " elements, the geometry needs " + std::to_string(want));
  return a.data();
}

float* ws_ptr(const py::handle& obj, const char* op, int64_t need) {
  require(Arr::check_(obj), std::string(op) + ": workspace must be a C-contiguous float32 array");
  auto a = py::reinterpret_borrow<Arr>(obj);
  require(a.writeable(), std::string(op) + ": workspace must be writeable");
  require(static_cast<int64_t>(a.size()) >= need,
          std::string(op) + ": workspace has " + std::to_string(a.size()) +
              " floats, this kernel needs " + std::to_string(need) +
              " (conv_workspace_size(geometry))");
  return need > 0 ? a.mutable_data() : nullptr;
}

int64_t x_count(const crema::ConvGeom& g) { return g.N * g.C * g.H * g.W; }
int64_t y_count(const crema::ConvGeom& g) { return g.N * g.K * g.P() * g.Q(); }
int64_t w_count(const crema::ConvGeom& g) { return g.K * g.Cg() * g.R * g.S; }

}  // namespace

void bind_conv(py::module_& m) {
  m.def("conv_algorithm", [](const std::string& op, py::tuple g_) {
    auto g = conv_geom(g_);
    require(op == "fwd" || op == "bwd_data" || op == "bwd_weights",
            "conv_algorithm: op must be fwd, bwd_data or bwd_weights, got '" + op + "'");
    const bool wino = op != "bwd_weights" && crema::conv_winograd_preferred(g, op == "bwd_data");
    return std::string(wino ? "winograd" : "direct");
  }, py::arg("op"), py::arg("geometry"),
     "The algorithm the fixed per-ISA rule picks for this pass (crema/conv.h).");
  m.def("conv_kernel_name", [](const std::string& op, py::tuple g_) {
    auto g = conv_geom(g_);
    if (op == "fwd") return std::string(crema::conv_fwd_kernel(g).name);
    if (op == "bwd_data") return std::string(crema::conv_bwd_data_kernel(g).name);
    if (op == "bwd_weights") return std::string(crema::conv_bwd_weights_kernel(g).name);
    throw py::value_error("conv_kernel_name: op must be fwd, bwd_data or bwd_weights, got '" +
                          op + "'");
  }, py::arg("op"), py::arg("geometry"),
     "The kernel the op runs for this geometry under the current CREMA_MAX_ISA.");

  m.def("conv_weight_cache_size", [](py::tuple g_) {
    return crema::conv_weight_cache_floats(conv_geom(g_));
  }, py::arg("geometry"),
     "Floats of the forward weight cache (zero it before first use; one per layer).");

  m.def("conv_workspace_size", [](py::tuple g_) {
    return crema::conv_workspace_floats(conv_geom(g_));
  }, py::arg("geometry"),
     "Floats of workspace that every op's kernel needs for this geometry, for any ISA cap.");

  m.def("conv_forward", [](Arr x, Arr w, py::object bias, py::object y, py::tuple g_,
                           py::object ws, bool relu, float slope, py::object wcache) {
    auto g = conv_geom(g_);
    const char* op = "conv_forward";
    const float* xp = in_ptr(x, op, "x", x_count(g));
    const float* wp = in_ptr(w, op, "weights", w_count(g));
    Arr b;
    const float* bp = nullptr;
    if (!bias.is_none()) {
      b = py::cast<Arr>(bias);
      bp = in_ptr(b, op, "bias", g.K);
    }
    float* yp = out_ptr(y, op, "y", y_count(g));
    const auto& k = crema::conv_fwd_kernel(g);
    float* wsp = ws_ptr(ws, op, k.workspace(g));
    float* wcp = nullptr;
    if (!wcache.is_none()) {
      const int64_t need = crema::conv_weight_cache_floats(g);
      require(Arr::check_(wcache), std::string(op) +
                                       ": weight_cache must be a C-contiguous float32 array");
      auto a = py::reinterpret_borrow<Arr>(wcache);
      require(a.writeable(), std::string(op) + ": weight_cache must be writeable");
      require(static_cast<int64_t>(a.size()) >= need,
              std::string(op) + ": weight_cache has " + std::to_string(a.size()) +
                  " floats, the geometry needs " + std::to_string(need) +
                  " (conv_weight_cache_size(geometry))");
      const char* c0 = reinterpret_cast<const char*>(a.data());
      const char* c1 = c0 + 4 * a.size();
      auto overlaps = [&](const void* p, int64_t n) {
        const char* q = static_cast<const char*>(p);
        return q < c1 && c0 < q + 4 * n;
      };
      require(!overlaps(wp, w_count(g)) && !overlaps(yp, y_count(g)) &&
                  !overlaps(xp, x_count(g)) && !(wsp && overlaps(wsp, k.workspace(g))),
              std::string(op) + ": weight_cache must not overlap another argument");
      wcp = need > 0 ? a.mutable_data() : nullptr;
    }
    py::gil_scoped_release nogil;
    k.fn(xp, wp, bp, yp, g, wsp, relu, slope, wcp);
  }, py::arg("x"), py::arg("weights"), py::arg("bias"), py::arg("y"), py::arg("geometry"),
     py::arg("workspace"), py::arg("relu") = false, py::arg("negative_slope") = 0.f,
     py::arg("weight_cache") = py::none(),
     "y (N, K, P, Q) = conv(x (N, C, H, W), weights (K, C/group, R, S)) + bias (K,) or None; "
     "with relu=True, y = max(v, 0) + negative_slope * min(v, 0) of that (fused epilogue).");

  m.def("conv_backward_data", [](Arr dy, Arr w, py::object dx, py::tuple g_, py::object ws) {
    auto g = conv_geom(g_);
    const char* op = "conv_backward_data";
    const float* dyp = in_ptr(dy, op, "dy", y_count(g));
    const float* wp = in_ptr(w, op, "weights", w_count(g));
    float* dxp = out_ptr(dx, op, "dx", x_count(g));
    const auto& k = crema::conv_bwd_data_kernel(g);
    float* wsp = ws_ptr(ws, op, k.workspace(g));
    py::gil_scoped_release nogil;
    k.fn(dyp, wp, dxp, g, wsp);
  }, py::arg("dy"), py::arg("weights"), py::arg("dx"), py::arg("geometry"), py::arg("workspace"),
     "dx (N, C, H, W) = the data gradient of the convolution for dy (N, K, P, Q) (overwritten).");

  m.def("conv_backward_weights", [](Arr x, Arr dy, py::object dw, py::object db, py::tuple g_,
                                    py::object ws) {
    auto g = conv_geom(g_);
    const char* op = "conv_backward_weights";
    const float* xp = in_ptr(x, op, "x", x_count(g));
    const float* dyp = in_ptr(dy, op, "dy", y_count(g));
    float* dwp = out_ptr(dw, op, "dw", w_count(g));
    float* dbp = db.is_none() ? nullptr : out_ptr(db, op, "db", g.K);
    const auto& k = crema::conv_bwd_weights_kernel(g);
    float* wsp = ws_ptr(ws, op, k.workspace(g));
    py::gil_scoped_release nogil;
    k.fn(xp, dyp, dwp, dbp, g, wsp);
  }, py::arg("x"), py::arg("dy"), py::arg("dw"), py::arg("db"), py::arg("geometry"),
     py::arg("workspace"),
     "dw (K, C/group, R, S) += weight gradient; db (K,) += bias gradient unless None.");
}
