// pybind11 binding of the bf16 kernels (crema/bf16.h). bf16 arrays are numpy uint16 holding the
// upper half of each float32. Shapes are checked (ValueError) before the GIL is released.
//
//   to_bf16(src f32, dst u16, row=None)            dst = bf16(src) (round to nearest even)
//   from_bf16(src u16, dst f32)                     exact
//   bf16_gemm(a u16, b u16, c f32, alpha, beta, trans_a, trans_b, row=None)
//   bf16_rows(op)                                   [(name, isa, runnable)] of "gemm"/"convert"
//   bf16_kernel_name(op)                            the row the table chooses now (ISA cap)
//   bf16_conv_workspace_size(geometry)              floats
//   bf16_conv_forward / _backward_data / _backward_weights: crema/conv.h layouts, bf16 weights
// `row` runs that table row by name (it must be runnable here): tests check every row.
// Convolution geometry: (N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w,
// group), as engine.kernels.conv_tuple gives it.
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

crema::ConvGeom conv_geom(const py::tuple& t) {
  require(py::len(t) == 14, "bf16 convolution geometry must be (N, C, H, W, K, R, S, pad_h, "
                            "pad_w, stride_h, stride_w, dil_h, dil_w, group)");
  crema::ConvGeom g{};
  int64_t* f[] = {&g.N, &g.C, &g.H, &g.W, &g.K, &g.R, &g.S,
                  &g.ph, &g.pw, &g.sh, &g.sw, &g.dh, &g.dw, &g.G};
  for (int i = 0; i < 14; ++i) *f[i] = t[i].cast<int64_t>();
  const char* err = crema::conv_geom_error(g);
  require(err == nullptr, std::string("bf16 convolution geometry: ") + (err ? err : ""));
  return g;
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

  m.def("bf16_conv_workspace_size", [](py::tuple g_) {
    return crema::bf16_conv_workspace_floats(conv_geom(g_));
  }, py::arg("geometry"));

  m.def("bf16_conv_forward", [](py::object x_, py::object w_, py::object bias_, py::object y_,
                                py::tuple g_, py::object ws_) {
    const auto g = conv_geom(g_);
    const char* op = "bf16_conv_forward";
    const float* x = in(x_, op, "x", g.N * g.C * g.H * g.W);
    U16 w = exact<U16>(w_, op, "w", "uint16");
    check_size(op, "w", w.size(), g.K * g.Cg() * g.R * g.S);
    const float* bias = bias_.is_none() ? nullptr : in(bias_, op, "bias", g.K);
    float* y = out(y_, op, "y", g.N * g.K * g.P() * g.Q());
    float* ws = workspace(op, ws_, g);
    const uint16_t* wp = w.data();
    py::gil_scoped_release nogil;
    crema::bf16_conv_forward(x, wp, bias, y, g, ws);
  }, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("geometry"),
     py::arg("workspace"));

  m.def("bf16_conv_backward_data", [](py::object dy_, py::object w_, py::object dx_,
                                      py::tuple g_, py::object ws_) {
    const auto g = conv_geom(g_);
    const char* op = "bf16_conv_backward_data";
    const float* dy = in(dy_, op, "dy", g.N * g.K * g.P() * g.Q());
    U16 w = exact<U16>(w_, op, "w", "uint16");
    check_size(op, "w", w.size(), g.K * g.Cg() * g.R * g.S);
    float* dx = out(dx_, op, "dx", g.N * g.C * g.H * g.W);
    float* ws = workspace(op, ws_, g);
    const uint16_t* wp = w.data();
    py::gil_scoped_release nogil;
    crema::bf16_conv_backward_data(dy, wp, dx, g, ws);
  }, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("geometry"), py::arg("workspace"));

  m.def("bf16_conv_backward_weights", [](py::object x_, py::object dy_, py::object dw_,
                                         py::object db_, py::tuple g_, py::object ws_) {
    const auto g = conv_geom(g_);
    const char* op = "bf16_conv_backward_weights";
    const float* x = in(x_, op, "x", g.N * g.C * g.H * g.W);
    const float* dy = in(dy_, op, "dy", g.N * g.K * g.P() * g.Q());
    float* dw = out(dw_, op, "dw", g.K * g.Cg() * g.R * g.S);
    float* db = db_.is_none() ? nullptr : out(db_, op, "db", g.K);
    float* ws = workspace(op, ws_, g);
    py::gil_scoped_release nogil;
    crema::bf16_conv_backward_weights(x, dy, dw, db, g, ws);
  }, py::arg("x"), py::arg("dy"), py::arg("dw"), py::arg("db"), py::arg("geometry"),
     py::arg("workspace"));
}
