// pybind11 binding of the bf16 kernels (crema/bf16.h). bf16 arrays are numpy uint16 holding the
// upper half of each float32. Shapes are checked (ValueError) before the GIL is released.
//
//   to_bf16(src f32, dst u16, row=None)            dst = bf16(src) (round to nearest even)
//   from_bf16(src u16, dst f32)                     exact
//   bf16_gemm(a u16, b u16, c f32, alpha, beta, trans_a, trans_b, row=None)
//   bf16_rows(op)                                   [(name, isa, runnable)] of "gemm"/"convert"
//   bf16_kernel_name(op)                            the row the table chooses now (ISA cap)
//   bf16_conv_rows(op) / bf16_conv_kernel_name(op, geometry)   op "fwd", "bwd_data", "bwd_weights"
//   bf16_conv_workspace_size(geometry)              floats, every pass (any ISA cap)
//   bf16_conv_cache_size(geometry, op)              floats of the pass's weight cache
//   bf16_conv_forward / _backward_data / _backward_weights: crema/conv.h layouts, the float32
//     master weights, a ConvGeometry (engine._kernels', as engine.kernels.conv_geometry makes
//     it), the workspace and (forward, data gradient) the pass's cache, zeroed before first use
//     (None: a fresh one for the call).
// `row` runs that table row by name (it must be runnable here): tests check every row.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "crema/bf16.h"

namespace py = pybind11;

namespace {

using F32 = py::array_t<float, py::array::c_style>;
using U16 = py::array_t<uint16_t, py::array::c_style>;

void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

template <class Arr>
Arr exact(const py::handle& obj, const char* op, const char* name, const char* what) {
  require(Arr::check_(obj), std::string(op) + ": " + name + " must be a C-contiguous " + what +
                                " numpy array");
  return py::reinterpret_borrow<Arr>(obj);
}

template <class Table>
const typename Table::Row& pick(const Table& t, const py::object& row, const char* op) {
  if (row.is_none()) return t.choose({});
  const std::string want = row.cast<std::string>();
  for (const auto& r : t)
    if (want == r.name) {
      require(crema::isa_runnable(r.isa), std::string(op) + ": row '" + want +
                                              "' needs " + crema::isa_name(r.isa) +
                                              ", which this CPU or build lacks");
      return r;
    }
  throw py::value_error(std::string(op) + ": no row named '" + want + "'");
}

template <class Table>
std::vector<std::tuple<std::string, std::string, bool>> rows_of(const Table& t) {
  std::vector<std::tuple<std::string, std::string, bool>> out;
  for (const auto& r : t) out.emplace_back(r.name, crema::isa_name(r.isa), crema::isa_runnable(r.isa));
  return out;
}

// Rows of a 2-D array: (rows, cols, leading dimension), rows contiguous.
struct Mat {
  int64_t rows, cols, ld;
};

Mat as_mat(const py::array& a, const char* name) {
  require(a.ndim() == 2, std::string("bf16_gemm: ") + name + " must be 2-D");
  return {a.shape(0), a.shape(1), std::max<int64_t>(1, a.shape(1))};
}

void check_size(const char* op, const char* name, py::ssize_t have, int64_t want) {
  require(have == want, std::string(op) + ": " + name + " has " + std::to_string(have) +
                            " elements, the geometry needs " + std::to_string(want));
}

float* workspace(const char* op, const py::handle& ws, const crema::ConvGeom& g) {
  F32 arr = exact<F32>(ws, op, "workspace", "float32");
  require(arr.writeable(), std::string(op) + ": workspace must be writeable");
  const int64_t need = crema::bf16_conv_workspace_floats(g);
  require(arr.size() >= need, std::string(op) + ": workspace has " + std::to_string(arr.size()) +
                                  " floats, the geometry needs " + std::to_string(need));
  return arr.mutable_data();
}

// The pass's weight cache: the caller's (checked, not overlapping the workspace), or a zeroed
// one owned by the call when None.
struct Cache {
  std::vector<float> own;
  float* p = nullptr;
};

Cache cache_of(const char* op, const py::handle& obj, const crema::ConvGeom& g,
               crema::ConvPass pass, const float* ws) {
  Cache c;
  const int64_t need = crema::bf16_conv_cache_floats(g, pass);
  if (need == 0) return c;
  if (obj.is_none()) {
    c.own.assign(static_cast<size_t>(need), 0.f);
    c.p = c.own.data();
    return c;
  }
  F32 arr = exact<F32>(obj, op, "cache", "float32");
  require(arr.writeable(), std::string(op) + ": cache must be writeable");
  require(arr.size() >= need, std::string(op) + ": cache has " + std::to_string(arr.size()) +
                                  " floats, the geometry needs " + std::to_string(need));
  require(arr.data() != ws, std::string(op) + ": cache and workspace must be different arrays");
  c.p = arr.mutable_data();
  return c;
}

crema::ConvPass pass_of(const std::string& op, const char* fn) {
  if (op == "fwd") return crema::ConvPass::fwd;
  if (op == "bwd_data") return crema::ConvPass::bwd_data;
  if (op == "bwd_weights") return crema::ConvPass::bwd_weights;
  throw py::value_error(std::string(fn) + ": op must be 'fwd', 'bwd_data' or 'bwd_weights', got '" +
                        op + "'");
}

template <class Table>
const typename Table::Row& pick_conv(const Table& t, const py::object& row,
                                     const crema::ConvGeom& g, const char* op) {
  if (row.is_none()) return t.choose(g);
  const auto& r = pick(t, row, op);
  require(r.supports(g), std::string(op) + ": row '" + r.name +
                             "' does not support this geometry");
  return r;
}

float* out(const py::handle& obj, const char* op, const char* name, int64_t want) {
  F32 arr = exact<F32>(obj, op, name, "float32");
  require(arr.writeable(), std::string(op) + ": " + name + " must be writeable");
  check_size(op, name, arr.size(), want);
  return arr.mutable_data();
}

const float* in(const py::handle& obj, const char* op, const char* name, int64_t want) {
  F32 arr = exact<F32>(obj, op, name, "float32");
  check_size(op, name, arr.size(), want);
  return arr.data();
}

}  // namespace

