// pybind11 bindings of the convolution (crema/conv.h): the typed geometry and one entry point per
// pass (conv_forward, conv_backward_data, conv_backward_weights), each running the row its table
// chooses (Winograd or direct, per ISA).
//
// ConvGeometry(N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, group,
// algo_fwd, algo_bwd_data, algo_bwd_weights) is checked once when it is made (ValueError) and immutable after.
// Arrays are float32 and C-contiguous; outputs (y, dx, dw, db, workspace, weight_cache) must be
// exactly that (never a converted copy, which would hide the writes). Every size is checked
// against the geometry (ValueError) before the GIL is released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "crema/conv.h"

namespace py = pybind11;

namespace {

using Arr = py::array_t<float, py::array::c_style>;
using crema::ConvAlgo;
using crema::ConvGeom;
using crema::ConvPass;

void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

ConvAlgo algo_from_name(const std::string& name) {
  if (name == "auto") return ConvAlgo::rule;
  if (name == "direct") return ConvAlgo::direct;
  if (name == "winograd") return ConvAlgo::winograd;
  throw py::value_error("convolution algorithm must be auto, direct or winograd, got '" + name +
                        "'");
}

const char* algo_name(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::direct: return "direct";
    case ConvAlgo::winograd: return "winograd";
    default: return "auto";
  }
}

ConvPass pass_from_name(const std::string& op, const char* where) {
  if (op == "fwd") return ConvPass::fwd;
  if (op == "bwd_data") return ConvPass::bwd_data;
  if (op == "bwd_weights") return ConvPass::bwd_weights;
  throw py::value_error(std::string(where) + ": op must be fwd, bwd_data or bwd_weights, got '" +
                        op + "'");
}

ConvGeom make_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                   int64_t pad_h, int64_t pad_w, int64_t stride_h, int64_t stride_w,
                   int64_t dil_h, int64_t dil_w, int64_t group, const std::string& algo_fwd,
                   const std::string& algo_bwd_data, const std::string& algo_bwd_weights) {
  ConvGeom g{N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, group};
  const char* err = crema::conv_geom_error(g);
  require(err == nullptr, std::string("convolution geometry: ") + (err ? err : ""));
  g.algo_fwd = algo_from_name(algo_fwd);
  g.algo_bwd_data = algo_from_name(algo_bwd_data);
  g.algo_bwd_weights = algo_from_name(algo_bwd_weights);
  return g;
}

py::tuple as_tuple(const ConvGeom& g) {
  return py::make_tuple(g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.ph, g.pw, g.sh, g.sw, g.dh, g.dw,
                        g.G);
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

int64_t x_count(const ConvGeom& g) { return g.N * g.C * g.H * g.W; }
int64_t y_count(const ConvGeom& g) { return g.N * g.K * g.P() * g.Q(); }
int64_t w_count(const ConvGeom& g) { return g.K * g.Cg() * g.R * g.S; }

// The scratch of one call: the workspace (at least what the chosen row runs with) and the pass's
// weight cache; without one (None) a row that keeps a cache gets a zeroed one for this call.
struct Scratch {
  crema::ConvScratch s{nullptr, 0, nullptr};
  std::vector<float> own_cache;
};

Scratch scratch(const py::handle& ws, const py::handle& cache, const ConvGeom& g, ConvPass pass,
                const char* op, std::initializer_list<std::pair<const float*, int64_t>> args) {
  Scratch r;
  require(Arr::check_(ws), std::string(op) + ": workspace must be a C-contiguous float32 array");
  auto wa = py::reinterpret_borrow<Arr>(ws);
  require(wa.writeable(), std::string(op) + ": workspace must be writeable");
  const int64_t need = crema::conv_min_workspace_floats(g, pass);
  require(static_cast<int64_t>(wa.size()) >= need,
          std::string(op) + ": workspace has " + std::to_string(wa.size()) +
              " floats, this kernel needs " + std::to_string(need) +
              " (conv_workspace_size(geometry))");
  r.s.ws = wa.size() > 0 ? wa.mutable_data() : nullptr;
  r.s.ws_floats = static_cast<int64_t>(wa.size());
  const int64_t cneed = crema::conv_cache_floats(g, pass);
  if (cache.is_none()) {
    if (cneed > 0) {
      r.own_cache.assign(static_cast<size_t>(cneed), 0.f);
      r.s.cache = r.own_cache.data();
    }
    return r;
  }
  require(Arr::check_(cache),
          std::string(op) + ": weight_cache must be a C-contiguous float32 array");
  auto ca = py::reinterpret_borrow<Arr>(cache);
  require(ca.writeable(), std::string(op) + ": weight_cache must be writeable");
  require(static_cast<int64_t>(ca.size()) >= cneed,
          std::string(op) + ": weight_cache has " + std::to_string(ca.size()) +
              " floats, the geometry needs " + std::to_string(cneed) +
              " (conv_weight_cache_size(geometry, op))");
  const char* c0 = reinterpret_cast<const char*>(ca.data());
  const char* c1 = c0 + 4 * ca.size();
  auto overlaps = [&](const void* p, int64_t n) {
    const char* q = static_cast<const char*>(p);
    return p != nullptr && q < c1 && c0 < q + 4 * n;
  };
  bool clash = overlaps(r.s.ws, r.s.ws_floats);
  for (const auto& a : args) clash = clash || overlaps(a.first, a.second);
  require(!clash, std::string(op) + ": weight_cache must not overlap another argument");
  r.s.cache = cneed > 0 ? ca.mutable_data() : nullptr;
  return r;
}

}  // namespace

