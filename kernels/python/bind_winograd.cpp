// engine._kernels bindings of the Winograd convolution (crema/winograd.h). Every array size is
// checked against the geometry here (ValueError), outputs, workspace and filter cache are
// caller-owned float32 C-contiguous arrays written in place, and the GIL is released while the
// kernel runs. Geometry tuple: (N, C, H, W, K, pad_h, pad_w, tile).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "crema/isa.h"
#include "crema/winograd.h"

namespace py = pybind11;

namespace {

using Arr = py::array_t<float, py::array::c_style>;

void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

crema::WinogradGeom wgeom(const py::tuple& t, bool check = true) {
  require(py::len(t) == 8, "winograd geometry must be (N, C, H, W, K, pad_h, pad_w, tile)");
  crema::WinogradGeom g{};
  int64_t v[8];
  for (int i = 0; i < 8; ++i) v[i] = t[i].cast<int64_t>();
  g.batch = v[0];
  g.channels = v[1];
  g.height = v[2];
  g.width = v[3];
  g.out_channels = v[4];
  g.pad_h = v[5];
  g.pad_w = v[6];
  require(v[7] == 2 || v[7] == 4, "winograd: tile must be 4 (F(4x4,3x3)) or 2 (F(2x2,3x3)), got " +
                                      std::to_string(v[7]));
  g.tile = static_cast<int>(v[7]);
  if (check) {
    const char* err = crema::winograd_geom_error(g);
    require(err == nullptr, std::string("winograd geometry: ") + (err ? err : ""));
  }
  return g;
}

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

void require_shape(const py::array& a, const char* op, const char* name,
                   std::initializer_list<int64_t> want) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
  std::string w = "(";
  int i = 0;
  for (int64_t d : want) {
    if (ok && a.shape(i) != d) ok = false;
    w += (i ? ", " : "") + std::to_string(d);
    ++i;
  }
  w += ")";
  require(ok, std::string(op) + ": " + name + " has shape " + shape_str(a) + ", expected " + w);
}

// An array the kernel writes: float32, C-contiguous, writeable -- never a converted copy, which
// would silently swallow the results.
Arr out_array(const py::handle& obj, const char* op, const char* name) {
  require(Arr::check_(obj), std::string(op) + ": " + name +
                                " must be a C-contiguous float32 numpy array");
  auto a = py::reinterpret_borrow<Arr>(obj);
  require(a.writeable(), std::string(op) + ": " + name + " must be writeable");
  return a;
}

// Byte ranges of the arrays a kernel writes must not overlap anything else it touches.
struct Span {
  const char* name;
  const void* p;
  int64_t bytes;
};
void require_disjoint(const char* op, std::initializer_list<Span> spans) {
  for (auto a = spans.begin(); a != spans.end(); ++a)
    for (auto b = a + 1; b != spans.end(); ++b) {
      if (a->p == nullptr || b->p == nullptr || a->bytes == 0 || b->bytes == 0) continue;
      const auto pa = reinterpret_cast<uintptr_t>(a->p), pb = reinterpret_cast<uintptr_t>(b->p);
      const bool overlap = pa < pb + static_cast<uintptr_t>(b->bytes) &&
                           pb < pa + static_cast<uintptr_t>(a->bytes);
      require(!overlap, std::string(op) + ": " + a->name + " and " + b->name +
                            " share memory; each must be a separate array");
    }
}

struct Buffers {
  float* ws;
  int64_t ws_floats;
  float* cache;
};

Buffers buffers(const crema::WinogradGeom& g, Arr& workspace, Arr& cache, const char* op) {
  const int64_t need_ws = crema::winograd_workspace_floats(g, 1);
  const int64_t need_cache = crema::winograd_filter_cache_floats(g);
  require(workspace.size() >= need_ws,
          std::string(op) + ": workspace has " + std::to_string(workspace.size()) +
              " floats, the geometry needs at least " + std::to_string(need_ws) +
              " (winograd_workspace_size)");
  require(cache.size() >= need_cache,
          std::string(op) + ": filter_cache has " + std::to_string(cache.size()) +
              " floats, the geometry needs " + std::to_string(need_cache) +
              " (winograd_filter_cache_size)");
  return {workspace.mutable_data(), static_cast<int64_t>(workspace.size()),
          cache.mutable_data()};
}

}  // namespace

