// engine._kernels: float32 C-contiguous arrays in, results written into caller-allocated outputs,
// the GIL released around every kernel. Shapes are validated here so a bad call raises
// ValueError instead of touching memory it does not own.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "crema/eltwise.h"
#include "crema/im2col.h"
#include "crema/isa.h"

namespace py = pybind11;
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

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "crema native kernels (C++17)";

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
    k.fwd(xp, yp, n, slope);
  }, py::arg("x"), py::arg("y").noconvert(), py::arg("slope"));

  m.def("relu_backward", [](Arr x, Arr dy, Arr dx, float slope) {
    require(x.size() == dy.size() && x.size() == dx.size(), "relu_backward: sizes differ");
    const auto& k = crema::relu_kernel();
    const float* xp = x.data();
    const float* gp = dy.data();
    float* dp = mut(dx, "dx");
    int64_t n = x.size();
    py::gil_scoped_release nogil;
    k.bwd(xp, gp, dp, n, slope);
  }, py::arg("x"), py::arg("dy"), py::arg("dx").noconvert(), py::arg("slope"));
}
