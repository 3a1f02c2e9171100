// Time loops of the cell variants (see engine/unroll_variants.py, the same
// loops in PyTorch, for the interface and cells/*.py for the equations):
//   ln_forward / ln_backward     layer-normalised LSTM (mode 2) and GRU (3)
//   skip_forward / skip_backward Skip RNN over Elman tanh (0), ReLU (1),
//                                LSTM (2), GRU (3)
//
// Structure per step (one OpenMP team alive for the whole loop, P threads;
// P = 1 runs inline):
//   forward : [GEMM] gh = h_{t-1} @ W_hh^T, thread p owning a slice of the
//             G*H output columns (its W_hh rows packed once per call);
//             barrier; [rows] LN / gate / state math, thread p owning a slice
//             of the step's batch rows; barrier.
//   backward: [rows] gate / LN backward of the step's rows; barrier;
//             [GEMM] dh_{t-1} (+)= dz @ W_hh, thread p owning a slice of the
//             H columns; barrier.
// Unlike loop.h (one barrier per step, each thread owning whole hidden
// units), a row of a layer norm needs all G*H columns of its GEMM, hence the
// second barrier.  Weight, input and LN-parameter gradients are sums over
// all rows: one big GEMM / reduction each after the loop (ATen, oneDNN for
// float32).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "common.h"
#include "loop.h"  // run_region, step_barrier
#include "rgemm.h"

namespace rnnlab {
namespace var {

using at::Tensor;

// ------------------------------------------------------------ plumbing ---
struct Rows {  // step t owns rows [off[t], off[t] + bs[t])
  int64_t T = 0;
  std::vector<int64_t> bs, off;
  explicit Rows(const Tensor& batch_sizes) {
    Tensor b = batch_sizes.to(at::kLong).contiguous();
    T = b.numel();
    const int64_t* p = b.data_ptr<int64_t>();
    bs.assign(p, p + T);
    off.assign(T + 1, 0);
    for (int64_t t = 0; t < T; ++t) off[t + 1] = off[t] + bs[t];
  }
  // step processed s-th (forward processing order)
  int64_t step(int64_t s, bool reverse) const { return reverse ? T - 1 - s : s; }
};

inline void check_rows(const Rows& st, int64_t N, int64_t B) {
  TORCH_CHECK(st.off[st.T] == N, "rnnlab: sum(batch_sizes) != x.size(0)");
  TORCH_CHECK(st.T == 0 || st.bs[0] == B, "rnnlab: batch_sizes[0] != h0.size(0)");
  for (int64_t t = 1; t < st.T; ++t)
    TORCH_CHECK(st.bs[t] <= st.bs[t - 1] && st.bs[t] > 0,
                "rnnlab: batch_sizes must be positive and non-increasing");
}

// Recurrent GEMM against a B packed once per call: C (M x n) =/+= A (M x K) B.
template <typename T>
struct Rec;
template <>
struct Rec<float> {
  static int64_t size(int64_t K, int64_t n) { return rg::packed_size(K, n); }
  template <typename F>
  static void pack_t(int64_t K, int64_t n, float* dst, F&& row) { rg::pack_t(K, n, dst, row); }
  template <typename F>
  static void pack_k(int64_t K, int64_t n, float* dst, F&& krow) { rg::pack_k(K, n, dst, krow); }
  static void mm(int64_t M, int64_t n, int64_t K, const float* A, int64_t lda,
                 const float* Bp, float* C, int64_t ldc, bool acc) {
    rg::run(M, n, K, A, lda, Bp, C, ldc, acc);
  }
};
template <>
struct Rec<double> {  // MKL dgemm on B^T stored row-major (n x K)
  static int64_t size(int64_t K, int64_t n) { return K * n; }
  template <typename F>
  static void pack_t(int64_t K, int64_t n, double* dst, F&& row) {
    for (int64_t j = 0; j < n; ++j) std::memcpy(dst + j * K, row(j), sizeof(double) * K);
  }
  template <typename F>
  static void pack_k(int64_t K, int64_t n, double* dst, F&& krow) {
    for (int64_t k = 0; k < K; ++k) {
      const double* r = krow(k);
      for (int64_t j = 0; j < n; ++j) dst[j * K + k] = r[j];
    }
  }
  static void mm(int64_t M, int64_t n, int64_t K, const double* A, int64_t lda,
                 const double* Bp, double* C, int64_t ldc, bool acc) {
    if (M <= 0 || n <= 0) return;
    gemm_cm('T', 'N', n, M, K, 1.0, Bp, K, A, lda, acc ? 1.0 : 0.0, C, ldc);
  }
};

// The one-shot GEMMs (all steps' input projection, the weight gradients): loop.h's mm_into.

// Threads of the time loop: as loop.h's choose_threads, below ~1.5e5 FLOPs of
// recurrent work per step one thread is faster than two barriers.
inline int team_size(int64_t G, int64_t H, int64_t N, int64_t T) {
  int P = at::get_num_threads();
  if (const char* e = std::getenv("RNNLAB_THREADS")) {
    int v = std::atoi(e);
    if (v > 0) P = std::min(P, v);
  }
  if (P <= 1 || T == 0) return 1;
  const double flops = 2.0 * double(G) * double(H) * double(H) * double(N) / double(T);
  if (flops < 1.5e5) return 1;
  return (int)std::min<int64_t>(P, std::max<int64_t>(1, rg::nblocks(H)));
}

struct Split {  // column slices in whole packed blocks, one per thread
  std::vector<int64_t> c0, n, woff;
  Split(int64_t ncols, int P, int64_t K, bool is_float) {
    const int64_t blk = rg::NB, nb = (ncols + blk - 1) / blk;
    woff.push_back(0);
    for (int p = 0; p < P; ++p) {
      const int64_t b0 = nb * p / P, b1 = nb * (p + 1) / P;
      const int64_t a = std::min(ncols, b0 * blk), z = std::min(ncols, b1 * blk);
      c0.push_back(a);
      n.push_back(z - a);
      const int64_t sz = is_float ? rg::packed_size(K, z - a) : K * (z - a);
      woff.push_back(woff.back() + sz + 64);
    }
  }
};

// Threads: loop.h's run_region (one parallel region) and step_barrier, shared with the plain loops.

inline std::pair<int64_t, int64_t> my_rows(int p, int P, int64_t n) {
  return {n * p / P, n * (p + 1) / P};
}

// ------------------------------------------------------- row vector math ---
template <typename T>
inline T row_sum(const T* a, int64_t n) {
  using Tr = VT<T>;
  using V = typename Tr::V;
  V acc = Tr::bc(T(0));
  for_chunks<T>(n, [&](int64_t u, int w) { acc = acc + Lanes<T>{w}.ld(a + u); });
  return (T)Tr::hsum(acc);
}

// x̂ = (y - mean) / sqrt(var + eps) over n values; returns 1/σ.
template <typename T>
inline T ln_fwd(const T* y, int64_t n, T eps, T* xhat) {
  using Tr = VT<T>;
  using V = typename Tr::V;
  const T mean = row_sum(y, n) / T(n);
  V acc = Tr::bc(T(0));
  int pad = 0;  // zero lanes of a partial last chunk: each added mean² to acc
  for_chunks<T>(n, [&](int64_t u, int w) {
    V d = Lanes<T>{w}.ld(y + u) - mean;
    acc = acc + d * d;
    pad = Tr::W - w;
  });
  const T ssq = (T)Tr::hsum(acc) - T(pad) * mean * mean;
  const T rstd = T(1) / std::sqrt(std::max(ssq, T(0)) / T(n) + eps);
  for_chunks<T>(n, [&](int64_t u, int w) {
    Lanes<T> L{w};
    L.st(xhat + u, (L.ld(y + u) - mean) * rstd);
  });
  return rstd;
}

// dy (=, or += when ACC) rstd (δx̂ - mean(δx̂) - x̂ mean(δx̂ x̂)), δx̂ = dout γ;
// and, when dg is given, dg += dout x̂ and db += dout (the gain's and shift's
// gradients, summed over rows while the row is in L1).
template <typename T, bool ACC>
inline void ln_bwd(const T* dout, const T* gamma, const T* xhat, T rstd, int64_t n, T* dy,
                   T* dg = nullptr, T* db = nullptr) {
  using Tr = VT<T>;
  using V = typename Tr::V;
  V a1 = Tr::bc(T(0)), a2 = Tr::bc(T(0));
  for_chunks<T>(n, [&](int64_t u, int w) {
    Lanes<T> L{w};
    V o = L.ld(dout + u), xh = L.ld(xhat + u);
    V d = o * L.ld(gamma + u);
    a1 = a1 + d;
    a2 = a2 + d * xh;
    if (dg) {
      L.st(dg + u, L.ld(dg + u) + o * xh);
      L.st(db + u, L.ld(db + u) + o);
    }
  });
  const T m1 = (T)Tr::hsum(a1) / T(n), m2 = (T)Tr::hsum(a2) / T(n);
  for_chunks<T>(n, [&](int64_t u, int w) {
    Lanes<T> L{w};
    V xh = L.ld(xhat + u);
    V v = (L.ld(dout + u) * L.ld(gamma + u) - m1 - xh * m2) * rstd;
    if (ACC) v = v + L.ld(dy + u);
    L.st(dy + u, v);
  });
}

// Every row of z (R, G*H): x̂ and 1/σ per block, then z <- x̂ γ + β (in place).
template <typename T>
inline void ln_rows_affine(T* z, T* xhat, T* rstd, const T* g, const T* b,
                           int64_t R, int64_t G, int64_t H, T eps) {
  at::parallel_for(0, R, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t k = 0; k < G; ++k) {
        const int64_t o = r * G * H + k * H;
        rstd[r * G + k] = ln_fwd(z + o, H, eps, xhat + o);
        for_chunks<T>(H, [&](int64_t u, int w) {
          Lanes<T> L{w};
          L.st(z + o + u, L.ld(xhat + o + u) * L.ld(g + k * H + u) + L.ld(b + k * H + u));
        });
      }
  });
}

