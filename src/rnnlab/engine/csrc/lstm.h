// LSTM step math (torch.nn.LSTM gate order i, f, g, o).
//   c' = f*c + i*g,  h' = o*tanh(c')
// Forward row: gates pre-activation = gi (input projection) + bg (b_ih + b_hh,
// 4H) + gh (recurrent GEMM, this thread's scratch).  Activated gates are
// written back into gi (the saved buffer).
#pragma once
#include "common.h"

namespace rnnlab {

struct LSTMCell {
  static constexpr int G = 4;   // gate blocks of W_hh / W_ih
  static constexpr int GD = 4;  // width (in H) of the dgates buffer
  static constexpr bool kHasC = true;
  static constexpr bool kDhBeta = false;  // dh_prev GEMM overwrites dh
  static inline int64_t hrow(int64_t k, int64_t) { return k; }

  // gh: scratch row, 4 blocks of hp (this thread's units); gi: full row of
  // 4H (torch layout).  hp units start at j0.  kX: gi holds the input
  // projection W_ih x_t (added here); false when the loop has already summed
  // it into gh (the fused input projection), and gi only receives the gates.
  template <bool kX = true, typename T>
  static inline void fwd_row(const T* gh, int64_t hp, T* gi, int64_t H,
                             int64_t j0, const T* /*hprev*/, T* c, T* hout,
                             T* csave, T* /*hnsave*/, const T* bg,
                             const T* /*xs*/ = nullptr, const T* /*bx*/ = nullptr) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    T* gI = gi + j0;
    T* gF = gi + H + j0;
    T* gG = gi + 2 * H + j0;
    T* gO = gi + 3 * H + j0;
    T* cc = c + j0;
    T* hh = hout + j0;
    T* cs = csave ? csave + j0 : nullptr;
    const T* bI = bg + j0;
    const T* bF = bg + H + j0;
    const T* bG = bg + 2 * H + j0;
    const T* bO = bg + 3 * H + j0;
    for_chunks<T>(hp, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V ai = L.ld(bI + u) + L.ld(gh + u), af = L.ld(bF + u) + L.ld(gh + hp + u);
      V ag = L.ld(bG + u) + L.ld(gh + 2 * hp + u), ao = L.ld(bO + u) + L.ld(gh + 3 * hp + u);
      if (kX) {
        ai = ai + L.ld(gI + u);
        af = af + L.ld(gF + u);
        ag = ag + L.ld(gG + u);
        ao = ao + L.ld(gO + u);
      }
      V i = Tr::sigmoid(ai);
      V f = Tr::sigmoid(af);
      V g = Tr::tanh(ag);
      V o = Tr::sigmoid(ao);
      V cn = f * L.ld(cc + u) + i * g;
      V hn = o * Tr::tanh(cn);
      L.st(gI + u, i);
      L.st(gF + u, f);
      L.st(gG + u, g);
      L.st(gO + u, o);
      L.st(cc + u, cn);
      L.st(hh + u, hn);
      if (cs) L.st(cs + u, cn);
    });
  }

  // Backward of one row for units [j0, j0+hp).  dh, dc: state rows (H), in:
  // total dL/dh_t, dL/dc_t ; out: dc <- dL/dc_{t-1} (dh is overwritten by the
  // GEMM afterwards).  gates: saved activated gates row (4H); cprev: c_{t-1}
  // row; cnew: c_t row; dg: dgates row (4H) written for own units.
  template <typename T>
  static inline void bwd_row(T* dh, T* dc, const T* gates, const T* /*extra*/,
                             const T* /*hprev*/, const T* cprev,
                             const T* cnew, T* dg, int64_t H, int64_t j0,
                             int64_t hp) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    const T* gI = gates + j0;
    const T* gF = gates + H + j0;
    const T* gG = gates + 2 * H + j0;
    const T* gO = gates + 3 * H + j0;
    T* dI = dg + j0;
    T* dF = dg + H + j0;
    T* dG = dg + 2 * H + j0;
    T* dO = dg + 3 * H + j0;
    dh += j0;
    dc += j0;
    cprev += j0;
    cnew += j0;
    for_chunks<T>(hp, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V i = L.ld(gI + u), f = L.ld(gF + u), g = L.ld(gG + u), o = L.ld(gO + u);
      V tc = Tr::tanh(L.ld(cnew + u));
      V gh = L.ld(dh + u);
      V dct = L.ld(dc + u) + gh * o * (T(1) - tc * tc);
      V dob = gh * tc;
      L.st(dI + u, dct * g * i * (T(1) - i));
      L.st(dF + u, dct * L.ld(cprev + u) * f * (T(1) - f));
      L.st(dG + u, dct * i * (T(1) - g * g));
      L.st(dO + u, dob * o * (T(1) - o));
      L.st(dc + u, dct * f);
    });
  }
};

}  // namespace rnnlab
