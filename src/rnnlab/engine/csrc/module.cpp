// pybind11 module of the rnnlab C++ engine: forward / backward of one
// recurrent layer direction (see loop.h).  mode: 0 Elman tanh, 1 Elman ReLU,
// 2 LSTM, 3 GRU.  The trailing rec_mask, zone_h, zone_c (recurrent dropout
// and zoneout, see loop.h and unroll.py) are optional: None or empty = off.
#include <torch/extension.h>

#include "loop.h"
#include "masks.h"  // bernoulli_fill: the regularisers' random masks
#include "prof.h"   // phase timers of the time loop (benchmarks/profile_lstm.py)
#include "variants.h"  // LN LSTM / GRU and Skip RNN loops

namespace rnnlab {

static Tensor req(const Tensor& t, const at::ScalarType dt, const char* what) {
  TORCH_CHECK(t.defined(), "rnnlab: ", what, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "rnnlab: ", what, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dt, "rnnlab: ", what, " has dtype ",
              t.scalar_type(), ", expected ", dt);
  return t.contiguous();
}

// Optional tensors: undefined or numel() == 0 mean "absent".
static Tensor prep(const Tensor& t, const at::ScalarType dt, const char* what) {
  if (!t.defined() || t.numel() == 0) return at::empty({0}, at::TensorOptions().dtype(dt));
  return req(t, dt, what);
}
static Tensor prep(const std::optional<Tensor>& t, const at::ScalarType dt, const char* what) {
  return t.has_value() ? prep(*t, dt, what) : at::empty({0}, at::TensorOptions().dtype(dt));
}

template <typename F>
static auto dispatch(int64_t mode, at::ScalarType dt, F&& f) {
  switch (mode) {
    case 0:
      return dt == at::kDouble ? f(double(), ElmanCell<false>())
                               : f(float(), ElmanCell<false>());
    case 1:
      return dt == at::kDouble ? f(double(), ElmanCell<true>())
                               : f(float(), ElmanCell<true>());
    case 2:
      return dt == at::kDouble ? f(double(), LSTMCell()) : f(float(), LSTMCell());
    case 3:
      return dt == at::kDouble ? f(double(), GRUCell()) : f(float(), GRUCell());
  }
  TORCH_CHECK(false, "rnnlab: unknown mode ", mode);
  __builtin_unreachable();
}

static void check_dtype(at::ScalarType dt) {
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble,
              "rnnlab C++ engine supports float32 and float64, got ", dt);
}

std::vector<Tensor> forward(int64_t mode, Tensor x, Tensor batch_sizes,
                            Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh,
                            Tensor b_ih, Tensor b_hh, bool reverse, bool save,
                            std::optional<Tensor> rec_mask_,
                            std::optional<Tensor> zone_h_,
                            std::optional<Tensor> zone_c_) {
  const auto dt = x.scalar_type();
  check_dtype(dt);
  TORCH_CHECK(x.dim() == 2 && h0.dim() == 2, "rnnlab: x and h0 must be 2-D");
  x = req(x, dt, "x");
  h0 = req(h0, dt, "h0");
  c0 = prep(c0, dt, "c0");
  w_ih = req(w_ih, dt, "w_ih");
  w_hh = req(w_hh, dt, "w_hh");
  b_ih = prep(b_ih, dt, "b_ih");
  b_hh = prep(b_hh, dt, "b_hh");
  const Tensor rec_mask = prep(rec_mask_, dt, "rec_mask");
  const Tensor zone_h = prep(zone_h_, dt, "zone_h");
  const Tensor zone_c = prep(zone_c_, dt, "zone_c");
  at::NoGradGuard ng;
  return dispatch(mode, dt, [&](auto tv, auto cell) {
    using T = decltype(tv);
    using C = decltype(cell);
    return forward_impl<T, C>(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh,
                              reverse, save, rec_mask, zone_h, zone_c);
  });
}