// ============================================================ LN loops ===
// Cell-specific row math of the LN loop.  fwd: zh = raw W_hh h_{t-1} row
// (G*H), gi = input side after its LN (G*H, overwritten with the activated
// gates), hprev, c (state row, in/out), writes h (out row) and the saved
// pieces.  bwd: see each.
struct LNLstm {
  static constexpr int G = 4;
  static constexpr bool kHasC = true;
  template <typename T>
  static void fwd(const T* zh, T* gi, const T* /*hprev*/, T* c, T* h, T* xhh, T* rstdh,
                  T* csave, T* chat, T* rstdc, T* /*hnsave*/, const T* ghh, const T* bhh,
                  const T* gc, const T* bc, int64_t H, T eps) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    for (int k = 0; k < G; ++k) rstdh[k] = ln_fwd(zh + k * H, H, eps, xhh + k * H);
    for_chunks<T>(H, [&](int64_t u, int w) {
      Lanes<T> L{w};
      auto pre = [&](int k) {
        const int64_t o = k * H + u;
        return L.ld(gi + o) + L.ld(xhh + o) * L.ld(ghh + o) + L.ld(bhh + o);
      };
      V i = Tr::sigmoid(pre(0)), f = Tr::sigmoid(pre(1)), g = Tr::tanh(pre(2)), o = Tr::sigmoid(pre(3));
      V cn = f * L.ld(c + u) + i * g;
      L.st(gi + u, i);
      L.st(gi + H + u, f);
      L.st(gi + 2 * H + u, g);
      L.st(gi + 3 * H + u, o);
      L.st(c + u, cn);
      if (csave) L.st(csave + u, cn);
    });
    *rstdc = ln_fwd(c, H, eps, chat);
    for_chunks<T>(H, [&](int64_t u, int w) {
      Lanes<T> L{w};
      L.st(h + u, L.ld(gi + 3 * H + u) * Tr::tanh(L.ld(chat + u) * L.ld(gc + u) + L.ld(bc + u)));
    });
  }
  // dh: δh_t (total), dc: δc_t in / δc_{t-1} out.  Writes dA (δ at both LN
  // outputs, G*H) and adds LN(c)'s gain / shift gradients into sgc / sbc.
  // tc: scratch row (H).
  template <typename T>
  static void bwd(const T* dh, T* dc, const T* gates, const T* cprev, const T* chat, T rstdc,
                  const T* /*hprev*/, const T* /*hn*/, T* dA, T* /*dAh*/, T* tc, T* /*dhdirect*/,
                  const T* gc, const T* bc, T* sgc, T* sbc, int64_t H) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    T* dyc = dA;  // δ at LN(c_t)'s output, in dA's first block until dA is written
    for_chunks<T>(H, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V t = Tr::tanh(L.ld(chat + u) * L.ld(gc + u) + L.ld(bc + u));
      L.st(tc + u, t);
      L.st(dyc + u, L.ld(dh + u) * L.ld(gates + 3 * H + u) * (T(1) - t * t));
    });
    ln_bwd<T, true>(dyc, gc, chat, rstdc, H, dc, sgc, sbc);  // δc = δc_t + LN backward of δy_c
    for_chunks<T>(H, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V i = L.ld(gates + u), f = L.ld(gates + H + u), g = L.ld(gates + 2 * H + u),
        o = L.ld(gates + 3 * H + u);
      V d = L.ld(dc + u);
      L.st(dA + u, d * g * i * (T(1) - i));
      L.st(dA + H + u, d * L.ld(cprev + u) * f * (T(1) - f));
      L.st(dA + 2 * H + u, d * i * (T(1) - g * g));
      L.st(dA + 3 * H + u, L.ld(dh + u) * L.ld(tc + u) * o * (T(1) - o));
      L.st(dc + u, d * f);
    });
  }
};