void bind_bf16(py::module_& m) {
  m.def("bf16_rows", [](const std::string& op) {
    if (op == "gemm") return rows_of(crema::bf16_gemm_table());
    if (op == "convert") return rows_of(crema::bf16_convert_table());
    throw py::value_error("bf16_rows: op must be 'gemm' or 'convert', got '" + op + "'");
  }, py::arg("op"));
  m.def("bf16_kernel_name", [](const std::string& op) {
    if (op == "gemm") return std::string(crema::bf16_gemm_table().choose({}).name);
    if (op == "convert") return std::string(crema::bf16_convert_table().choose(0).name);
    throw py::value_error("bf16_kernel_name: op must be 'gemm' or 'convert', got '" + op + "'");
  }, py::arg("op"));

  m.def("to_bf16", [](py::object src_, py::object dst_, py::object row) {
    F32 src = exact<F32>(src_, "to_bf16", "src", "float32");
    U16 dst = exact<U16>(dst_, "to_bf16", "dst", "uint16");
    require(dst.writeable(), "to_bf16: dst must be writeable");
    require(src.size() == dst.size(), "to_bf16: src and dst differ in size");
    const auto fn = pick(crema::bf16_convert_table(), row, "to_bf16").fn;
    const float* s = src.data();
    uint16_t* d = dst.mutable_data();
    const int64_t n = src.size();
    py::gil_scoped_release nogil;
    fn(s, d, n);
  }, py::arg("src"), py::arg("dst"), py::arg("row") = py::none());

  m.def("from_bf16", [](py::object src_, py::object dst_) {
    U16 src = exact<U16>(src_, "from_bf16", "src", "uint16");
    F32 dst = exact<F32>(dst_, "from_bf16", "dst", "float32");
    require(dst.writeable(), "from_bf16: dst must be writeable");
    require(src.size() == dst.size(), "from_bf16: src and dst differ in size");
    const uint16_t* s = src.data();
    float* d = dst.mutable_data();
    const int64_t n = src.size();
    py::gil_scoped_release nogil;
    crema::from_bf16(s, d, n);
  }, py::arg("src"), py::arg("dst"));

  m.def("bf16_gemm", [](py::object a_, py::object b_, py::object c_, float alpha, float beta,
                        bool trans_a, bool trans_b, py::object row) {
    U16 a = exact<U16>(a_, "bf16_gemm", "a", "uint16");
    U16 b = exact<U16>(b_, "bf16_gemm", "b", "uint16");
    F32 c = exact<F32>(c_, "bf16_gemm", "c", "float32");
    require(c.writeable(), "bf16_gemm: c must be writeable");
    const Mat ma = as_mat(a, "a"), mb = as_mat(b, "b"), mc = as_mat(c, "c");
    const int64_t M = trans_a ? ma.cols : ma.rows, K = trans_a ? ma.rows : ma.cols;
    const int64_t Kb = trans_b ? mb.cols : mb.rows, N = trans_b ? mb.rows : mb.cols;
    require(K == Kb, "bf16_gemm: op(a) is " + std::to_string(M) + " x " + std::to_string(K) +
                         " but op(b) is " + std::to_string(Kb) + " x " + std::to_string(N));
    require(mc.rows == M && mc.cols == N, "bf16_gemm: c is " + std::to_string(mc.rows) + " x " +
                                              std::to_string(mc.cols) + ", the product is " +
                                              std::to_string(M) + " x " + std::to_string(N));
    crema::Bf16GemmArgs g{trans_a, trans_b, M, N, K, alpha, a.data(), ma.ld, b.data(), mb.ld,
                          beta, c.mutable_data(), mc.ld};
    const char* err = crema::bf16_gemm_args_error(g);
    require(err == nullptr, std::string("bf16_gemm: ") + (err ? err : ""));
    const auto fn = pick(crema::bf16_gemm_table(), row, "bf16_gemm").fn;
    py::gil_scoped_release nogil;
    fn(g);
  }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f,
     py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("row") = py::none(),
     "c = alpha * op(a) @ op(b) + beta * c: a, b bf16 (uint16, C-contiguous), c float32.");

  m.def("bf16_conv_rows", [](const std::string& op) {
    switch (pass_of(op, "bf16_conv_rows")) {
      case crema::ConvPass::fwd: return rows_of(crema::bf16_conv_fwd_table());
      case crema::ConvPass::bwd_data: return rows_of(crema::bf16_conv_bwd_data_table());
      default: return rows_of(crema::bf16_conv_bwd_weights_table());
    }
  }, py::arg("op"));
  m.def("bf16_conv_kernel_name", [](const std::string& op, const crema::ConvGeom& g) {
    switch (pass_of(op, "bf16_conv_kernel_name")) {
      case crema::ConvPass::fwd: return std::string(crema::bf16_conv_fwd_table().choose(g).name);
      case crema::ConvPass::bwd_data:
        return std::string(crema::bf16_conv_bwd_data_table().choose(g).name);
      default: return std::string(crema::bf16_conv_bwd_weights_table().choose(g).name);
    }
  }, py::arg("op"), py::arg("geometry"));
  m.def("bf16_conv_workspace_size", [](const crema::ConvGeom& g) {
    return crema::bf16_conv_workspace_floats(g);
  }, py::arg("geometry"));
  m.def("bf16_conv_cache_size", [](const crema::ConvGeom& g, const std::string& op) {
    return crema::bf16_conv_cache_floats(g, pass_of(op, "bf16_conv_cache_size"));
  }, py::arg("geometry"), py::arg("op"));

  m.def("bf16_conv_forward", [](py::object x_, py::object w_, py::object bias_, py::object y_,
                                const crema::ConvGeom& g, py::object ws_, py::object cache_,
                                bool relu, float slope, py::object row) {
    const char* op = "bf16_conv_forward";
    const float* x = in(x_, op, "x", g.N * g.C * g.H * g.W);
    const float* w = in(w_, op, "w", g.K * g.Cg() * g.R * g.S);
    const float* bias = bias_.is_none() ? nullptr : in(bias_, op, "bias", g.K);
    float* y = out(y_, op, "y", g.N * g.K * g.P() * g.Q());
    float* ws = workspace(op, ws_, g);
    Cache cache = cache_of(op, cache_, g, crema::ConvPass::fwd, ws);
    const auto fn = pick_conv(crema::bf16_conv_fwd_table(), row, g, op).fn;
    const crema::ConvScratch s{ws, crema::bf16_conv_workspace_floats(g), cache.p};
    py::gil_scoped_release nogil;
    fn(x, w, bias, y, g, s, relu, slope);
  }, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("geometry"),
     py::arg("workspace"), py::arg("cache") = py::none(), py::arg("relu") = false,
     py::arg("negative_slope") = 0.0f, py::arg("row") = py::none());

  m.def("bf16_conv_backward_data", [](py::object dy_, py::object w_, py::object dx_,
                                      const crema::ConvGeom& g, py::object ws_,
                                      py::object cache_, py::object row) {
    const char* op = "bf16_conv_backward_data";
    const float* dy = in(dy_, op, "dy", g.N * g.K * g.P() * g.Q());
    const float* w = in(w_, op, "w", g.K * g.Cg() * g.R * g.S);
    float* dx = out(dx_, op, "dx", g.N * g.C * g.H * g.W);
    float* ws = workspace(op, ws_, g);
    Cache cache = cache_of(op, cache_, g, crema::ConvPass::bwd_data, ws);
    const auto fn = pick_conv(crema::bf16_conv_bwd_data_table(), row, g, op).fn;
    const crema::ConvScratch s{ws, crema::bf16_conv_workspace_floats(g), cache.p};
    py::gil_scoped_release nogil;
    fn(dy, w, dx, g, s);
  }, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("geometry"), py::arg("workspace"),
     py::arg("cache") = py::none(), py::arg("row") = py::none());

  m.def("bf16_conv_backward_weights", [](py::object x_, py::object dy_, py::object dw_,
                                         py::object db_, const crema::ConvGeom& g,
                                         py::object ws_, py::object row) {
    const char* op = "bf16_conv_backward_weights";
    const float* x = in(x_, op, "x", g.N * g.C * g.H * g.W);
    const float* dy = in(dy_, op, "dy", g.N * g.K * g.P() * g.Q());
    float* dw = out(dw_, op, "dw", g.K * g.Cg() * g.R * g.S);
    float* db = db_.is_none() ? nullptr : out(db_, op, "db", g.K);
    float* ws = workspace(op, ws_, g);
    const auto fn = pick_conv(crema::bf16_conv_bwd_weights_table(), row, g, op).fn;
    const crema::ConvScratch s{ws, crema::bf16_conv_workspace_floats(g), nullptr};
    py::gil_scoped_release nogil;
    fn(x, dy, dw, db, g, s);
  }, py::arg("x"), py::arg("dy"), py::arg("dw"), py::arg("db"), py::arg("geometry"),
     py::arg("workspace"), py::arg("row") = py::none());
}