void bind_winograd(py::module_& m) {
  m.def("winograd_geometry_error", [](py::tuple geometry) -> py::object {
    const char* err = crema::winograd_geom_error(wgeom(geometry, false));
    if (err == nullptr) return py::none();
    return py::str(err);
  }, py::arg("geometry"), "None when (N, C, H, W, K, pad_h, pad_w, tile) is accepted, else why not.");

  m.def("winograd_workspace_size", [](py::tuple geometry, int threads, bool backward) {
    require(threads >= 1, "winograd_workspace_size: threads must be at least 1");
    auto g = wgeom(geometry);
    return crema::winograd_workspace_floats(backward ? crema::winograd_backward_geom(g) : g,
                                            threads);
  }, py::arg("geometry"), py::arg("threads") = 1, py::arg("backward") = false,
     "float32 elements of the workspace for `threads` threads (forward or data-gradient pass).");

  m.def("winograd_filter_cache_size", [](py::tuple geometry, bool backward) {
    auto g = wgeom(geometry);
    return crema::winograd_filter_cache_floats(backward ? crema::winograd_backward_geom(g) : g);
  }, py::arg("geometry"), py::arg("backward") = false);

  m.def("winograd_tile_block", [](py::tuple geometry) {
    return crema::winograd_tile_block(wgeom(geometry));
  }, py::arg("geometry"));

  m.def("winograd_choose_tile", [](py::tuple geometry) {
    return crema::winograd_choose_tile(wgeom(geometry));
  }, py::arg("geometry"), "The recommended tile (4 or 2) for the geometry (its tile is ignored).");

  m.def("winograd_kernel_name", [](py::tuple geometry) {
    return std::string(crema::winograd_kernel(wgeom(geometry)).name);
  }, py::arg("geometry"));

  m.def("winograd_matrices", [](int tile) {
    require(tile == 2 || tile == 4, "winograd_matrices: tile must be 2 or 4");
    const py::ssize_t a = tile + 2;
    Arr at({static_cast<py::ssize_t>(tile), a}), g({a, py::ssize_t{3}}), bt({a, a});
    crema::winograd_matrices(tile, at.mutable_data(), g.mutable_data(), bt.mutable_data());
    return py::make_tuple(at, g, bt);
  }, py::arg("tile"), "(A^T, G, B^T) as used by the kernels.");

  m.def("winograd_forward", [](Arr x, Arr w, py::object bias, py::tuple geometry,
                               py::object y_obj, py::object ws_obj, py::object cache_obj,
                               bool relu, float slope) {
    const char* op = "winograd_forward";
    auto g = wgeom(geometry);
    g.relu = relu;
    g.relu_slope = slope;
    Arr y = out_array(y_obj, op, "y");
    Arr workspace = out_array(ws_obj, op, "workspace");
    Arr cache = out_array(cache_obj, op, "filter_cache");
    require_shape(x, op, "x", {g.batch, g.channels, g.height, g.width});
    require_shape(w, op, "weight", {g.out_channels, g.channels, 3, 3});
    require_shape(y, op, "y", {g.batch, g.out_channels, g.out_h(), g.out_w()});
    Arr b;
    const float* bp = nullptr;
    if (!bias.is_none()) {
      b = Arr::ensure(bias);
      require(b && b.ndim() == 1 && b.shape(0) == g.out_channels,
              std::string(op) + ": bias must have shape (" + std::to_string(g.out_channels) + ",)");
      bp = b.data();
    }
    float* yp = y.mutable_data();
    Buffers buf = buffers(g, workspace, cache, op);
    require_disjoint(op, {{"y", yp, 4 * static_cast<int64_t>(y.size())},
                          {"x", x.data(), 4 * static_cast<int64_t>(x.size())},
                          {"weight", w.data(), 4 * static_cast<int64_t>(w.size())},
                          {"bias", bp, bp ? 4 * static_cast<int64_t>(b.size()) : 0},
                          {"workspace", buf.ws, 4 * buf.ws_floats},
                          {"filter_cache", buf.cache, 4 * static_cast<int64_t>(cache.size())}});
    const float* xp = x.data();
    const float* wp = w.data();
    py::gil_scoped_release nogil;
    crema::winograd_forward(xp, wp, bp, g, yp, buf.ws, buf.ws_floats, buf.cache);
  }, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("geometry"),
     py::arg("y"), py::arg("workspace"), py::arg("filter_cache"), py::arg("relu") = false,
     py::arg("negative_slope") = 0.f,
     "y (N, K, P, Q) = conv3x3(x (N, C, H, W), weight (K, C, 3, 3)) + bias (K or None), stride 1;"
     " relu=True applies max(v, 0) + negative_slope * min(v, 0) in the output transform.");

  m.def("winograd_backward_data", [](Arr dy, Arr w, py::tuple geometry, py::object dx_obj,
                                     py::object ws_obj, py::object cache_obj) {
    const char* op = "winograd_backward_data";
    auto g = wgeom(geometry);
    Arr dx = out_array(dx_obj, op, "dx");
    Arr workspace = out_array(ws_obj, op, "workspace");
    Arr cache = out_array(cache_obj, op, "filter_cache");
    require_shape(dy, op, "dy", {g.batch, g.out_channels, g.out_h(), g.out_w()});
    require_shape(w, op, "weight", {g.out_channels, g.channels, 3, 3});
    require_shape(dx, op, "dx", {g.batch, g.channels, g.height, g.width});
    const auto gb = crema::winograd_backward_geom(g);
    const char* err = crema::winograd_geom_error(gb);
    require(err == nullptr, std::string(op) + ": " + (err ? err : ""));
    float* dxp = dx.mutable_data();
    Buffers buf = buffers(gb, workspace, cache, op);
    require_disjoint(op, {{"dx", dxp, 4 * static_cast<int64_t>(dx.size())},
                          {"dy", dy.data(), 4 * static_cast<int64_t>(dy.size())},
                          {"weight", w.data(), 4 * static_cast<int64_t>(w.size())},
                          {"workspace", buf.ws, 4 * buf.ws_floats},
                          {"filter_cache", buf.cache, 4 * static_cast<int64_t>(cache.size())}});
    const float* dyp = dy.data();
    const float* wp = w.data();
    py::gil_scoped_release nogil;
    crema::winograd_backward_data(dyp, wp, g, dxp, buf.ws, buf.ws_floats, buf.cache);
  }, py::arg("dy"), py::arg("weight"), py::arg("geometry"), py::arg("dx"),
     py::arg("workspace"), py::arg("filter_cache"),
     "dx (N, C, H, W) = the data gradient of winograd_forward for dy (N, K, P, Q); overwritten.");
}