struct LNGru {
  static constexpr int G = 3;
  static constexpr bool kHasC = false;
  template <typename T>
  static void fwd(const T* zh, T* gi, const T* hprev, T* /*c*/, T* h, T* xhh, T* rstdh,
                  T* /*csave*/, T* /*chat*/, T* /*rstdc*/, T* hnsave, const T* ghh, const T* bhh,
                  const T*, const T*, int64_t H, T eps) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    for (int k = 0; k < G; ++k) rstdh[k] = ln_fwd(zh + k * H, H, eps, xhh + k * H);
    for_chunks<T>(H, [&](int64_t u, int w) {
      Lanes<T> L{w};
      auto gh = [&](int k) {
        const int64_t o = k * H + u;
        return L.ld(xhh + o) * L.ld(ghh + o) + L.ld(bhh + o);
      };
      V r = Tr::sigmoid(L.ld(gi + u) + gh(0));
      V z = Tr::sigmoid(L.ld(gi + H + u) + gh(1));
      V hn = gh(2);
      V n = Tr::tanh(L.ld(gi + 2 * H + u) + r * hn);
      V hp = L.ld(hprev + u);
      L.st(gi + u, r);
      L.st(gi + H + u, z);
      L.st(gi + 2 * H + u, n);
      L.st(h + u, n + z * (hp - n));
      L.st(hnsave + u, hn);
    });
  }
  // dA: δ at the input side's LN output [δa_r, δa_z, δa_n]; dAh: at the hidden
  // side's [δa_r, δa_z, δa_n r]; dhdirect = δh_t z (may alias dh).
  template <typename T>
  static void bwd(const T* dh, T* /*dc*/, const T* gates, const T* /*cprev*/, const T* /*chat*/,
                  T /*rstdc*/, const T* hprev, const T* hn, T* dA, T* dAh, T* /*tc*/, T* dhdirect,
                  const T*, const T*, T*, T*, int64_t H) {
    using Tr = VT<T>;
    using V = typename Tr::V;
    for_chunks<T>(H, [&](int64_t u, int w) {
      Lanes<T> L{w};
      V r = L.ld(gates + u), z = L.ld(gates + H + u), n = L.ld(gates + 2 * H + u);
      V g = L.ld(dh + u);
      V dn = g * (T(1) - z) * (T(1) - n * n);
      V dz = g * (L.ld(hprev + u) - n) * z * (T(1) - z);
      V dr = dn * L.ld(hn + u) * r * (T(1) - r);
      L.st(dA + u, dr);
      L.st(dA + H + u, dz);
      L.st(dA + 2 * H + u, dn);
      L.st(dAh + u, dr);
      L.st(dAh + H + u, dz);
      L.st(dAh + 2 * H + u, dn * r);
      L.st(dhdirect + u, g * z);
    });
  }
};

template <typename T, typename C>
std::vector<Tensor> ln_forward_impl(const Tensor& x, const Tensor& batch_sizes, const Tensor& h0,
                                    const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                                    const Tensor& g_ih, const Tensor& b_ih, const Tensor& g_hh,
                                    const Tensor& b_hh, const Tensor& g_c, const Tensor& b_c,
                                    double eps_d, bool reverse, bool save) {
  constexpr int64_t G = C::G;
  Rows st(batch_sizes);
  const int64_t N = x.size(0), H = h0.size(1), B = h0.size(0), GH = G * H;
  check_rows(st, N, B);
  TORCH_CHECK(w_hh.size(0) == GH && w_hh.size(1) == H, "rnnlab: bad w_hh shape");
  TORCH_CHECK(w_ih.size(0) == GH && w_ih.size(1) == x.size(1), "rnnlab: bad w_ih shape");
  TORCH_CHECK(g_ih.numel() == GH && b_ih.numel() == GH && g_hh.numel() == GH && b_hh.numel() == GH,
              "rnnlab: LN gains and shifts must have G*H elements");
  TORCH_CHECK(!C::kHasC || (g_c.numel() == H && b_c.numel() == H), "rnnlab: bad LN(c) parameters");
  const T eps = (T)eps_d;
  const auto opt = x.options();

  // Input side of every step: one GEMM, then LN per block, in place.
  Tensor gi = at::empty({N, GH}, opt);
  mm_into(x, w_ih.t(), gi, false);
  Tensor xih = at::empty({N, GH}, opt), rstdi = at::empty({N, G}, opt);
  ln_rows_affine<T>(gi.data_ptr<T>(), xih.data_ptr<T>(), rstdi.data_ptr<T>(), g_ih.data_ptr<T>(),
                    b_ih.data_ptr<T>(), N, G, H, eps);

  const int P = team_size(G, H, N, st.T);
  Tensor out = at::empty({N, H}, opt);
  Tensor cstate = C::kHasC ? (c0.numel() ? c0.clone() : at::zeros({B, H}, opt)) : Tensor();
  // Saved for backward, or (no save) one row of scratch per batch row.
  const int64_t SR = save ? N : B;
  Tensor xhh = at::empty({SR, GH}, opt), rstdh = at::empty({SR, G}, opt);
  Tensor call, chat, rstdc, hnall;
  if (C::kHasC) {
    call = save ? at::empty({N, H}, opt) : Tensor();
    chat = at::empty({SR, H}, opt);
    rstdc = at::empty({SR, 1}, opt);
  } else {
    hnall = at::empty({SR, H}, opt);
  }
  Tensor gh = at::empty({std::max<int64_t>(B, 1), GH}, opt);
  Split sp(GH, P, H, std::is_same<T, float>::value);
  Tensor wpk = at::empty({sp.woff[P]}, opt);

  T* gip = gi.data_ptr<T>();
  T* outp = out.data_ptr<T>();
  const T* h0p = h0.data_ptr<T>();
  T* cp = C::kHasC ? cstate.data_ptr<T>() : nullptr;
  T* callp = call.defined() ? call.data_ptr<T>() : nullptr;
  T* chatp = chat.defined() ? chat.data_ptr<T>() : nullptr;
  T* rstdcp = rstdc.defined() ? rstdc.data_ptr<T>() : nullptr;
  T* hnp = hnall.defined() ? hnall.data_ptr<T>() : nullptr;
  T* xhhp = xhh.data_ptr<T>();
  T* rstdhp = rstdh.data_ptr<T>();
  T* ghp = gh.data_ptr<T>();
  const T* whh = w_hh.data_ptr<T>();
  const T* ghhp = g_hh.data_ptr<T>();
  const T* bhhp = b_hh.data_ptr<T>();
  const T* gcp = C::kHasC ? g_c.data_ptr<T>() : nullptr;
  const T* bcp = C::kHasC ? b_c.data_ptr<T>() : nullptr;
  T* wp = wpk.data_ptr<T>();

  run_region(P, [&](int p) {
    T* W = wp + sp.woff[p];
    const int64_t c0c = sp.c0[p], nc = sp.n[p];
    Rec<T>::pack_t(H, nc, W, [&](int64_t j) { return whh + (c0c + j) * H; });
    for (int64_t s = 0; s < st.T; ++s) {
      const int64_t t = st.step(s, reverse), nb = st.bs[t], row0 = st.off[t];
      int64_t n1 = 0;
      const T* prev = nullptr;
      if (s > 0) {
        const int64_t tp = reverse ? t + 1 : t - 1;
        n1 = std::min(nb, st.bs[tp]);
        prev = outp + st.off[tp] * H;
      }
      if (nc > 0) {
        if (n1 > 0) Rec<T>::mm(n1, nc, H, prev, H, W, ghp + c0c, GH, false);
        if (nb > n1) Rec<T>::mm(nb - n1, nc, H, h0p + n1 * H, H, W, ghp + n1 * GH + c0c, GH, false);
      }
      step_barrier(P);
      auto rr = my_rows(p, P, nb);
      for (int64_t b = rr.first; b < rr.second; ++b) {
        const int64_t r = row0 + b, q = save ? r : b;  // q: the row of the saved / scratch buffers
        const T* hprev = b < n1 ? prev + b * H : h0p + b * H;
        C::template fwd<T>(ghp + b * GH, gip + r * GH, hprev, cp ? cp + b * H : nullptr, outp + r * H,
                           xhhp + q * GH, rstdhp + q * G, callp ? callp + r * H : nullptr,
                           chatp ? chatp + q * H : nullptr, rstdcp ? rstdcp + q : nullptr,
                           hnp ? hnp + q * H : nullptr, ghhp, bhhp, gcp, bcp, H, eps);
      }
      step_barrier(P);
    }
  });

  Tensor hn = h0.clone();  // row b: the output of sequence b's last processed step
  if (st.T > 0) {
    T* hp = hn.data_ptr<T>();
    if (reverse) {
      std::memcpy(hp, outp, sizeof(T) * B * H);
    } else {
      for (int64_t t = 0; t < st.T; ++t) {
        const int64_t nb = st.bs[t], nn = t + 1 < st.T ? st.bs[t + 1] : 0;
        if (nb > nn) std::memcpy(hp + nn * H, outp + (st.off[t] + nn) * H, sizeof(T) * (nb - nn) * H);
      }
    }
  }
  std::vector<Tensor> res{out, hn, C::kHasC ? cstate : at::empty({0}, opt)};
  if (save) {
    for (const Tensor& s : {gi, xih, rstdi, xhh, rstdh, out}) res.push_back(s);
    if (C::kHasC) {
      res.push_back(call);
      res.push_back(chat);
      res.push_back(rstdc);
    } else {
      res.push_back(hnall);
    }
  }
  return res;
}

