// Elman RNN step math: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh
// (mode 0) or relu (mode 1).  gi holds W_ih x + b_ih + b_hh.
#pragma once
#include "common.h"

namespace rnnlab {

template <bool kRelu>
struct ElmanCell {
  static constexpr int G = 1;
  static constexpr int GD = 1;
  static constexpr bool kHasC = false;
  static constexpr bool kDhBeta = false;
  static inline int64_t hrow(int64_t k, int64_t) { return k; }

  template <typename T>
  static inline void fwd_row(const T* gh, int64_t hp, T* gi, int64_t /*H*/,
                             int64_t j0, const T* /*hprev*/, T* /*c*/, T* hout,
                             T* /*csave*/, T* /*hnsave*/, const T* /*bhn*/) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    T* g = gi + j0;
    T* hh = hout + j0;
    for_chunks<T>(hp, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V a = L.ld(g + u) + L.ld(gh + u);
      L.st(hh + u, kRelu ? Tr::relu(a) : Tr::tanh(a));
    });
  }

  // hnew: the step's output row (h_t) -- the activation's derivative needs it.
  template <typename T>
  static inline void bwd_row(T* dh, T* /*dc*/, const T* hnew,
                             const T* /*extra*/, const T* /*hprev*/,
                             const T* /*cprev*/, const T* /*cnew*/, T* dg,
                             int64_t /*H*/, int64_t j0, int64_t hp) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    const T* y = hnew + j0;
    T* d = dg + j0;
    dh += j0;
    for_chunks<T>(hp, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V yy = L.ld(y + u);
      V g = L.ld(dh + u);
      L.st(d + u, kRelu ? Tr::relu_grad(yy, g) : g * (T(1) - yy * yy));
    });
  }
};

}  // namespace rnnlab