void bind_conv(py::module_& m) {
  py::class_<ConvGeom>(m, "ConvGeometry",
                       "A checked, immutable 2-D convolution geometry: input N x C x H x W, "
                       "K output channels, an R x S kernel, pad, stride, dilation, group, and "
                       "the algorithm ('auto': the per-ISA rule, 'direct' or 'winograd') the "
                       "three passes may use.")
      .def(py::init(&make_geom), py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"),
           py::arg("K"), py::arg("R"), py::arg("S"), py::arg("pad_h") = 0, py::arg("pad_w") = 0,
           py::arg("stride_h") = 1, py::arg("stride_w") = 1, py::arg("dil_h") = 1,
           py::arg("dil_w") = 1, py::arg("group") = 1, py::arg("algo_fwd") = "auto",
           py::arg("algo_bwd_data") = "auto", py::arg("algo_bwd_weights") = "auto")
      .def_readonly("N", &ConvGeom::N)
      .def_readonly("C", &ConvGeom::C)
      .def_readonly("H", &ConvGeom::H)
      .def_readonly("W", &ConvGeom::W)
      .def_readonly("K", &ConvGeom::K)
      .def_readonly("R", &ConvGeom::R)
      .def_readonly("S", &ConvGeom::S)
      .def_readonly("pad_h", &ConvGeom::ph)
      .def_readonly("pad_w", &ConvGeom::pw)
      .def_readonly("stride_h", &ConvGeom::sh)
      .def_readonly("stride_w", &ConvGeom::sw)
      .def_readonly("dil_h", &ConvGeom::dh)
      .def_readonly("dil_w", &ConvGeom::dw)
      .def_readonly("group", &ConvGeom::G)
      .def_property_readonly("P", &ConvGeom::P)
      .def_property_readonly("Q", &ConvGeom::Q)
      .def_property_readonly("algo_fwd", [](const ConvGeom& g) { return algo_name(g.algo_fwd); })
      .def_property_readonly("algo_bwd_data",
                             [](const ConvGeom& g) { return algo_name(g.algo_bwd_data); })
      .def_property_readonly("algo_bwd_weights",
                             [](const ConvGeom& g) { return algo_name(g.algo_bwd_weights); })
      .def("astuple", &as_tuple,
           "(N, C, H, W, K, R, S, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, group)")
      .def("__eq__", [](const ConvGeom& a, const ConvGeom& b) {
        return as_tuple(a).equal(as_tuple(b)) && a.algo_fwd == b.algo_fwd &&
               a.algo_bwd_data == b.algo_bwd_data && a.algo_bwd_weights == b.algo_bwd_weights;
      })
      .def("__repr__", [](const ConvGeom& g) {
        return "ConvGeometry" + std::string(py::str(as_tuple(g))) + " algo_fwd=" +
               algo_name(g.algo_fwd) + " algo_bwd_data=" + algo_name(g.algo_bwd_data) +
               " algo_bwd_weights=" + algo_name(g.algo_bwd_weights);
      })
      .def(py::pickle(
          [](const ConvGeom& g) {
            return py::make_tuple(as_tuple(g), algo_name(g.algo_fwd), algo_name(g.algo_bwd_data),
                                  algo_name(g.algo_bwd_weights));
          },
          [](const py::tuple& t) {
            const auto v = t[0].cast<std::vector<int64_t>>();
            require(v.size() == 14 && t.size() == 4,
                    "ConvGeometry: a pickled geometry has 14 sizes and 3 algorithms");
            return make_geom(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
                             v[11], v[12], v[13], t[1].cast<std::string>(),
                             t[2].cast<std::string>(), t[3].cast<std::string>());
          }));

  m.def("conv_algorithm", [](const std::string& op, ConvGeom g) {
    const ConvPass pass = pass_from_name(op, "conv_algorithm");
    g.algo_fwd = g.algo_bwd_data = g.algo_bwd_weights = ConvAlgo::rule;
    const std::string name = crema::conv_kernel_name(g, pass);
    return std::string(name.rfind("winograd_", 0) == 0 ? "winograd" : "direct");
  }, py::arg("op"), py::arg("geometry"),
     "The algorithm the fixed per-ISA rule picks for this pass under the ISA cap in force.");

  m.def("conv_kernel_name", [](const std::string& op, const ConvGeom& g) {
    return std::string(crema::conv_kernel_name(g, pass_from_name(op, "conv_kernel_name")));
  }, py::arg("op"), py::arg("geometry"),
     "The table row the op runs for this geometry under the ISA cap in force.");

  m.def("conv_weight_cache_size", [](const ConvGeom& g, const std::string& op) {
    return crema::conv_cache_floats(g, pass_from_name(op, "conv_weight_cache_size"));
  }, py::arg("geometry"), py::arg("op") = "fwd",
     "Floats of the pass's weight cache for any ISA cap (zero it before first use; one per "
     "layer and pass).");

  m.def("conv_workspace_size", [](const ConvGeom& g) {
    return crema::conv_workspace_floats(g);
  }, py::arg("geometry"),
     "Floats of workspace that every pass's kernel wants for this geometry, for any ISA cap and "
     "the thread count in force.");

  m.def("conv_min_workspace_size", [](const ConvGeom& g, const std::string& op) {
    return crema::conv_min_workspace_floats(g, pass_from_name(op, "conv_min_workspace_size"));
  }, py::arg("geometry"), py::arg("op"),
     "The least workspace (floats) the pass's kernel chosen now runs with (on fewer threads).");

  m.def("conv_forward", [](Arr x, Arr w, py::object bias, py::object y, const ConvGeom& g,
                           py::object ws, bool relu, float slope, py::object wcache) {
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
    Scratch s = scratch(ws, wcache, g, ConvPass::fwd, op,
                        {{xp, x_count(g)}, {wp, w_count(g)}, {yp, y_count(g)}});
    py::gil_scoped_release nogil;
    crema::conv_forward(xp, wp, bp, yp, g, s.s, relu, slope);
  }, py::arg("x"), py::arg("weights"), py::arg("bias"), py::arg("y"), py::arg("geometry"),
     py::arg("workspace"), py::arg("relu") = false, py::arg("negative_slope") = 0.f,
     py::arg("weight_cache") = py::none(),
     "y (N, K, P, Q) = conv(x (N, C, H, W), weights (K, C/group, R, S)) + bias (K,) or None; "
     "with relu=True, y = max(v, 0) + negative_slope * min(v, 0) of that (fused epilogue).");

  m.def("conv_backward_data", [](Arr dy, Arr w, py::object dx, const ConvGeom& g, py::object ws,
                                 py::object wcache) {
    const char* op = "conv_backward_data";
    const float* dyp = in_ptr(dy, op, "dy", y_count(g));
    const float* wp = in_ptr(w, op, "weights", w_count(g));
    float* dxp = out_ptr(dx, op, "dx", x_count(g));
    Scratch s = scratch(ws, wcache, g, ConvPass::bwd_data, op,
                        {{dyp, y_count(g)}, {wp, w_count(g)}, {dxp, x_count(g)}});
    py::gil_scoped_release nogil;
    crema::conv_backward_data(dyp, wp, dxp, g, s.s);
  }, py::arg("dy"), py::arg("weights"), py::arg("dx"), py::arg("geometry"), py::arg("workspace"),
     py::arg("weight_cache") = py::none(),
     "dx (N, C, H, W) = the data gradient of the convolution for dy (N, K, P, Q) (overwritten).");

  m.def("conv_backward_weights", [](Arr x, Arr dy, py::object dw, py::object db,
                                    const ConvGeom& g, py::object ws) {
    const char* op = "conv_backward_weights";
    const float* xp = in_ptr(x, op, "x", x_count(g));
    const float* dyp = in_ptr(dy, op, "dy", y_count(g));
    float* dwp = out_ptr(dw, op, "dw", w_count(g));
    float* dbp = db.is_none() ? nullptr : out_ptr(db, op, "db", g.K);
    Scratch s = scratch(ws, py::none(), g, ConvPass::bwd_weights, op, {});
    py::gil_scoped_release nogil;
    crema::conv_backward_weights(xp, dyp, dwp, dbp, g, s.s);
  }, py::arg("x"), py::arg("dy"), py::arg("dw"), py::arg("db"), py::arg("geometry"),
     py::arg("workspace"),
     "dw (K, C/group, R, S) += weight gradient; db (K,) += bias gradient unless None.");
}