// h_{t-1} (and c_{t-1}) of every row: the previous processed step's row, or
// the initial state for rows whose sequence starts at this step.
template <typename T>
inline void prev_rows(const Rows& st, bool reverse, const T* all, const T* init, int64_t H, T* dst) {
  at::parallel_for(0, st.T, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t t = st.step(s, reverse), nb = st.bs[t];
      int64_t n1 = 0, prow = 0;
      if (s > 0) {
        const int64_t tp = reverse ? t + 1 : t - 1;
        n1 = std::min(nb, st.bs[tp]);
        prow = st.off[tp];
      }
      if (n1 > 0) std::memcpy(dst + st.off[t] * H, all + prow * H, sizeof(T) * n1 * H);
      if (nb > n1) std::memcpy(dst + (st.off[t] + n1) * H, init + n1 * H, sizeof(T) * (nb - n1) * H);
    }
  });
}

template <typename T, typename C>
std::vector<Tensor> ln_backward_impl(const Tensor& x, const Tensor& batch_sizes, const Tensor& h0,
                                     const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                                     const Tensor& g_ih, const Tensor& g_hh, const Tensor& g_c,
                                     const Tensor& b_c, bool reverse,
                                     const std::vector<Tensor>& saved, const Tensor& grad_out,
                                     const Tensor& grad_hn, const Tensor& grad_cn) {
  constexpr int64_t G = C::G;
  constexpr bool isLSTM = C::kHasC;
  Rows st(batch_sizes);
  const int64_t N = x.size(0), H = h0.size(1), B = h0.size(0), GH = G * H;
  check_rows(st, N, B);
  TORCH_CHECK(N > 0, "rnnlab: empty input");
  // saved: gates, x̂_ih, 1/σ_ih, x̂_hh, 1/σ_hh, out, then LSTM: c_t, ĉ_t, 1/σ_c | GRU: W_hn h + b_hn
  TORCH_CHECK(saved.size() == (isLSTM ? 9u : 7u), "rnnlab: wrong number of saved tensors");
  const Tensor &gates = saved[0], &xih = saved[1], &rstdi = saved[2], &xhh = saved[3],
               &rstdh = saved[4], &out = saved[5];
  TORCH_CHECK(gates.size(0) == N && xhh.size(0) == N && xih.size(0) == N && out.size(0) == N,
              "rnnlab: bad saved tensors");
  const auto opt = x.options();

  Tensor dh = grad_hn.clone();
  Tensor dc = isLSTM ? grad_cn.clone() : Tensor();
  Tensor dZ = at::empty({N, GH}, opt);   // δ at W_hh h_{t-1}: the recurrent GEMM's and dW_hh's
  Tensor dZi = at::empty({N, GH}, opt);  // δ at W_ih x_t: dx's and dW_ih's
  Tensor hprev = at::empty({N, H}, opt);
  prev_rows<T>(st, reverse, out.data_ptr<T>(), h0.data_ptr<T>(), H, hprev.data_ptr<T>());
  Tensor cprev;
  if (isLSTM) {
    cprev = at::empty({N, H}, opt);
    prev_rows<T>(st, reverse, saved[6].data_ptr<T>(), c0.data_ptr<T>(), H, cprev.data_ptr<T>());
  }

  const int P = team_size(G, H, N, st.T);
  Split sp(H, P, GH, std::is_same<T, float>::value);
  Tensor wpk = at::empty({sp.woff[P]}, opt);
  // Per thread: scratch rows (δa input side, δa hidden side, tanh(LN(c))) and
  // the running sums of the LN gains' and shifts' gradients.
  const int64_t SW = 2 * GH + H, AW = 4 * GH + 2 * H;
  Tensor scratch = at::empty({P, SW}, opt);
  Tensor sums = at::zeros({P, AW}, opt);
  T* dhp = dh.data_ptr<T>();
  T* dcp = isLSTM ? dc.data_ptr<T>() : nullptr;
  const T* gop = grad_out.data_ptr<T>();
  const T* gp = gates.data_ptr<T>();
  const T* xihp = xih.data_ptr<T>();
  const T* rstdip = rstdi.data_ptr<T>();
  const T* xhhp = xhh.data_ptr<T>();
  const T* rstdhp = rstdh.data_ptr<T>();
  const T* chatp = isLSTM ? saved[7].data_ptr<T>() : nullptr;
  const T* rstdcp = isLSTM ? saved[8].data_ptr<T>() : nullptr;
  const T* hnp = isLSTM ? nullptr : saved[6].data_ptr<T>();
  const T* hpp = hprev.data_ptr<T>();
  const T* cpp = isLSTM ? cprev.data_ptr<T>() : nullptr;
  T* dZp = dZ.data_ptr<T>();
  T* dZip = dZi.data_ptr<T>();
  const T* whh = w_hh.data_ptr<T>();
  const T* gihp = g_ih.data_ptr<T>();
  const T* ghhp = g_hh.data_ptr<T>();
  const T* gcp = isLSTM ? g_c.data_ptr<T>() : nullptr;
  const T* bcp = isLSTM ? b_c.data_ptr<T>() : nullptr;
  T* wp = wpk.data_ptr<T>();
  T* scp = scratch.data_ptr<T>();
  T* smp = sums.data_ptr<T>();

  run_region(P, [&](int p) {
    T* W = wp + sp.woff[p];
    const int64_t c0c = sp.c0[p], nc = sp.n[p];
    Rec<T>::pack_k(GH, nc, W, [&](int64_t k) { return whh + k * H + c0c; });
    T* dA = scp + p * SW;
    T* dAh = isLSTM ? dA : dA + GH;  // the LSTM's two LN outputs add: the same δ
    T* tc = dA + 2 * GH;
    T* sgih = smp + p * AW;  // dγ_ih, dβ_ih, dγ_hh, dβ_hh (G*H each), dγ_c, dβ_c (H each)
    T *sbih = sgih + GH, *sghh = sgih + 2 * GH, *sbhh = sgih + 3 * GH, *sgc = sgih + 4 * GH,
      *sbc = sgc + H;
    for (int64_t s = st.T - 1; s >= 0; --s) {
      const int64_t t = st.step(s, reverse), nb = st.bs[t], row0 = st.off[t];
      auto rr = my_rows(p, P, nb);
      for (int64_t b = rr.first; b < rr.second; ++b) {
        const int64_t r = row0 + b;
        T* dhr = dhp + b * H;
        for_chunks<T>(H, [&](int64_t u, int w) {  // δh_t = from the output at t + from step t+1
          Lanes<T> L{w};
          L.st(dhr + u, L.ld(dhr + u) + L.ld(gop + r * H + u));
        });
        C::template bwd<T>(dhr, dcp ? dcp + b * H : nullptr, gp + r * GH, cpp ? cpp + r * H : nullptr,
                           chatp ? chatp + r * H : nullptr, rstdcp ? rstdcp[r] : T(0), hpp + r * H,
                           hnp ? hnp + r * H : nullptr, dA, dAh, tc, dhr, gcp, bcp, sgc, sbc, H);
        for (int64_t k = 0; k < G; ++k) {  // both LNs' backward, their gains' and shifts' sums
          const int64_t o = k * H;
          ln_bwd<T, false>(dAh + o, ghhp + o, xhhp + r * GH + o, rstdhp[r * G + k], H, dZp + r * GH + o,
                           sghh + o, sbhh + o);
          ln_bwd<T, false>(dA + o, gihp + o, xihp + r * GH + o, rstdip[r * G + k], H, dZip + r * GH + o,
                           sgih + o, sbih + o);
        }
      }
      step_barrier(P);
      if (nc > 0) Rec<T>::mm(nb, nc, GH, dZp + row0 * GH, GH, W, dhp + c0c, H, !isLSTM);
      step_barrier(P);
    }
  });

  Tensor total = sums.sum(0);  // (4*G*H + 2*H,)
  Tensor dx = at::empty({N, x.size(1)}, opt);
  Tensor dw_ih = at::empty({GH, x.size(1)}, opt);
  Tensor dw_hh = at::empty({GH, H}, opt);
  mm_into(dZi, w_ih, dx, false);
  mm_into(dZi.t(), x, dw_ih, false);
  mm_into(dZ.t(), hprev, dw_hh, false);
  Tensor empty = at::empty({0}, opt);
  Tensor dg_c = isLSTM ? total.narrow(0, 4 * GH, H).clone() : empty;
  Tensor db_c = isLSTM ? total.narrow(0, 4 * GH + H, H).clone() : empty;
  return {dx, dh, isLSTM ? dc : empty, dw_ih, dw_hh, total.narrow(0, 0, GH).clone(),
          total.narrow(0, GH, GH).clone(), total.narrow(0, 2 * GH, GH).clone(),
          total.narrow(0, 3 * GH, GH).clone(), dg_c, db_c};
}

