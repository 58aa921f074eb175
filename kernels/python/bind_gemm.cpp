// pybind11 binding of SGEMM (crema/gemm.h).
//
// sgemm(a, b, c, alpha, beta, trans_a, trans_b): c = alpha * op(a) @ op(b) + beta * c with
// 2-D float32 arrays whose rows may be strided (the leading dimension is the row stride) but
// whose elements within a row are contiguous; c must be writeable and must not overlap a or b.
// Shapes and strides are checked (ValueError) before the GIL is released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "crema/gemm.h"

namespace py = pybind11;

namespace {

using FArr = py::array_t<float, 0>;  // any strides; never converted (checked with check_)

void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

struct Mat {
  int64_t rows, cols, ld;
  py::array arr;
};

Mat as_mat(const py::handle& obj, const char* name) {
  require(FArr::check_(obj), std::string("sgemm: ") + name + " must be a float32 numpy array");
  auto a = py::reinterpret_borrow<py::array>(obj);
  require(a.ndim() == 2, std::string("sgemm: ") + name + " must be 2-D, got " +
                             std::to_string(a.ndim()) + " dimensions");
  Mat m{a.shape(0), a.shape(1), 0, a};
  const int64_t s0 = a.strides(0), s1 = a.strides(1);
  require(m.cols <= 1 || s1 == int64_t(sizeof(float)),
          std::string("sgemm: ") + name + "'s rows must be contiguous (column stride 4 bytes)");
  if (m.rows <= 1) {
    m.ld = std::max<int64_t>(1, m.cols);
  } else {
    require(s0 > 0 && s0 % int64_t(sizeof(float)) == 0,
            std::string("sgemm: ") + name + "'s row stride must be a positive multiple of 4");
    m.ld = s0 / int64_t(sizeof(float));
    require(m.ld >= m.cols, std::string("sgemm: ") + name + "'s rows overlap");
  }
  return m;
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("sgemm_kernel_name", [] { return std::string(crema::sgemm_kernel().name); },
        "The SGEMM kernel that runs now (after CREMA_MAX_ISA).");

  m.def("sgemm", [](py::object a_, py::object b_, py::object c_, float alpha, float beta,
                    bool trans_a, bool trans_b) {
    Mat a = as_mat(a_, "a"), b = as_mat(b_, "b"), c = as_mat(c_, "c");
    require(c.arr.writeable(), "sgemm: c must be writeable");
    const int64_t M = trans_a ? a.cols : a.rows, K = trans_a ? a.rows : a.cols;
    const int64_t Kb = trans_b ? b.cols : b.rows, N = trans_b ? b.rows : b.cols;
    require(K == Kb, "sgemm: op(a) is " + std::to_string(M) + " x " + std::to_string(K) +
                         " but op(b) is " + std::to_string(Kb) + " x " + std::to_string(N));
    require(c.rows == M && c.cols == N, "sgemm: c is " + std::to_string(c.rows) + " x " +
                                            std::to_string(c.cols) + ", the product is " +
                                            std::to_string(M) + " x " + std::to_string(N));
    crema::GemmArgs g{trans_a, trans_b, M, N, K, alpha,
                      static_cast<const float*>(a.arr.data()), a.ld,
                      static_cast<const float*>(b.arr.data()), b.ld, beta,
                      static_cast<float*>(c.arr.mutable_data()), c.ld};
    const char* err = crema::sgemm_args_error(g);
    require(err == nullptr, std::string("sgemm: ") + (err ? err : ""));
    py::gil_scoped_release nogil;
    crema::sgemm(g);
  }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f,
     py::arg("trans_a") = false, py::arg("trans_b") = false,
     "c = alpha * op(a) @ op(b) + beta * c (float32, rows contiguous, any row stride); beta == 0 "
     "ignores c's old contents.");
}