std::vector<Tensor> backward(int64_t mode, Tensor x, Tensor batch_sizes,
                             Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh,
                             Tensor b_ih, Tensor b_hh, bool reverse,
                             std::vector<Tensor> saved, Tensor grad_out,
                             Tensor grad_hn, Tensor grad_cn, bool probe,
                             std::optional<Tensor> rec_mask_,
                             std::optional<Tensor> zone_h_,
                             std::optional<Tensor> zone_c_) {
  const auto dt = x.scalar_type();
  check_dtype(dt);
  x = req(x, dt, "x");
  h0 = req(h0, dt, "h0");
  c0 = prep(c0, dt, "c0");
  w_ih = req(w_ih, dt, "w_ih");
  w_hh = req(w_hh, dt, "w_hh");
  b_ih = prep(b_ih, dt, "b_ih");
  b_hh = prep(b_hh, dt, "b_hh");
  grad_out = prep(grad_out, dt, "grad_out");
  grad_hn = prep(grad_hn, dt, "grad_hn");
  grad_cn = prep(grad_cn, dt, "grad_cn");
  for (auto& s : saved) s = req(s, dt, "saved tensor");
  const Tensor rec_mask = prep(rec_mask_, dt, "rec_mask");
  const Tensor zone_h = prep(zone_h_, dt, "zone_h");
  const Tensor zone_c = prep(zone_c_, dt, "zone_c");
  at::NoGradGuard ng;
  return dispatch(mode, dt, [&](auto tv, auto cell) {
    using T = decltype(tv);
    using C = decltype(cell);
    return backward_impl<T, C>(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh,
                               reverse, saved, grad_out, grad_hn, grad_cn,
                               probe, rec_mask, zone_h, zone_c);
  });
}

// Phase timers (prof.h): turn on/off (clearing the table), and read it as
// (phase names, seconds: (threads, phases)).
static void profile_enable(bool on) {
  prof::reset();
  prof::set_enabled(on);
}
static std::tuple<std::vector<std::string>, Tensor> profile_read() {
  std::vector<std::string> names(prof::kNames, prof::kNames + prof::kPhases);
  Tensor sec = at::empty({prof::kMaxThreads, prof::kPhases}, at::kDouble);
  double* d = sec.data_ptr<double>();
  for (int p = 0; p < prof::kMaxThreads; ++p)
    for (int k = 0; k < prof::kPhases; ++k) d[p * prof::kPhases + k] = prof::table()[p].sec[k];
  return {names, sec};
}

}  // namespace rnnlab

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnlab C++ time loop (forward / hand-written BPTT)";
  m.def("forward", &rnnlab::forward, "forward of one layer direction",
        py::arg("mode"), py::arg("x"), py::arg("batch_sizes"), py::arg("h0"),
        py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
        py::arg("b_hh"), py::arg("reverse"), py::arg("save"),
        py::arg("rec_mask") = py::none(), py::arg("zone_h") = py::none(),
        py::arg("zone_c") = py::none());
  m.def("backward", &rnnlab::backward, "BPTT of one layer direction",
        py::arg("mode"), py::arg("x"), py::arg("batch_sizes"), py::arg("h0"),
        py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
        py::arg("b_hh"), py::arg("reverse"), py::arg("saved"),
        py::arg("grad_out"), py::arg("grad_hn"), py::arg("grad_cn"),
        py::arg("probe"), py::arg("rec_mask") = py::none(),
        py::arg("zone_h") = py::none(), py::arg("zone_c") = py::none());
  m.def("ln_forward", &rnnlab::var::ln_forward, "LN LSTM / GRU forward (variants.h)");
  m.def("ln_backward", &rnnlab::var::ln_backward, "LN LSTM / GRU BPTT (variants.h)");
  m.def("skip_forward", &rnnlab::var::skip_forward, "Skip RNN forward (variants.h)");
  m.def("skip_backward", &rnnlab::var::skip_backward, "Skip RNN BPTT (variants.h)");
  m.def("bernoulli_fill", &rnnlab::bernoulli_fill,
        "out[i] = value with probability p else 0, in place (SplitMix64 from seed; masks.h)",
        py::arg("out"), py::arg("p"), py::arg("value"), py::arg("seed"));
  m.def("profile_enable", &rnnlab::profile_enable,
        "phase timers of the time loop on/off (prof.h); clears them", py::arg("on"));
  m.def("profile_read", &rnnlab::profile_read,
        "(phase names, seconds per thread and phase as a (64, phases) float64 tensor)");
  m.def("num_threads_for", &rnnlab::choose_threads,
        "threads the time loop would use for (G, H, N, T)");
}