// =========================================================== Skip RNN ===
// MODE: 0 Elman tanh, 1 Elman ReLU, 2 LSTM, 3 GRU (unroll.py's numbering).
template <int MODE>
struct SkipCell {
  static constexpr int G = MODE == 2 ? 4 : MODE == 3 ? 3 : 1;
  static constexpr bool kHasC = MODE == 2;
};

template <typename T>
inline T sigmoid1(T v) { return T(1) / (T(1) + std::exp(-v)); }

// One row of the forward: candidate S(s_{t-1}, x_t), then u_t, s_t, Δũ_t, ũ_{t+1}.
// gi: W_ih x_t + b_ih (G*H; overwritten with the activated gates), gh: W_hh
// h_{t-1} (G*H), bh: b_hh or null.  c: the c state row (LSTM; c_{t-1} in,
// c_t out).  ut: ũ_t in, ũ_{t+1} out.
template <typename T, int MODE>
inline void skip_fwd_row(T* gi, const T* gh, const T* bh, const T* hp, T* c, T* h, T* ch, T* cc,
                         T* hn, T& ut, T* usave, T* utsave, T* dsave, const T* wp, T bp, bool hard,
                         int64_t H) {
  using Tr = VT<T>;
  using V = typename Tr::V;
  const T u = hard ? std::nearbyint(ut) : ut;  // round half to even, as torch.round
  V acc = Tr::bc(T(0));
  for_chunks<T>(H, [&](int64_t j, int w) {
    Lanes<T> L{w};
    auto pre = [&](int k) {
      V v = L.ld(gi + k * H + j) + L.ld(gh + k * H + j);
      return bh ? v + L.ld(bh + k * H + j) : v;
    };
    V hprev = L.ld(hp + j), cand, head;
    if constexpr (MODE == 0 || MODE == 1) {
      cand = MODE == 0 ? Tr::tanh(pre(0)) : Tr::relu(pre(0));
    } else if constexpr (MODE == 2) {
      V i = Tr::sigmoid(pre(0)), f = Tr::sigmoid(pre(1)), g = Tr::tanh(pre(2)), o = Tr::sigmoid(pre(3));
      V cprev = L.ld(c + j);
      V ct = f * cprev + i * g;
      cand = o * Tr::tanh(ct);
      L.st(gi + j, i);
      L.st(gi + H + j, f);
      L.st(gi + 2 * H + j, g);
      L.st(gi + 3 * H + j, o);
      L.st(cc + j, ct);
      V cn = cprev + u * (ct - cprev);
      L.st(c + j, cn);
      head = cn;
    } else {
      V r = Tr::sigmoid(pre(0)), z = Tr::sigmoid(pre(1));
      V hnv = L.ld(gh + 2 * H + j);
      if (bh) hnv = hnv + L.ld(bh + 2 * H + j);
      V n = Tr::tanh(L.ld(gi + 2 * H + j) + r * hnv);
      cand = n + z * (hprev - n);
      L.st(gi + j, r);
      L.st(gi + H + j, z);
      L.st(gi + 2 * H + j, n);
      L.st(hn + j, hnv);
    }
    V hv = hprev + u * (cand - hprev);
    L.st(ch + j, cand);
    L.st(h + j, hv);
    if constexpr (MODE != 2) head = hv;
    acc = acc + L.ld(wp + j) * head;
  });
  const T delta = sigmoid1((T)Tr::hsum(acc) + bp);
  *usave = u;
  *utsave = ut;
  *dsave = delta;
  ut = u * delta + (T(1) - u) * (ut + std::min(delta, T(1) - ut));
}

// One row of the backward.  dh: δh_t (total) in, the part of δh_{t-1} that
// does not go through W_hh out; dc (LSTM): δc_t in, δc_{t-1} out; dut: δũ_{t+1}
// in, δũ_t out.  Writes dG (δ of the input-side pre-activations), dGh (the
// recurrent side's; GRU only, else dG) and δp_t.
template <typename T, int MODE>
inline void skip_bwd_row(T* dh, T* dc, T& dut, T gu, const T* gates, const T* ch, const T* cc,
                         const T* hp, const T* cp, const T* hn, T u, T ut, T delta, const T* wp,
                         T* dG, T* dGh, T* dp, int64_t H) {
  using Tr = VT<T>;
  using V = typename Tr::V;
  const T dn1 = dut;
  const T room = T(1) - ut;
  const T w = delta < room ? T(1) : (delta == room ? T(0.5) : T(0));  // ∂min(Δũ, 1-ũ)/∂Δũ
  const T dpv = dn1 * (u + (T(1) - u) * w) * delta * (T(1) - delta);
  *dp = dpv;
  T* ds = MODE == 2 ? dc : dh;  // Δũ_t reads c_t (LSTM) or h_t
  V acc = Tr::bc(T(0));
  for_chunks<T>(H, [&](int64_t j, int wd) {
    Lanes<T> L{wd};
    V d = L.ld(ds + j) + L.ld(wp + j) * dpv;
    L.st(ds + j, d);
    acc = acc + L.ld(dh + j) * (L.ld(ch + j) - L.ld(hp + j));
    if constexpr (MODE == 2) acc = acc + d * (L.ld(cc + j) - L.ld(cp + j));
  });
  const T du = gu + dn1 * (delta - ut - std::min(delta, room)) + (T)Tr::hsum(acc);
  dut = du + dn1 * (T(1) - u) * w;  // straight through: δũ_t = δu_t + the bypass
  const T v = T(1) - u;
  for_chunks<T>(H, [&](int64_t j, int wd) {
    Lanes<T> L{wd};
    V dhv = L.ld(dh + j);
    V g = dhv * u;  // δ of the candidate h
    if constexpr (MODE == 0 || MODE == 1) {
      L.st(dG + j, MODE == 0 ? g * (T(1) - L.ld(ch + j) * L.ld(ch + j)) : Tr::relu_grad(L.ld(ch + j), g));
      L.st(dh + j, dhv * v);
    } else if constexpr (MODE == 2) {
      V i = L.ld(gates + j), f = L.ld(gates + H + j), gg = L.ld(gates + 2 * H + j), o = L.ld(gates + 3 * H + j);
      V tc = Tr::tanh(L.ld(cc + j));
      V dcv = L.ld(dc + j);
      V dct = dcv * u + g * o * (T(1) - tc * tc);
      L.st(dG + j, dct * gg * i * (T(1) - i));
      L.st(dG + H + j, dct * L.ld(cp + j) * f * (T(1) - f));
      L.st(dG + 2 * H + j, dct * i * (T(1) - gg * gg));
      L.st(dG + 3 * H + j, g * tc * o * (T(1) - o));
      L.st(dh + j, dhv * v);
      L.st(dc + j, dcv * v + dct * f);
    } else {
      V r = L.ld(gates + j), z = L.ld(gates + H + j), n = L.ld(gates + 2 * H + j);
      V dn = g * (T(1) - z) * (T(1) - n * n);
      V dz = g * (L.ld(hp + j) - n) * z * (T(1) - z);
      V dr = dn * L.ld(hn + j) * r * (T(1) - r);
      L.st(dG + j, dr);
      L.st(dG + H + j, dz);
      L.st(dG + 2 * H + j, dn);
      L.st(dGh + j, dr);
      L.st(dGh + H + j, dz);
      L.st(dGh + 2 * H + j, dn * r);
      L.st(dh + j, dhv * v + g * z);
    }
  });
}

