// GRU step math, exactly torch.nn.GRU (gate order r, z, n):
//   r = s(Wir x + bir + Whr h + bhr), z = s(Wiz x + biz + Whz h + bhz)
//   n = tanh(Win x + bin + r * (Whn h + bhn)),  h' = (1-z)*n + z*h
// gi holds Wi x + bi (+ bhr, bhz folded; NOT bhn).  The activated r, z, n are
// written back into gi; hn = Whn h + bhn is saved separately (needed for dr).
// dgates buffer layout per row (4H): [dn_h, dr, dz, dn_i]: columns [0,3H) are
// the hidden-side grads (one GEMM per step against W_hh rows permuted to
// n, r, z -- the packing does the permutation) and columns [H,4H) are the
// input-side grads in torch's r, z, n order (one strided view for dx, dW_ih).
#pragma once
#include "common.h"

namespace rnnlab {

struct GRUCell {
  static constexpr int G = 3;
  static constexpr int GD = 4;
  static constexpr bool kHasC = false;
  static constexpr bool kDhBeta = true;  // dh_prev = z*dh (written here) + GEMM
  // W_hh row used for column k of the hidden-side dgates ([n, r, z] order)
  static inline int64_t hrow(int64_t k, int64_t H) {
    return k < H ? k + 2 * H : k - H;
  }

  // kX: gi holds the input side Wi x + bi (+ bhr, bhz); false when the loop
  // fused the input projection: then xs (3 blocks of hp, this thread's units)
  // holds Wi x and bx (3H, or null) the biases gi would have folded in, and gi
  // only receives the activated gates.
  template <bool kX = true, typename T>
  static inline void fwd_row(const T* gh, int64_t hp, T* gi, int64_t H,
                             int64_t j0, const T* hprev, T* /*c*/, T* hout,
                             T* /*csave*/, T* hnsave, const T* bhn,
                             const T* xs = nullptr, const T* bx = nullptr) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    T* gR = gi + j0;
    T* gZ = gi + H + j0;
    T* gN = gi + 2 * H + j0;
    const T* hp_ = hprev + j0;
    T* hh = hout + j0;
    T* hs = hnsave ? hnsave + j0 : nullptr;
    const T* bn = bhn ? bhn + j0 : nullptr;
    for_chunks<T>(hp, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V xr, xz, xn;
      if (kX) {
        xr = L.ld(gR + u);
        xz = L.ld(gZ + u);
        xn = L.ld(gN + u);
      } else {
        xr = L.ld(xs + u);
        xz = L.ld(xs + hp + u);
        xn = L.ld(xs + 2 * hp + u);
        if (bx) {
          xr = xr + L.ld(bx + j0 + u);
          xz = xz + L.ld(bx + H + j0 + u);
          xn = xn + L.ld(bx + 2 * H + j0 + u);
        }
      }
      V r = Tr::sigmoid(xr + L.ld(gh + u));
      V z = Tr::sigmoid(xz + L.ld(gh + hp + u));
      V hn = L.ld(gh + 2 * hp + u);
      if (bn) hn = hn + L.ld(bn + u);
      V n = Tr::tanh(xn + r * hn);
      V h0 = L.ld(hp_ + u);
      V h1 = n + z * (h0 - n);
      L.st(gR + u, r);
      L.st(gZ + u, z);
      L.st(gN + u, n);
      L.st(hh + u, h1);
      if (hs) L.st(hs + u, hn);
    });
  }

  // dh: in dL/dh_t, out z*dh (direct part of dL/dh_{t-1}; GEMM adds the rest)
  template <typename T>
  static inline void bwd_row(T* dh, T* /*dc*/, const T* gates, const T* hnrow,
                             const T* hprev, const T* /*cprev*/,
                             const T* /*cnew*/, T* dg, int64_t H, int64_t j0,
                             int64_t hp) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    const T* gR = gates + j0;
    const T* gZ = gates + H + j0;
    const T* gN = gates + 2 * H + j0;
    const T* hn_ = hnrow + j0;
    const T* hp_ = hprev + j0;
    T* dNh = dg + j0;
    T* dR = dg + H + j0;
    T* dZ = dg + 2 * H + j0;
    T* dNi = dg + 3 * H + j0;
    dh += j0;
    for_chunks<T>(hp, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V r = L.ld(gR + u), z = L.ld(gZ + u), n = L.ld(gN + u);
      V g = L.ld(dh + u);
      V dnp = g * (T(1) - z) * (T(1) - n * n);
      V dzp = g * (L.ld(hp_ + u) - n) * z * (T(1) - z);
      V drp = dnp * L.ld(hn_ + u) * r * (T(1) - r);
      L.st(dR + u, drp);
      L.st(dZ + u, dzp);
      L.st(dNh + u, dnp * r);
      L.st(dNi + u, dnp);
      L.st(dh + u, g * z);
    });
  }
};

}  // namespace rnnlab