template <typename T, int MODE>
std::vector<Tensor> skip_forward_impl(const Tensor& x, const Tensor& batch_sizes, const Tensor& h0,
                                      const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                                      const Tensor& b_ih, const Tensor& b_hh, const Tensor& w_p,
                                      const Tensor& b_p, bool hard, bool reverse, bool save) {
  constexpr int64_t G = SkipCell<MODE>::G;
  constexpr bool isLSTM = MODE == 2;
  Rows st(batch_sizes);
  const int64_t N = x.size(0), H = h0.size(1), B = h0.size(0), GH = G * H;
  check_rows(st, N, B);
  TORCH_CHECK(w_hh.size(0) == GH && w_hh.size(1) == H, "rnnlab: bad w_hh shape");
  TORCH_CHECK(w_ih.size(0) == GH && w_ih.size(1) == x.size(1), "rnnlab: bad w_ih shape");
  TORCH_CHECK(w_p.numel() == H && b_p.numel() == 1, "rnnlab: w_p must have H elements and b_p one");
  const bool bias = b_ih.numel() > 0;
  const auto opt = x.options();

  Tensor gi = at::empty({N, GH}, opt);
  mm_into(x, w_ih.t(), gi, false);
  if (bias) gi.add_(b_ih);
  const int P = team_size(G, H, N, st.T);
  Tensor out = at::empty({N, H}, opt), uo = at::empty({N}, opt);
  Tensor cstate = isLSTM ? (c0.numel() ? c0.clone() : at::zeros({B, H}, opt)) : Tensor();
  Tensor utst = at::ones({B}, opt);  // ũ_1 = 1: every sequence updates at its first step
  const int64_t SR = save ? N : B;   // saved rows, or one scratch row per batch row
  Tensor ch = at::empty({SR, H}, opt);
  Tensor extra = MODE >= 2 ? at::empty({SR, H}, opt) : at::empty({0}, opt);  // c̃ (LSTM) | W_hn h + b_hn (GRU)
  Tensor ut = at::empty({SR}, opt), delta = at::empty({SR}, opt);
  Tensor call = isLSTM && save ? at::empty({N, H}, opt) : at::empty({0}, opt);
  Tensor gh = at::empty({std::max<int64_t>(B, 1), GH}, opt);
  Split sp(GH, P, H, std::is_same<T, float>::value);
  Tensor wpk = at::empty({sp.woff[P]}, opt);

  T* gip = gi.data_ptr<T>();
  T* outp = out.data_ptr<T>();
  T* up = uo.data_ptr<T>();
  const T* h0p = h0.data_ptr<T>();
  T* cp = isLSTM ? cstate.data_ptr<T>() : nullptr;
  T* utsp = utst.data_ptr<T>();
  T* chp = ch.data_ptr<T>();
  T* exp_ = MODE >= 2 ? extra.data_ptr<T>() : nullptr;
  T* utp = ut.data_ptr<T>();
  T* dlp = delta.data_ptr<T>();
  T* callp = call.numel() ? call.data_ptr<T>() : nullptr;
  T* ghp = gh.data_ptr<T>();
  const T* whh = w_hh.data_ptr<T>();
  const T* bhp = bias ? b_hh.data_ptr<T>() : nullptr;
  const T* wpp = w_p.data_ptr<T>();
  const T bpv = b_p.data_ptr<T>()[0];
  T* wp = wpk.data_ptr<T>();

  run_region(P, [&](int p) {
    T* W = wp + sp.woff[p];
    const int64_t c0c = sp.c0[p], nc = sp.n[p];
    Rec<T>::pack_t(H, nc, W, [&](int64_t j) { return whh + (c0c + j) * H; });
    for (int64_t s = 0; s < st.T; ++s) {
      const int64_t t = st.step(s, reverse), nb = st.bs[t], row0 = st.off[t];
      int64_t n1 = 0;
      const T* prev = nullptr;
      if (s > 0) {
        const int64_t tp = reverse ? t + 1 : t - 1;
        n1 = std::min(nb, st.bs[tp]);
        prev = outp + st.off[tp] * H;
      }
      if (nc > 0) {
        if (n1 > 0) Rec<T>::mm(n1, nc, H, prev, H, W, ghp + c0c, GH, false);
        if (nb > n1) Rec<T>::mm(nb - n1, nc, H, h0p + n1 * H, H, W, ghp + n1 * GH + c0c, GH, false);
      }
      step_barrier(P);
      auto rr = my_rows(p, P, nb);
      for (int64_t b = rr.first; b < rr.second; ++b) {
        const int64_t r = row0 + b, q = save ? r : b;
        const T* hprev = b < n1 ? prev + b * H : h0p + b * H;
        skip_fwd_row<T, MODE>(gip + r * GH, ghp + b * GH, bhp, hprev, cp ? cp + b * H : nullptr,
                              outp + r * H, chp + q * H, isLSTM ? exp_ + q * H : nullptr,
                              MODE == 3 ? exp_ + q * H : nullptr, utsp[b], up + r, utp + q, dlp + q, wpp,
                              bpv, hard, H);
        if (callp) std::memcpy(callp + r * H, cp + b * H, sizeof(T) * H);
      }
      step_barrier(P);
    }
  });

  Tensor hn = h0.clone();
  if (st.T > 0) {
    T* hp = hn.data_ptr<T>();
    if (reverse) {
      std::memcpy(hp, outp, sizeof(T) * B * H);
    } else {
      for (int64_t t = 0; t < st.T; ++t) {
        const int64_t nb = st.bs[t], nn = t + 1 < st.T ? st.bs[t + 1] : 0;
        if (nb > nn) std::memcpy(hp + nn * H, outp + (st.off[t] + nn) * H, sizeof(T) * (nb - nn) * H);
      }
    }
  }
  std::vector<Tensor> res{out, uo, hn, isLSTM ? cstate : at::empty({0}, opt)};
  if (save) {
    for (const Tensor& s : {gi, ch, extra, uo, ut, delta, out, call}) res.push_back(s);
  }
  return res;
}

template <typename T, int MODE>
std::vector<Tensor> skip_backward_impl(const Tensor& x, const Tensor& batch_sizes, const Tensor& h0,
                                       const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                                       const Tensor& b_ih, const Tensor& w_p, bool reverse,
                                       const std::vector<Tensor>& saved, const Tensor& grad_out,
                                       const Tensor& grad_u, const Tensor& grad_hn, const Tensor& grad_cn) {
  constexpr int64_t G = SkipCell<MODE>::G;
  constexpr bool isLSTM = MODE == 2, isGRU = MODE == 3;
  Rows st(batch_sizes);
  const int64_t N = x.size(0), H = h0.size(1), B = h0.size(0), GH = G * H;
  check_rows(st, N, B);
  TORCH_CHECK(N > 0, "rnnlab: empty input");
  // saved: gates, candidate h, c̃ | W_hn h + b_hn | empty, u, ũ, Δũ, out, c_t | empty
  TORCH_CHECK(saved.size() == 8u, "rnnlab: wrong number of saved tensors");
  const Tensor &gates = saved[0], &ch = saved[1], &extra = saved[2], &uo = saved[3], &ut = saved[4],
               &delta = saved[5], &out = saved[6], &call = saved[7];
  TORCH_CHECK(gates.size(0) == N && ch.size(0) == N && out.size(0) == N, "rnnlab: bad saved tensors");
  const bool bias = b_ih.numel() > 0;
  const auto opt = x.options();

  Tensor dh = grad_hn.clone();
  Tensor dc = isLSTM ? grad_cn.clone() : Tensor();
  Tensor dut = at::zeros({B}, opt);  // δũ_{t+1}: nothing flows back from beyond the last step
  Tensor dG = at::empty({N, GH}, opt);
  Tensor dGh = isGRU ? at::empty({N, GH}, opt) : dG;
  Tensor dp = at::empty({N}, opt);
  Tensor hprev = at::empty({N, H}, opt);
  prev_rows<T>(st, reverse, out.data_ptr<T>(), h0.data_ptr<T>(), H, hprev.data_ptr<T>());
  Tensor cprev;
  if (isLSTM) {
    cprev = at::empty({N, H}, opt);
    prev_rows<T>(st, reverse, call.data_ptr<T>(), c0.data_ptr<T>(), H, cprev.data_ptr<T>());
  }

  const int P = team_size(G, H, N, st.T);
  Split sp(H, P, GH, std::is_same<T, float>::value);
  Tensor wpk = at::empty({sp.woff[P]}, opt);
  T* dhp = dh.data_ptr<T>();
  T* dcp = isLSTM ? dc.data_ptr<T>() : nullptr;
  T* dutp = dut.data_ptr<T>();
  const T* gop = grad_out.data_ptr<T>();
  const T* gup = grad_u.data_ptr<T>();
  const T* gp = gates.data_ptr<T>();
  const T* chp = ch.data_ptr<T>();
  const T* exp_ = MODE >= 2 ? extra.data_ptr<T>() : nullptr;
  const T* up = uo.data_ptr<T>();
  const T* utp = ut.data_ptr<T>();
  const T* dlp = delta.data_ptr<T>();
  const T* hpp = hprev.data_ptr<T>();
  const T* cpp = isLSTM ? cprev.data_ptr<T>() : nullptr;
  T* dGp = dG.data_ptr<T>();
  T* dGhp = dGh.data_ptr<T>();
  T* dpp = dp.data_ptr<T>();
  const T* whh = w_hh.data_ptr<T>();
  const T* wpp = w_p.data_ptr<T>();
  T* wp = wpk.data_ptr<T>();

  run_region(P, [&](int p) {
    T* W = wp + sp.woff[p];
    const int64_t c0c = sp.c0[p], nc = sp.n[p];
    Rec<T>::pack_k(GH, nc, W, [&](int64_t k) { return whh + k * H + c0c; });
    for (int64_t s = st.T - 1; s >= 0; --s) {
      const int64_t t = st.step(s, reverse), nb = st.bs[t], row0 = st.off[t];
      auto rr = my_rows(p, P, nb);
      for (int64_t b = rr.first; b < rr.second; ++b) {
        const int64_t r = row0 + b;
        T* dhr = dhp + b * H;
        for_chunks<T>(H, [&](int64_t u, int w) {
          Lanes<T> L{w};
          L.st(dhr + u, L.ld(dhr + u) + L.ld(gop + r * H + u));
        });
        skip_bwd_row<T, MODE>(dhr, dcp ? dcp + b * H : nullptr, dutp[b], gup[r], gp + r * GH, chp + r * H,
                              isLSTM ? exp_ + r * H : nullptr, hpp + r * H, cpp ? cpp + r * H : nullptr,
                              isGRU ? exp_ + r * H : nullptr, up[r], utp[r], dlp[r], wpp, dGp + r * GH,
                              dGhp + r * GH, dpp + r, H);
      }
      step_barrier(P);
      if (nc > 0) Rec<T>::mm(nb, nc, GH, dGhp + row0 * GH, GH, W, dhp + c0c, H, true);
      step_barrier(P);
    }
  });

  Tensor dx = at::empty({N, x.size(1)}, opt);
  Tensor dw_ih = at::empty({GH, x.size(1)}, opt);
  Tensor dw_hh = at::empty({GH, H}, opt);
  mm_into(dG, w_ih, dx, false);
  mm_into(dG.t(), x, dw_ih, false);
  mm_into(dGh.t(), hprev, dw_hh, false);
  Tensor empty = at::empty({0}, opt);
  Tensor db_ih = bias ? dG.sum(0) : empty;
  Tensor db_hh = bias ? dGh.sum(0) : empty;
  Tensor head = isLSTM ? call : out;
  Tensor dw_p = at::mm(dp.view({1, N}), head);  // (1, H)
  Tensor db_p = dp.sum(0).view({1});
  return {dx, dh, isLSTM ? dc : empty, dw_ih, dw_hh, db_ih, db_hh, dw_p, db_p};
}

// ====================================================== entry points ===
inline Tensor vreq(const Tensor& t, at::ScalarType dt, const char* what) {
  TORCH_CHECK(t.defined(), "rnnlab: ", what, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "rnnlab: ", what, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dt, "rnnlab: ", what, " has dtype ", t.scalar_type(), ", expected ", dt);
  return t.contiguous();
}
inline Tensor vopt(const Tensor& t, at::ScalarType dt, const char* what) {  // empty = absent
  if (!t.defined() || t.numel() == 0) return at::empty({0}, at::TensorOptions().dtype(dt));
  return vreq(t, dt, what);
}
inline Tensor vstate(const Tensor& t, const Tensor& like, at::ScalarType dt, const char* what) {
  if (!t.defined() || t.numel() == 0) return at::zeros(like.sizes(), like.options());
  return vreq(t, dt, what);
}
inline at::ScalarType vdtype(const Tensor& x) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, "rnnlab C++ engine supports float32 and float64, got ", dt);
  TORCH_CHECK(x.dim() == 2, "rnnlab: x must be 2-D (N, I)");
  return dt;
}

template <typename F>
inline auto with_dtype(at::ScalarType dt, F&& f) {
  return dt == at::kDouble ? f(double()) : f(float());
}

inline std::vector<Tensor> ln_forward(int64_t mode, Tensor x, Tensor batch_sizes, Tensor h0, Tensor c0,
                                      Tensor w_ih, Tensor w_hh, Tensor g_ih, Tensor b_ih, Tensor g_hh,
                                      Tensor b_hh, Tensor g_c, Tensor b_c, double eps, bool reverse,
                                      bool save) {
  const auto dt = vdtype(x);
  TORCH_CHECK(mode == 2 || mode == 3, "rnnlab: layer-normalised loops run mode 2 (LSTM) or 3 (GRU); got ", mode);
  x = vreq(x, dt, "x");
  h0 = vreq(h0, dt, "h0");
  c0 = mode == 2 ? vstate(c0, h0, dt, "c0") : vopt(c0, dt, "c0");
  w_ih = vreq(w_ih, dt, "w_ih");
  w_hh = vreq(w_hh, dt, "w_hh");
  g_ih = vreq(g_ih, dt, "g_ih");
  b_ih = vreq(b_ih, dt, "b_ih");
  g_hh = vreq(g_hh, dt, "g_hh");
  b_hh = vreq(b_hh, dt, "b_hh");
  g_c = vopt(g_c, dt, "g_c");
  b_c = vopt(b_c, dt, "b_c");
  at::NoGradGuard ng;
  return with_dtype(dt, [&](auto tv) {
    using T = decltype(tv);
    return mode == 2 ? ln_forward_impl<T, LNLstm>(x, batch_sizes, h0, c0, w_ih, w_hh, g_ih, b_ih, g_hh, b_hh,
                                                  g_c, b_c, eps, reverse, save)
                     : ln_forward_impl<T, LNGru>(x, batch_sizes, h0, c0, w_ih, w_hh, g_ih, b_ih, g_hh, b_hh,
                                                 g_c, b_c, eps, reverse, save);
  });
}

inline std::vector<Tensor> ln_backward(int64_t mode, Tensor x, Tensor batch_sizes, Tensor h0, Tensor c0,
                                       Tensor w_ih, Tensor w_hh, Tensor g_ih, Tensor b_ih, Tensor g_hh,
                                       Tensor b_hh, Tensor g_c, Tensor b_c, double eps, bool reverse,
                                       std::vector<Tensor> saved, Tensor grad_out, Tensor grad_hn,
                                       Tensor grad_cn) {
  const auto dt = vdtype(x);
  TORCH_CHECK(mode == 2 || mode == 3, "rnnlab: layer-normalised loops run mode 2 (LSTM) or 3 (GRU); got ", mode);
  x = vreq(x, dt, "x");
  h0 = vreq(h0, dt, "h0");
  c0 = mode == 2 ? vstate(c0, h0, dt, "c0") : vopt(c0, dt, "c0");
  w_ih = vreq(w_ih, dt, "w_ih");
  w_hh = vreq(w_hh, dt, "w_hh");
  g_ih = vreq(g_ih, dt, "g_ih");
  g_hh = vreq(g_hh, dt, "g_hh");
  g_c = vopt(g_c, dt, "g_c");
  b_c = vopt(b_c, dt, "b_c");
  grad_out = vreq(grad_out, dt, "grad_out");
  grad_hn = vstate(grad_hn, h0, dt, "grad_hn");
  grad_cn = mode == 2 ? vstate(grad_cn, h0, dt, "grad_cn") : vopt(grad_cn, dt, "grad_cn");
  for (auto& s : saved) s = vreq(s, dt, "saved tensor");
  at::NoGradGuard ng;
  return with_dtype(dt, [&](auto tv) {
    using T = decltype(tv);
    return mode == 2 ? ln_backward_impl<T, LNLstm>(x, batch_sizes, h0, c0, w_ih, w_hh, g_ih, g_hh, g_c, b_c,
                                                   reverse, saved, grad_out, grad_hn, grad_cn)
                     : ln_backward_impl<T, LNGru>(x, batch_sizes, h0, c0, w_ih, w_hh, g_ih, g_hh, g_c, b_c,
                                                  reverse, saved, grad_out, grad_hn, grad_cn);
  });
}

template <typename F>
inline auto with_mode(int64_t mode, at::ScalarType dt, F&& f) {
  TORCH_CHECK(mode >= 0 && mode <= 3, "rnnlab: unknown mode ", mode, " (0 tanh, 1 ReLU, 2 LSTM, 3 GRU)");
  return with_dtype(dt, [&](auto tv) {
    switch (mode) {
      case 0: return f(tv, std::integral_constant<int, 0>());
      case 1: return f(tv, std::integral_constant<int, 1>());
      case 2: return f(tv, std::integral_constant<int, 2>());
      default: return f(tv, std::integral_constant<int, 3>());
    }
  });
}

inline std::vector<Tensor> skip_forward(int64_t mode, Tensor x, Tensor batch_sizes, Tensor h0, Tensor c0,
                                        Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh, Tensor w_p,
                                        Tensor b_p, bool hard, bool reverse, bool save) {
  const auto dt = vdtype(x);
  x = vreq(x, dt, "x");
  h0 = vreq(h0, dt, "h0");
  c0 = mode == 2 ? vstate(c0, h0, dt, "c0") : vopt(c0, dt, "c0");
  w_ih = vreq(w_ih, dt, "w_ih");
  w_hh = vreq(w_hh, dt, "w_hh");
  b_ih = vopt(b_ih, dt, "b_ih");
  b_hh = vopt(b_hh, dt, "b_hh");
  w_p = vreq(w_p, dt, "w_p");
  b_p = vreq(b_p, dt, "b_p");
  at::NoGradGuard ng;
  return with_mode(mode, dt, [&](auto tv, auto m) {
    using T = decltype(tv);
    return skip_forward_impl<T, decltype(m)::value>(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_p, b_p,
                                                    hard, reverse, save);
  });
}

inline std::vector<Tensor> skip_backward(int64_t mode, Tensor x, Tensor batch_sizes, Tensor h0, Tensor c0,
                                         Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh, Tensor w_p,
                                         Tensor b_p, bool hard, bool reverse, std::vector<Tensor> saved,
                                         Tensor grad_out, Tensor grad_u, Tensor grad_hn, Tensor grad_cn) {
  const auto dt = vdtype(x);
  x = vreq(x, dt, "x");
  h0 = vreq(h0, dt, "h0");
  c0 = mode == 2 ? vstate(c0, h0, dt, "c0") : vopt(c0, dt, "c0");
  w_ih = vreq(w_ih, dt, "w_ih");
  w_hh = vreq(w_hh, dt, "w_hh");
  b_ih = vopt(b_ih, dt, "b_ih");
  w_p = vreq(w_p, dt, "w_p");
  grad_out = vreq(grad_out, dt, "grad_out");
  grad_u = vreq(grad_u, dt, "grad_u");
  grad_hn = vstate(grad_hn, h0, dt, "grad_hn");
  grad_cn = mode == 2 ? vstate(grad_cn, h0, dt, "grad_cn") : vopt(grad_cn, dt, "grad_cn");
  for (auto& s : saved) s = s.numel() ? vreq(s, dt, "saved tensor") : s;
  at::NoGradGuard ng;
  return with_mode(mode, dt, [&](auto tv, auto m) {
    using T = decltype(tv);
    return skip_backward_impl<T, decltype(m)::value>(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, w_p, reverse,
                                                     saved, grad_out, grad_u, grad_hn, grad_cn);
  });
}

}  // namespace var
}  // namespace rnnlab
