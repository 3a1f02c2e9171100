// The rnnlab time loop (forward and hand-written BPTT), generic over the cell.
//
// Parallel scheme: ONE OpenMP parallel region alive for the whole time loop.
// Thread p owns a contiguous slice of hidden units [j0, j0+hp) (whole float
// vectors, 8 or 16 units, except the last), together with
//   forward : the rows of W_hh of all gates for its units, packed into one
//             contiguous (G*hp, H) block, and the gate math / c / h of its units;
//   backward: the columns of W_hh for its units, packed into (G*H, hp).
// One barrier per step:
//   forward : after h_t[:, own units] is written (the next GEMM reads all of h_t)
//   backward: after dgates_t[:, own gate columns] is written (the GEMM
//             dh_{t-1}[:, own units] = dgates_t @ W_hh[:, own units] reads all).
// BLAS is called directly (MKL's sgemm_/dgemm_), single-threaded per worker.
//
// Fused input side (see fuse_input for when): the forward's input projection
// x_t @ W_ih^T (LSTM, GRU) and the backward's dx_t and dW updates (LSTM) run
// inside the same region, per step, on the thread's own columns/rows, instead
// of as big GEMMs before/after the loop.  The barrier structure is unchanged.
//
// Regularisation options (optional tensors; empty = off, and then the loop is
// the plain one -- each option costs one predictable branch per row or step):
//   rec_mask (B, H): variational dropout on the recurrent state (Gal &
//     Ghahramani 2016): the GEMM of step t reads h_{t-1} * m.  Each thread
//     writes its units of h_t * m into one of two (B, H) buffers (alternating
//     by step, so the one being read by slower threads is never written) and
//     the GEMM reads the other.  Backward: the GEMM's dh_{t-1} goes through a
//     per-thread scratch and is multiplied by m.
//   zone_h, zone_c (N, H): zoneout (Krueger et al. 2016), applied around the
//     cell's own row math, which is unchanged: forward mixes the cell's h~_t,
//     c~_t with h_{t-1}, c_{t-1} (h = d h_{t-1} + (1-d) h~); backward splits
//     dL/dh_t into (1-d) dh for the cell and d dh straight to h_{t-1} (same
//     for c).  What backward needs of the un-zoned step is saved as `raw`:
//     the Elman h~_t (its activation derivative) or the LSTM c~_t (tanh c~).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <omp.h>

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common.h"
#include "elman.h"
#include "rgemm.h"
#include "gru.h"
#include "lstm.h"
#include "prof.h"

namespace rnnlab {

using at::Tensor;

struct Plan {
  int P = 1;
  std::vector<int64_t> j0, hp;
};

// Threads for the time loop.  A barrier + a single-threaded small GEMM costs
// ~1-2 us; below ~flops_min of recurrent work per step one thread is faster.
inline int choose_threads(int64_t G, int64_t H, int64_t N, int64_t T) {
  int P = at::get_num_threads();
  if (const char* e = std::getenv("RNNLAB_THREADS")) {
    int v = std::atoi(e);
    if (v > 0) P = std::min(P, v);
  }
  if (P <= 1 || T == 0) return 1;
  double bavg = double(N) / double(T);
  double flops = 2.0 * double(G) * double(H) * double(H) * bavg;
  double flops_min = 1.5e5;
  if (const char* e = std::getenv("RNNLAB_PAR_FLOPS")) flops_min = std::atof(e);
  if (flops < flops_min) return 1;
  int64_t maxp = std::max<int64_t>(1, (H + 15) / 16);
  return (int)std::min<int64_t>(P, maxp);
}

// Fuse the input-side GEMMs into the time loop?  (G gate blocks)
//   forward  (backward = false; LSTM and GRU): each step computes x_t @ W_ih^T
//     for the thread's own gate columns with the recurrent kernel, into the
//     scratch the recurrent product then adds to (GRU: a second scratch, its
//     n gate needs the two parts apart); the gate math reads its
//     pre-activations from cache instead of a (N, G*H) buffer written by one
//     big GEMM before the loop.  GRU: +1-2% at H <= 256, B = 16 or 64.
//   backward (backward = true; LSTM): each step, after the barrier, the thread also
//     computes its slice of dx_t and adds dG_t^T [x_t | h_{t-1}] to its own
//     rows of dW, so dG_t is used while in cache and the big GEMMs after the
//     loop go away.
// The win (10-20% of the forward, a few % of the backward at H = 128, B = 64
// on a 2-core Zen 4) holds while what each thread reads every step -- its
// packed weights, and in the backward its dW rows -- stays in its L2 cache;
// past that, every step streams them from L3 and one big oneDNN GEMM is
// faster (measured: -2% forward, -13% backward at H = 512).  Steps with few
// rows gain nothing either.  RNNLAB_FUSE=0/1 forces both off/on (tests);
// RNNLAB_FUSE=forward / backward turns on that side only (benchmarks/fused_input.py).
inline int64_t l2_bytes() {
  static const int64_t v = [] {
    long s = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return s > 0 ? int64_t(s) : int64_t(1) << 20;
  }();
  return v;
}
inline bool fuse_input(int64_t I, int64_t H, int64_t N, int64_t T, int P,
                       bool backward, int64_t G = 4) {
  if (const char* e = std::getenv("RNNLAB_FUSE")) {  // 0, 1, forward, backward
    const std::string v(e);
    if (v == "forward" || v == "backward") return (v == "backward") == backward;
    TORCH_CHECK(v == "0" || v == "1", "rnnlab: RNNLAB_FUSE must be 0, 1, forward or backward; got '", v,
                "'. Unset it for the automatic choice.");
    return v == "1";
  }
  if (T == 0) return false;
  const double bavg = double(N) / double(T);
  const int64_t hp = (H + P - 1) / P, ip = (I + P - 1) / P;
  const int64_t f = sizeof(float);
  if (!backward) return bavg >= 16 && (I + H) * G * hp * f <= l2_bytes();
  const int64_t bytes = (G * H * hp + G * H * ip + G * hp * (I + H)) * f;
  return bavg >= 32 && 4 * bytes <= 3 * l2_bytes();
}

inline Plan make_plan(int64_t H, int P) {
  Plan pl;
  pl.P = P;
  int64_t per = (H + P - 1) / P;
  per = (per + kVF - 1) / kVF * kVF;  // whole float vectors per thread
  int64_t j = 0;
  for (int p = 0; p < P; ++p) {
    int64_t n = std::min(per, H - j);
    if (n < 0) n = 0;
    pl.j0.push_back(j);
    pl.hp.push_back(n);
    j += n;
  }
  return pl;
}

// Runs f(p) on P threads (one parallel region), or inline when P == 1.
template <typename F>
inline void run_region(int P, F&& f) {
  if (P <= 1) {
    int old = MKL_Set_Num_Threads_Local(1);
    f(0);
    MKL_Set_Num_Threads_Local(old);
    return;
  }
#pragma omp parallel num_threads(P)
  {
    int old = MKL_Set_Num_Threads_Local(1);
    f(omp_get_thread_num());
    MKL_Set_Num_Threads_Local(old);
  }
}

inline void step_barrier(int P) {
  if (P > 1) {
#pragma omp barrier
  }
}

struct Steps {
  int64_t T = 0;
  std::vector<int64_t> bs, off;
  explicit Steps(const Tensor& batch_sizes) {
    Tensor b = batch_sizes.to(at::kLong).contiguous();
    T = b.numel();
    const int64_t* p = b.data_ptr<int64_t>();
    bs.assign(p, p + T);
    off.resize(T + 1);
    off[0] = 0;
    for (int64_t t = 0; t < T; ++t) off[t + 1] = off[t] + bs[t];
  }
};

inline Tensor empty0(const Tensor& like) { return at::empty({0}, like.options()); }

// Recurrent-step GEMM with B packed once per call, per thread:
//   C (M x ncols, ldc) = / += A (M x K, lda) @ B (K x ncols)
// float: own kernel on packed column panels (rgemm.h); double: MKL dgemm on
// B^T stored row-major (ncols x K).
template <typename T>
struct RecW;
template <>
struct RecW<float> {
  static int64_t size(int64_t K, int64_t ncols) { return rg::packed_size(K, ncols); }
  // B[k][n] = row(n)[k]
  template <typename F>
  static void pack_t(int64_t K, int64_t ncols, float* dst, F&& row) {
    rg::pack_t(K, ncols, dst, row);
  }
  // B[k][n] = krow(k)[n]
  template <typename F>
  static void pack_k(int64_t K, int64_t ncols, float* dst, F&& krow) {
    rg::pack_k(K, ncols, dst, krow);
  }
  static void mm(int64_t M, int64_t ncols, int64_t K, const float* A,
                 int64_t lda, const float* Bp, float* C, int64_t ldc, bool acc) {
    rg::run(M, ncols, K, A, lda, Bp, C, ldc, acc);
  }
};
template <>
struct RecW<double> {
  static int64_t size(int64_t K, int64_t ncols) { return K * ncols; }
  template <typename F>
  static void pack_t(int64_t K, int64_t ncols, double* dst, F&& row) {
    for (int64_t n = 0; n < ncols; ++n)
      std::memcpy(dst + n * K, row(n), sizeof(double) * K);
  }
  template <typename F>
  static void pack_k(int64_t K, int64_t ncols, double* dst, F&& krow) {
    for (int64_t k = 0; k < K; ++k) {
      const double* r = krow(k);
      for (int64_t n = 0; n < ncols; ++n) dst[n * K + k] = r[n];
    }
  }
  static void mm(int64_t M, int64_t ncols, int64_t K, const double* A,
                 int64_t lda, const double* Bp, double* C, int64_t ldc, bool acc) {
    gemm_cm('T', 'N', ncols, M, K, 1.0, Bp, K, A, lda, acc ? 1.0 : 0.0, C, ldc);
  }
};

// C (M x n, ldc) += A^T @ Bm, A^T given as At (K x M, lda: a(m, k) = At[k*lda + m]),
// Bm (K x n, ldb), all row-major: the fused backward's per-step dW update
// (M = a thread's units of one gate, K = the step's batch rows).
template <typename T>
inline void gemm_tn(int64_t M, int64_t n, int64_t K, const T* At, int64_t lda,
                    const T* Bm, int64_t ldb, T* C, int64_t ldc) {
  if (M <= 0 || n <= 0 || K <= 0) return;
  if constexpr (std::is_same<T, float>::value) {
    rg::run_tn(M, n, K, At, lda, Bm, ldb, C, ldc);
  } else {
    // column-major view: C' (n x M) += Bm' (n x K) @ At' (K x M)
    gemm_cm('N', 'T', n, M, K, T(1), Bm, ldb, At, lda, T(1), C, ldc);
  }
}

// Y = X @ W^T (+ b), for the big one-shot GEMMs (input projection, dx, dW).
// float32 goes through oneDNN (mkldnn::_linear_pointwise), which uses the
// CPU's widest ISA on any vendor; MKL (at::mm) runs its AVX2 path on AMD.
// X and W may be strided views (e.g. transposes).  Falls back to at::addmm.
inline Tensor lin(const Tensor& X, const Tensor& W, const Tensor& b) {
  if (X.scalar_type() == at::kFloat && X.size(0) > 0 && W.size(0) > 0 &&
      X.size(1) > 0) {
    using Sig = at::Tensor(const at::Tensor&, const at::Tensor&,
                           const std::optional<at::Tensor>&, c10::string_view,
                           c10::List<std::optional<at::Scalar>>,
                           std::optional<c10::string_view>);
    static const auto handle = []() -> std::optional<c10::TypedOperatorHandle<Sig>> {
      if (std::getenv("RNNLAB_NO_ONEDNN")) return std::nullopt;
      try {
        auto h = c10::Dispatcher::singleton().findOp({"mkldnn::_linear_pointwise", ""});
        if (!h) return std::nullopt;
        return h->typed<Sig>();
      } catch (...) {
        return std::nullopt;
      }
    }();
    if (handle) {
      try {
        std::optional<at::Tensor> bo;
        if (b.defined() && b.numel()) bo = b;
        return handle->call(X, W, bo, "none", c10::List<std::optional<at::Scalar>>(),
                            std::nullopt);
      } catch (...) {
      }
    }
  }
  if (b.defined() && b.numel()) return at::addmm(b, X, W.t());
  return at::mm(X, W.t());
}

// C = A @ B + beta * C into an existing C (row-major, contiguous), for the
// backward's per-chunk GEMMs.  A and B may each be contiguous or a plain
// transpose of a contiguous matrix (A = dgates^T for dW): oneDNN's matmul
// reads both layouts directly, so no transposed copies are made.  float32:
// at::native::mkldnn_matmul (oneDNN; needs AVX-512 or AVX-NE-CONVERT, else it
// throws once and we use at::mm from then on); float64: at::mm_out/addmm_.
}  // namespace rnnlab
namespace at {
namespace native {
TORCH_API void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2,
                             const at::Tensor& result, float beta, float alpha);
}  // namespace native
}  // namespace at
namespace rnnlab {

inline void mm_into(const Tensor& A, const Tensor& B, Tensor& C, bool accumulate) {
  if (A.size(0) == 0 || B.size(1) == 0) return;
  if (A.size(1) == 0) {
    if (!accumulate) C.zero_();
    return;
  }
  static bool dnnl_ok = std::getenv("RNNLAB_NO_ONEDNN") == nullptr;
  if (dnnl_ok && A.scalar_type() == at::kFloat) {
    try {
      at::native::mkldnn_matmul(A, B, C, accumulate ? 1.0f : 0.0f, 1.0f);
      return;
    } catch (...) {
      dnnl_ok = false;
    }
  }
  if (accumulate)
    C.addmm_(A, B);
  else
    at::mm_out(C, A, B);
}

// ------------------------------------------------- regularisation helpers
// Row helpers over this thread's units (n of them), vectorised like the cells.
// v <- d * prev + (1 - d) * v  (zoneout; exact for d in {0, 1});  raw <- v before.
template <typename T>
inline void zone_mix(T* v, const T* prev, const T* d, T* raw, int64_t n) {
  using V = typename VT<T>::V;
  for_chunks<T>(n, [&](int64_t u, int w) {
    Lanes<T> L{w};
    V a = L.ld(v + u), z = L.ld(d + u);
    if (raw) L.st(raw + u, a);
    L.st(v + u, z * L.ld(prev + u) + (T(1) - z) * a);
  });
}
// direct <- d * g;  g <- (1 - d) * g  (zoneout's backward split of dL/dstate)
template <typename T>
inline void zone_split(T* g, const T* d, T* direct, int64_t n) {
  using V = typename VT<T>::V;
  for_chunks<T>(n, [&](int64_t u, int w) {
    Lanes<T> L{w};
    V a = L.ld(g + u), z = L.ld(d + u);
    L.st(direct + u, z * a);
    L.st(g + u, (T(1) - z) * a);
  });
}
// y <- (acc ? y : 0) + a * b
template <typename T>
inline void mul_into(T* y, const T* a, const T* b, int64_t n, bool acc) {
  using V = typename VT<T>::V;
  for_chunks<T>(n, [&](int64_t u, int w) {
    Lanes<T> L{w};
    V v = L.ld(a + u) * L.ld(b + u);
    L.st(y + u, acc ? L.ld(y + u) + v : v);
  });
}
// y <- (acc ? y : 0) + a
template <typename T>
inline void add_into(T* y, const T* a, int64_t n, bool acc) {
  using V = typename VT<T>::V;
  for_chunks<T>(n, [&](int64_t u, int w) {
    Lanes<T> L{w};
    L.st(y + u, acc ? L.ld(y + u) + L.ld(a + u) : L.ld(a + u));
  });
}

// Shapes of the optional regularisation tensors (empty = off).
inline void check_options(const Tensor& rec_mask, const Tensor& zone_h,
                          const Tensor& zone_c, int64_t B, int64_t N,
                          int64_t H, bool has_c) {
  if (rec_mask.numel())
    TORCH_CHECK(rec_mask.dim() == 2 && rec_mask.size(0) == B && rec_mask.size(1) == H,
                "rnnlab: rec_mask must have h0's shape (", B, ", ", H, "); got ",
                rec_mask.sizes());
  if (zone_h.numel())
    TORCH_CHECK(zone_h.dim() == 2 && zone_h.size(0) == N && zone_h.size(1) == H,
                "rnnlab: zone_h must have shape (", N, ", ", H, "); got ", zone_h.sizes());
  if (zone_c.numel()) {
    TORCH_CHECK(has_c, "rnnlab: zone_c zones out the LSTM's cell state; this cell has none");
    TORCH_CHECK(zone_c.dim() == 2 && zone_c.size(0) == N && zone_c.size(1) == H,
                "rnnlab: zone_c must have shape (", N, ", ", H, "); got ", zone_c.sizes());
  }
}

// ---------------------------------------------------------------- forward
template <typename T, typename Cell>
std::vector<Tensor> forward_impl(Tensor x, const Tensor& batch_sizes, Tensor h0,
                                 Tensor c0, Tensor w_ih, Tensor w_hh,
                                 Tensor b_ih, Tensor b_hh, bool reverse,
                                 bool save, const Tensor& rec_mask,
                                 const Tensor& zone_h, const Tensor& zone_c) {
  constexpr int64_t G = Cell::G;
  constexpr bool isGRU = std::is_same<Cell, GRUCell>::value;
  constexpr bool isLSTM = std::is_same<Cell, LSTMCell>::value;
  constexpr bool isElman = !isGRU && !isLSTM;
  Steps st(batch_sizes);
  const int64_t N = x.size(0), H = h0.size(1), B = h0.size(0);
  const int64_t GH = G * H;
  TORCH_CHECK(st.off[st.T] == N, "rnnlab: sum(batch_sizes) != x.size(0)");
  TORCH_CHECK(st.T == 0 || st.bs[0] == B, "rnnlab: batch_sizes[0] != h0.size(0)");
  for (int64_t t = 1; t < st.T; ++t)
    TORCH_CHECK(st.bs[t] <= st.bs[t - 1] && st.bs[t] > 0,
                "rnnlab: batch_sizes must be positive and non-increasing");
  TORCH_CHECK(w_hh.size(0) == GH && w_hh.size(1) == H, "rnnlab: bad w_hh shape");
  TORCH_CHECK(w_ih.size(0) == GH && w_ih.size(1) == x.size(1), "rnnlab: bad w_ih shape");
  const bool bias = b_ih.numel() > 0;
  check_options(rec_mask, zone_h, zone_c, B, N, H, Cell::kHasC);
  const bool rm = rec_mask.numel() > 0;
  const bool zh_on = zone_h.numel() > 0, zc_on = zone_c.numel() > 0;
  // backward's view of the un-zoned step: Elman h~ (zone_h), LSTM c~ (zone_c)
  const bool need_raw = save && ((isElman && zh_on) || (isLSTM && zc_on));

  // Input projection of all steps: one GEMM, biases folded (not GRU's b_hn).
  Tensor bc, bhn;
  if (bias) {
    if (isGRU) {
      bc = b_ih.clone();
      bc.narrow(0, 0, 2 * H).add_(b_hh.narrow(0, 0, 2 * H));
      bhn = b_hh.narrow(0, 2 * H, H).contiguous();
    } else {
      bc = b_ih + b_hh;
    }
  }
  const int P = choose_threads(G, H, N, st.T);
  Plan pl = make_plan(H, P);
  const bool fx = (isLSTM || isGRU) && fuse_input(x.size(1), H, N, st.T, P, false, G);
  Tensor gi;
  prof::Timer tm0(0);  // the big input projection (unfused) is charged to row 0
  if (isLSTM) {
    // LSTM: plain GEMM (oneDNN matmul reads W_ih^T in place; faster here than
    // _linear_pointwise), or fused into the time loop (fx: see fuse_input);
    // the summed bias is added in the gate math (bhn).
    // fused and nothing saved (inference): the gates of one step are all the
    // loop writes, so one (B, 4H) buffer replaces the (N, 4H) one
    gi = at::empty({fx && !save ? B : N, GH}, x.options());
    if (fx)
      x = x.contiguous();
    else
      mm_into(x, w_ih.t(), gi, false);
    bhn = bias ? bc : at::zeros({GH}, x.options());
  } else if (fx) {  // GRU, fused: the loop computes Wi x_t; gi receives the gates
    gi = at::empty({save ? N : B, GH}, x.options());
    x = x.contiguous();
  } else {
    gi = lin(x, w_ih, bc).contiguous();
  }
  tm0.lap(prof::kFwdInput);
  // GRU, fused: the biases lin() would have folded into gi
  const T* bxp = (isGRU && fx && bias) ? bc.data_ptr<T>() : nullptr;
  Tensor out = at::empty({N, H}, x.options());
  Tensor cstate, call, hnall;
  if (Cell::kHasC) {
    cstate = c0.numel() ? c0.clone() : at::zeros({B, H}, x.options());
    if (save) call = at::empty({N, H}, x.options());
  }
  if (isGRU && save) hnall = at::empty({N, H}, x.options());

  // Per-thread packed W_hh: B[k][n] = W_hh[g*H + j0 + u][k], n = g*hp + u,
  // followed (fx) by W_ih packed the same way: B[k][n] = W_ih[g*H + j0 + u][k].
  const int64_t I = x.size(1);
  std::vector<int64_t> woff(P + 1, 0), wioff(P, 0);
  int64_t hpmax = 0;
  for (int p = 0; p < P; ++p) {
    wioff[p] = woff[p] + RecW<T>::size(H, G * pl.hp[p]) + 64;
    woff[p + 1] = wioff[p] + (fx ? RecW<T>::size(I, G * pl.hp[p]) + 64 : 0);
    hpmax = std::max(hpmax, pl.hp[p]);
  }
  Tensor wpk = at::empty({woff[P]}, w_hh.options());
  // per thread: the recurrent product (B x G*hp), then (GRU, fused) Wi x_t
  const int64_t scr_half = ((B * G * hpmax + 15) / 16) * 16 + 16;
  const int64_t scr_stride = (isGRU && fx ? 2 : 1) * scr_half;
  Tensor scratch = at::empty({P * scr_stride}, x.options());
  Tensor raw = need_raw ? at::empty({N, H}, x.options()) : Tensor();
  // rec_mask: h0 * m, and the two (B, H) buffers of h_{t-1} * m (see the top)
  Tensor h0m = rm ? h0 * rec_mask : Tensor();
  Tensor hmbuf = rm ? at::empty({2 * B * H}, x.options()) : Tensor();
  // zone_c: this thread's units of c_{t-1}, kept while the cell overwrites c
  const int64_t ct_stride = ((hpmax + 15) / 16) * 16 + 16;
  Tensor ctmp = zc_on ? at::empty({P * ct_stride}, x.options()) : Tensor();

  T* gip = gi.data_ptr<T>();
  T* outp = out.data_ptr<T>();
  const T* h0p = h0.data_ptr<T>();
  T* cp = Cell::kHasC ? cstate.data_ptr<T>() : nullptr;
  T* callp = call.defined() ? call.data_ptr<T>() : nullptr;
  T* hnp = hnall.defined() ? hnall.data_ptr<T>() : nullptr;
  const T* bhnp = bhn.defined() ? bhn.data_ptr<T>() : nullptr;
  const T* whh = w_hh.data_ptr<T>();
  Tensor wihc = fx ? w_ih.contiguous() : Tensor();
  const T* wih = fx ? wihc.data_ptr<T>() : nullptr;
  const T* xp = fx ? x.data_ptr<T>() : nullptr;
  T* wpkp = wpk.data_ptr<T>();
  T* scrp = scratch.data_ptr<T>();
  T* rawp = need_raw ? raw.data_ptr<T>() : nullptr;
  const T* mp = rm ? rec_mask.data_ptr<T>() : nullptr;
  const T* h0mp = rm ? h0m.data_ptr<T>() : nullptr;
  T* hmp = rm ? hmbuf.data_ptr<T>() : nullptr;
  const T* zhp = zh_on ? zone_h.data_ptr<T>() : nullptr;
  const T* zcp = zc_on ? zone_c.data_ptr<T>() : nullptr;
  T* ctp = zc_on ? ctmp.data_ptr<T>() : nullptr;

  run_region(P, [&](int p) {
    prof::Timer tm(p);
    const int64_t j0 = pl.j0[p], hp = pl.hp[p];
    T* W = wpkp + woff[p];
    T* ct = ctp ? ctp + p * ct_stride : nullptr;
    const int64_t ld = G * hp;
    // each thread packs its own block (first touch: its memory, its cache)
    RecW<T>::pack_t(H, ld, W, [&](int64_t n) {
      const int64_t g = n / hp, u = n - g * hp;
      return whh + (g * H + j0 + u) * H;
    });
    T* Wi = wpkp + wioff[p];
    if (fx)
      RecW<T>::pack_t(I, ld, Wi, [&](int64_t n) {
        const int64_t g = n / hp, u = n - g * hp;
        return wih + (g * H + j0 + u) * I;
      });
    T* scr = scrp + p * scr_stride;
    tm.lap(prof::kPack);
    for (int64_t s = 0; s < st.T; ++s) {
      const int64_t t = reverse ? st.T - 1 - s : s;
      const int64_t nb = st.bs[t], row0 = st.off[t];
      int64_t n1 = 0;
      const T* prev = nullptr;
      if (s > 0) {
        const int64_t tp = reverse ? t + 1 : t - 1;
        n1 = std::min(nb, st.bs[tp]);
        prev = outp + st.off[tp] * H;
      }
      if (hp > 0) {
        // the GEMM's h_{t-1}: the previous output rows and h0 (times m with rec_mask)
        const T* A = rm ? hmp + (s & 1) * B * H : prev;
        const T* A0 = rm ? h0mp : h0p;
        // fx: this step's input projection x_t @ W_ih^T first, the recurrent
        // product added to it (the x_t rows are read here, not a (N, 4H) buffer)
        // (GRU: into its own scratch xs -- its n gate needs the two parts apart)
        T* xs = isGRU ? scr + scr_half : scr;
        const bool sum_x = fx && !isGRU;
        if (fx) RecW<T>::mm(nb, ld, I, xp + row0 * I, I, Wi, xs, ld, false);
        tm.lap(prof::kFwdInput);
        if (n1 > 0) RecW<T>::mm(n1, ld, H, A, H, W, scr, ld, sum_x);
        if (nb > n1)
          RecW<T>::mm(nb - n1, ld, H, A0 + n1 * H, H, W, scr + n1 * ld, ld, sum_x);
        tm.lap(prof::kFwdRecurrent);
        T* hmnext = rm ? hmp + ((s + 1) & 1) * B * H : nullptr;
        for (int64_t b = 0; b < nb; ++b) {
          const T* hprev = b < n1 ? prev + b * H : h0p + b * H;
          const int64_t r = row0 + b;
          T* cb = cp ? cp + b * H : nullptr;
          if (zc_on) std::memcpy(ct, cb + j0, sizeof(T) * hp);  // c_{t-1}
          T* grow = gip + (fx && !save ? b : r) * GH;  // this row's gates (see gi)
          T* cs = callp ? callp + r * H : nullptr;
          T* hs = hnp ? hnp + r * H : nullptr;
          if constexpr (isElman)
            Cell::fwd_row(scr + b * ld, hp, grow, H, j0, hprev, cb, outp + r * H, cs, hs, bhnp);
          else if (fx)  // the input side is in gh (LSTM) or xs (GRU), not in gi
            Cell::template fwd_row<false>(scr + b * ld, hp, grow, H, j0, hprev, cb, outp + r * H,
                                          cs, hs, bhnp, xs + b * ld, bxp);
          else
            Cell::fwd_row(scr + b * ld, hp, grow, H, j0, hprev, cb, outp + r * H, cs, hs, bhnp);
          if (zh_on)
            zone_mix<T>(outp + r * H + j0, hprev + j0, zhp + r * H + j0,
                        isElman && rawp ? rawp + r * H + j0 : nullptr, hp);
          if (zc_on) {
            zone_mix<T>(cb + j0, ct, zcp + r * H + j0,
                        rawp ? rawp + r * H + j0 : nullptr, hp);
            if (callp) std::memcpy(callp + r * H + j0, cb + j0, sizeof(T) * hp);
          }
          if (rm)
            mul_into<T>(hmnext + b * H + j0, outp + r * H + j0, mp + b * H + j0,
                        hp, false);
        }
        tm.lap(prof::kFwdGates);
      }
      step_barrier(P);
      tm.lap(prof::kFwdWait);
    }
  });

  // h_n row b = output of sequence b's last processed step.
  Tensor hn = h0.clone();
  if (st.T > 0) {
    T* hnp2 = hn.data_ptr<T>();
    if (reverse) {
      std::memcpy(hnp2, outp, sizeof(T) * B * H);
    } else {
      for (int64_t t = 0; t < st.T; ++t) {
        const int64_t nb = st.bs[t];
        const int64_t nn = t + 1 < st.T ? st.bs[t + 1] : 0;  // rows ending at t
        if (nb > nn)
          std::memcpy(hnp2 + nn * H, outp + (st.off[t] + nn) * H,
                      sizeof(T) * (nb - nn) * H);
      }
    }
  }
  std::vector<Tensor> res{out, hn, Cell::kHasC ? cstate : empty0(x)};
  if (save) {
    if (std::is_same<Cell, LSTMCell>::value) {
      res.push_back(gi);
      res.push_back(call);
    } else if (isGRU) {
      res.push_back(gi);
      res.push_back(hnall);
    }
    res.push_back(out);
    if (need_raw) res.push_back(raw);
  }
  return res;
}

// ------------------------------------------------------------- backward
template <typename T, typename Cell>
std::vector<Tensor> backward_impl(Tensor x, const Tensor& batch_sizes,
                                  Tensor h0, Tensor c0, Tensor w_ih,
                                  Tensor w_hh, Tensor b_ih, Tensor b_hh,
                                  bool reverse, const std::vector<Tensor>& saved,
                                  Tensor grad_out, Tensor grad_hn,
                                  Tensor grad_cn, bool probe,
                                  const Tensor& rec_mask, const Tensor& zone_h,
                                  const Tensor& zone_c) {
  constexpr int64_t G = Cell::G, GD = Cell::GD;
  constexpr bool isGRU = std::is_same<Cell, GRUCell>::value;
  constexpr bool isLSTM = std::is_same<Cell, LSTMCell>::value;
  constexpr bool isElman = !isGRU && !isLSTM;
  Steps st(batch_sizes);
  const int64_t N = x.size(0), I = x.size(1), H = h0.size(1), B = h0.size(0);
  const int64_t GH = G * H;
  const bool bias = b_ih.numel() > 0;
  TORCH_CHECK(st.off[st.T] == N, "rnnlab: sum(batch_sizes) != x.size(0)");
  check_options(rec_mask, zone_h, zone_c, B, N, H, Cell::kHasC);
  const bool rm = rec_mask.numel() > 0;
  const bool zh_on = zone_h.numel() > 0, zc_on = zone_c.numel() > 0;
  const bool need_raw = (isElman && zh_on) || (isLSTM && zc_on);
  const size_t nsaved = (isLSTM || isGRU ? 3u : 1u) + (need_raw ? 1u : 0u);
  TORCH_CHECK(saved.size() == nsaved, "rnnlab: wrong number of saved tensors");
  Tensor out = saved[nsaved - 1 - (need_raw ? 1 : 0)].contiguous();
  Tensor raw = need_raw ? saved.back().contiguous() : Tensor();
  // Elman with zone_h: the activation's derivative reads h~_t, not the zoned h_t
  Tensor gates = (isLSTM || isGRU) ? saved[0].contiguous() : (need_raw ? raw : out);
  Tensor extra = (isLSTM || isGRU) ? saved[1].contiguous() : Tensor();
  TORCH_CHECK(out.size(0) == N && gates.size(0) == N, "rnnlab: bad saved tensors");
  TORCH_CHECK(grad_out.numel() == 0 || grad_out.size(0) == N, "rnnlab: bad grad_out");

  Tensor dh = grad_hn.numel() ? grad_hn.contiguous().clone()
                              : at::zeros({B, H}, x.options());
  Tensor dc;
  if (isLSTM)
    dc = grad_cn.numel() ? grad_cn.contiguous().clone()
                         : at::zeros({B, H}, x.options());
  Tensor c0z;
  if (isLSTM) c0z = c0.numel() ? c0 : at::zeros({B, H}, x.options());
  const bool has_go = grad_out.numel() > 0;

  const int P = choose_threads(G, H, N, st.T);
  Plan pl = make_plan(H, P);
  // fb: the fused backward (LSTM).  Each step, after the barrier, every
  // thread also computes its slice of dx_t columns (dG_t @ W_ih[:, slice]) and
  // adds dG_t[:, own gate columns]^T @ [x_t | h_{t-1}] to its own rows of dW,
  // so dG_t is used while in cache and never stored for all steps; the big
  // GEMMs after the loop go away.  Independent of whether the forward was
  // fused (the saved gates are the same either way); see fuse_input.
  const bool fb = isLSTM && fuse_input(I, H, N, st.T, P, true);
  Plan ipl = make_plan(I, P);  // fb: thread p's dx columns [ipl.j0, +ipl.hp)
  // Per-thread packed W_hh columns: B[k][u] = W_hh[hrow(k)][j0 + u], then (fb)
  // W_ih columns B[k][i] = W_ih[k][i0 + i], then (fb) the thread's dW rows
  // (G*hp x (I+H), row g*hp+u = gate g unit j0+u: [dW_ih row | dW_hh row]).
  std::vector<int64_t> woff(P + 1, 0), wxoff(P, 0), dwoff(P, 0);
  for (int p = 0; p < P; ++p) {
    wxoff[p] = woff[p] + RecW<T>::size(GH, pl.hp[p]) + 64;
    dwoff[p] = wxoff[p] + (fb ? RecW<T>::size(GH, ipl.hp[p]) + 64 : 0);
    woff[p + 1] = dwoff[p] + (fb ? G * pl.hp[p] * (I + H) + 64 : 0);
  }
  Tensor wpk = at::empty({woff[P]}, w_hh.options());
  std::vector<double> part(probe ? size_t(P) * st.T : 0, 0.0);
  // per-thread scratch: zoneout's direct parts d*dh, d*dc (one row), and with
  // rec_mask the dh_{t-1} GEMM's result (nb x hp) before it is multiplied by m
  int64_t hpmax = 0;
  for (int p = 0; p < P; ++p) hpmax = std::max(hpmax, pl.hp[p]);
  const int64_t zt_stride = ((hpmax + 15) / 16) * 16 + 16;
  const int64_t bs_stride = rm ? ((B * hpmax + 15) / 16) * 16 + 16 : 0;
  const int64_t ts_stride = (zh_on || zc_on ? 2 * zt_stride : 0) + bs_stride;
  Tensor tscr = ts_stride ? at::empty({P * ts_stride}, x.options()) : Tensor();
  T* tsp = ts_stride ? tscr.data_ptr<T>() : nullptr;
  const T* mp = rm ? rec_mask.data_ptr<T>() : nullptr;
  const T* zhp = zh_on ? zone_h.data_ptr<T>() : nullptr;
  const T* zcp = zc_on ? zone_c.data_ptr<T>() : nullptr;
  const T* rawp = need_raw ? raw.data_ptr<T>() : nullptr;
  // the dh_{t-1} GEMM adds to dh (GRU's z*dh, zoneout's d*dh) or overwrites it
  const bool dh_beta = Cell::kDhBeta || zh_on;

  // The time loop runs over chunks of consecutive steps (<= ~R rows); after
  // each chunk its dgates rows go through the big GEMMs (dx rows, dW, db), so
  // only one chunk of dgates is ever held in memory (not N x GD*H).
  int64_t R = std::max<int64_t>(512, (int64_t(4) << 20) / (GD * H));
  if (const char* e = std::getenv("RNNLAB_BWD_CHUNK_ROWS")) R = std::max<int64_t>(1, std::atoll(e));
  int64_t maxbs = 0;
  for (int64_t t = 0; t < st.T; ++t) maxbs = std::max(maxbs, st.bs[t]);
  const int64_t Rbuf = fb ? 2 * B : std::min<int64_t>(N, std::max(R, maxbs));
  // fb: two (B, GD*H) buffers of dG_t, alternating by step (a slower thread
  // may still read step s-1's while this one writes step s's)
  Tensor dGc = at::empty({std::max<int64_t>(Rbuf, 1), GD * H}, x.options());

  T* dhp = dh.data_ptr<T>();
  T* dcp = isLSTM ? dc.data_ptr<T>() : nullptr;
  const T* gop = has_go ? grad_out.data_ptr<T>() : nullptr;
  const T* outp = out.data_ptr<T>();
  const T* gp = gates.data_ptr<T>();
  const T* ep = extra.defined() ? extra.data_ptr<T>() : nullptr;
  const T* h0p = h0.data_ptr<T>();
  const T* c0p = isLSTM ? c0z.data_ptr<T>() : nullptr;
  const T* xp = x.data_ptr<T>();
  T* dGp = dGc.data_ptr<T>();
  const T* whh = w_hh.data_ptr<T>();
  T* wpkp = wpk.data_ptr<T>();
  const int64_t gw = gates.size(1);            // row width of `gates`
  const int64_t ew = isLSTM || isGRU ? H : 0;  // row width of `extra`

  // pack (each thread its own block: first touch in its own cache)
  run_region(P, [&](int p) {
    prof::Timer tm(p);
    const int64_t j0 = pl.j0[p], hp = pl.hp[p];
    RecW<T>::pack_k(GH, hp, wpkp + woff[p], [&](int64_t k) {
      return whh + Cell::hrow(k, H) * H + j0;
    });
    tm.lap(prof::kPack);
  });

  Tensor dx = at::empty({N, I}, x.options());
  // dW = sum over chunks of dG^T @ [x | h_prev].  split: straight into
  // dW_ih (dG^T @ x rows, read in place) and dW_hh (dG^T @ h_prev rows, copied
  // in the loop); else one GEMM into Y (GD*H, I+H) over [x | h_prev] copied
  // rows, split at the end.  Split saves the final copy of Y (large at big H,
  // few rows) but oneDNN runs two narrow GEMMs slower than one wide one at
  // small I, H with many rows.  (LSTM, Elman; the GRU has its own, isGRU below.)
  bool split = !isGRU && GD == G && (std::min(I, H) >= 256 || N <= 1024);
  if (const char* e = std::getenv("RNNLAB_DW_SPLIT")) split = !isGRU && GD == G && std::atoi(e) != 0;
  if (fb) split = true;  // h_{t-1} rows only (x_t is read in place); dW_ih, dW_hh written by the threads
  // GRU: its dgates rows are [dn_h | dr dz | dn_i] (4H, see gru.h), but each
  // side's dW needs only 3H of those columns: dW_ih from [H, 4H) (torch's r,
  // z, n) against x, dW_hh from [0, 3H) ([n, r, z]) against h_{t-1}, into Yh
  // and permuted to r, z, n at the end.  Two 3H-row GEMMs instead of one 4H
  // (x_t read in place, only h_{t-1} rows copied): 25% fewer dW FLOPs.
  // (Measured against the one 4H-row GEMM: 5-9% faster GRU forward+backward at
  // H = 256, 512 with B = 16, 64; the same within the noise at 128 x 16.)
  Tensor Y, Yh, dwih, dwhh;
  if (split || isGRU) {
    dwih = at::empty({GH, I}, x.options());
    dwhh = at::empty({GH, H}, x.options());
    if (isGRU) Yh = at::empty({GH, H}, x.options());
  } else {
    Y = at::empty({GD * H, I + H}, x.options());
  }
  Tensor dgsum = at::zeros({GD * H}, x.options());  // summed in the loop
  T* dgsp = bias ? dgsum.data_ptr<T>() : nullptr;
  const int64_t xw = split || isGRU ? H : I + H, xoff = split || isGRU ? 0 : I;
  Tensor xh = at::empty({std::max<int64_t>(Rbuf, 1), xw}, x.options());  // [x |] h_prev rows
  T* xhp = xh.data_ptr<T>();
  Tensor xc = fb ? x.contiguous() : Tensor();
  const T* xcp = fb ? xc.data_ptr<T>() : nullptr;
  const T* wihp = nullptr;
  Tensor wihc;
  if (fb) {
    wihc = w_ih.contiguous();
    wihp = wihc.data_ptr<T>();
  }
  T* dxp = dx.data_ptr<T>();
  T* dwihp = split ? dwih.data_ptr<T>() : nullptr;
  T* dwhhp = split ? dwhh.data_ptr<T>() : nullptr;

  int64_t s_begin = 0;
  while (s_begin < st.T) {
    // chunk = steps s_begin .. s_end-1 in backward processing order
    int64_t s_end = s_begin, rows = 0;
    while (s_end < st.T) {
      const int64_t t = reverse ? s_end : st.T - 1 - s_end;
      if (!fb && rows > 0 && rows + st.bs[t] > Rbuf) break;
      rows += st.bs[t];
      ++s_end;
    }
    const int64_t t_first = reverse ? s_begin : st.T - 1 - s_begin;
    const int64_t t_last = reverse ? s_end - 1 : st.T - 1 - (s_end - 1);
    const int64_t rowlo = st.off[std::min(t_first, t_last)];
    const int64_t rowhi = st.off[std::max(t_first, t_last) + 1];

    run_region(P, [&](int p) {
      using Tr = VT<T>;
      using V = typename Tr::V;
      prof::Timer tm(p);
      const int64_t j0 = pl.j0[p], hp = pl.hp[p];
      const T* W = wpkp + woff[p];
      T* th = tsp ? tsp + p * ts_stride : nullptr;  // d*dh_t (zone_h)
      T* tc = th ? th + zt_stride : nullptr;         // d*dc_t (zone_c)
      T* gscr = rm ? tsp + p * ts_stride + (ts_stride - bs_stride) : nullptr;
      const int64_t i0 = ipl.j0[p], ip = ipl.hp[p];
      T* Wx = wpkp + wxoff[p];
      T* dWo = wpkp + dwoff[p];  // fb: this thread's dW rows, (G*hp, I+H)
      if (fb) {
        RecW<T>::pack_k(GH, ip, Wx, [&](int64_t k) { return wihp + k * I + i0; });
        std::memset(dWo, 0, sizeof(T) * G * hp * (I + H));
      }
      tm.lap(prof::kPack);
      for (int64_t s = s_begin; s < s_end; ++s) {
        const int64_t t = reverse ? s : st.T - 1 - s;
        const int64_t nb = st.bs[t], row0 = st.off[t];
        const bool has_prev = reverse ? t < st.T - 1 : t > 0;
        const int64_t tp = reverse ? t + 1 : t - 1;
        const int64_t n1 = has_prev ? std::min(nb, st.bs[tp]) : 0;
        const int64_t prow = has_prev ? st.off[tp] : 0;
        T* dGt = fb ? dGp + (s & 1) * B * GD * H : dGp + (row0 - rowlo) * GD * H;
        // [x |] h_{t-1} rows for dW: this step's in the alternating buffer (fb)
        T* xht = fb ? xhp + (s & 1) * B * H : xhp + (row0 - rowlo) * xw;
        if (hp > 0) {
          double sq = 0.0;
          for (int64_t b = 0; b < nb; ++b) {
            const int64_t r = row0 + b;
            T* dhr = dhp + b * H;
            if (gop || probe) {
              V acc = Tr::bc(T(0));
              for_chunks<T>(hp, [&](int64_t u, int w) {
                Lanes<T> L{w};
                V v = L.ld(dhr + j0 + u);
                if (gop) v = v + L.ld(gop + r * H + j0 + u);
                L.st(dhr + j0 + u, v);
                acc = acc + v * v;
              });
              sq += (double)Tr::hsum(acc);
            }
            const T* hprev = b < n1 ? outp + (prow + b) * H : h0p + b * H;
            const T* cprev = nullptr;
            const T* cnew = nullptr;
            if (isLSTM) {
              cprev = b < n1 ? ep + (prow + b) * ew : c0p + b * H;
              cnew = zc_on ? rawp + r * H : ep + r * ew;  // c~_t under zoneout
            }
            T* dcr = dcp ? dcp + b * H : nullptr;
            if (zh_on) zone_split<T>(dhr + j0, zhp + r * H + j0, th, hp);
            if (zc_on) zone_split<T>(dcr + j0, zcp + r * H + j0, tc, hp);
            Cell::bwd_row(dhr, dcr, gp + r * gw,
                          ep ? ep + r * ew : nullptr, hprev, cprev, cnew,
                          dGt + b * GD * H, H, j0, hp);
            if (zc_on) add_into<T>(dcr + j0, tc, hp, true);
            if (zh_on) add_into<T>(dhr + j0, th, hp, Cell::kDhBeta);
            // bias gradient: own gate columns of this dgates row (still in L1)
            if (dgsp) {
              const T* dgr = dGt + b * GD * H;
              for (int64_t g = 0; g < GD; ++g) {
                const int64_t c0 = g * H + j0;
                for_chunks<T>(hp, [&](int64_t u, int w) {
                  Lanes<T> L{w};
                  L.st(dgsp + c0 + u, L.ld(dgsp + c0 + u) + L.ld(dgr + c0 + u));
                });
              }
            }
            // [x | h_prev] row for the weight-gradient GEMM (own units of h;
            // h_prev * m with rec_mask: what the forward GEMM read)
            if (rm)
              mul_into<T>(xht + b * xw + xoff + j0, hprev + j0,
                          mp + b * H + j0, hp, false);
            else
              std::memcpy(xht + b * xw + xoff + j0, hprev + j0,
                          sizeof(T) * hp);
          }
          if (probe) part[size_t(p) * st.T + t] = sq;
        }
        tm.lap(prof::kBwdGates);
        step_barrier(P);
        tm.lap(prof::kBwdWait);
        if (hp > 0) {
          if (!rm) {
            RecW<T>::mm(nb, hp, GH, dGt, GD * H, W, dhp + j0, H, dh_beta);
          } else {  // dh_{t-1} = (direct part) + m * (dgates_t @ W_hh)
            RecW<T>::mm(nb, hp, GH, dGt, GD * H, W, gscr, hp, false);
            for (int64_t b = 0; b < nb; ++b)
              mul_into<T>(dhp + b * H + j0, gscr + b * hp, mp + b * H + j0, hp,
                          dh_beta);
          }
          tm.lap(prof::kBwdRecurrent);
          if (fb) {
            // dW rows of own units += dG_t[:, g*H + j0 .. +hp]^T @ [x_t | h_{t-1} (* m)]
            for (int64_t g = 0; g < G; ++g) {
              T* Cg = dWo + g * hp * (I + H);
              gemm_tn<T>(hp, I, nb, dGt + g * H + j0, GD * H, xcp + row0 * I, I, Cg, I + H);
              gemm_tn<T>(hp, H, nb, dGt + g * H + j0, GD * H, xht, H, Cg + I, I + H);
            }
            tm.lap(prof::kBwdWeights);
          }
        }
        // fb: dx_t[:, own columns i0 .. i0+ip) = dG_t @ W_ih[:, those columns]
        if (fb && ip > 0) RecW<T>::mm(nb, ip, GH, dGt, GD * H, Wx, dxp + row0 * I + i0, I, false);
        tm.lap(prof::kBwdInput);
      }
      if (fb && hp > 0)
        for (int64_t g = 0; g < G; ++g)
          for (int64_t u = 0; u < hp; ++u) {
            const T* src = dWo + (g * hp + u) * (I + H);
            std::memcpy(dwihp + (g * H + j0 + u) * I, src, sizeof(T) * I);
            std::memcpy(dwhhp + (g * H + j0 + u) * H, src + I, sizeof(T) * H);
          }
      tm.lap(prof::kBwdWeights);
    });
    if (fb) {
      s_begin = s_end;
      continue;
    }

    // Big GEMMs of this chunk's rows (all threads, oneDNN for float32),
    // written in place: dx rows, dW accumulated (beta = 1 after the first).
    prof::Timer tm0(0);
    const int64_t rc = rowhi - rowlo;
    const bool first = s_begin == 0;
    Tensor dGr = dGc.narrow(0, 0, rc);
    // GRU: each side's 3H columns as one contiguous copy, which oneDNN
    // reads in place (it would copy a strided view anyway)
    Tensor dGi = isGRU ? dGr.narrow(1, H, GH).contiguous() : dGr;  // torch gate order
    Tensor dxr = dx.narrow(0, rowlo, rc);
    mm_into(dGi, w_ih, dxr, false);
    tm0.lap(prof::kBwdInput);
    if (isGRU) {
      mm_into(dGi.t(), x.narrow(0, rowlo, rc), dwih, !first);
      Tensor dGh = dGr.narrow(1, 0, GH).contiguous();  // [dn_h | dr dz]
      mm_into(dGh.t(), xh.narrow(0, 0, rc), Yh, !first);
    } else if (split) {
      mm_into(dGr.t(), x.narrow(0, rowlo, rc), dwih, !first);
      mm_into(dGr.t(), xh.narrow(0, 0, rc), dwhh, !first);
    } else {
      T* dst = xhp;
      for (int64_t r = rowlo; r < rowhi; ++r)
        std::memcpy(dst + (r - rowlo) * (I + H), xp + r * I, sizeof(T) * I);
      mm_into(dGr.t(), xh.narrow(0, 0, rc), Y, !first);
    }
    tm0.lap(prof::kBwdWeights);
    s_begin = s_end;
  }

  if (split) {
    if (st.T == 0) {
      dwih.zero_();
      dwhh.zero_();
    }
  } else if (isGRU) {
    if (st.T == 0) {
      dwih.zero_();
      Yh.zero_();
    }
    dwhh.narrow(0, 0, 2 * H).copy_(Yh.narrow(0, H, 2 * H));  // r, z
    dwhh.narrow(0, 2 * H, H).copy_(Yh.narrow(0, 0, H));      // n
  } else {
    if (st.T == 0) Y.zero_();
    dwih = Y.narrow(1, 0, I).contiguous();
    dwhh = Y.narrow(1, I, H).contiguous();
  }
  if (st.T == 0) dx.zero_();

  Tensor norms = empty0(x);
  if (probe) {
    norms = at::empty({st.T}, x.options());
    T* np = norms.data_ptr<T>();
    for (int64_t t = 0; t < st.T; ++t) {
      double s = 0;
      for (int p = 0; p < P; ++p) s += part[size_t(p) * st.T + t];
      np[t] = (T)std::sqrt(s);
    }
  }

  Tensor dbih, dbhh;
  if (bias) {
    if (isGRU) {
      dbih = dgsum.narrow(0, H, GH).clone();
      dbhh = at::cat({dgsum.narrow(0, H, 2 * H), dgsum.narrow(0, 0, H)});
    } else {
      dbih = dgsum;
      dbhh = dgsum.clone();
    }
  } else {
    dbih = empty0(x);
    dbhh = empty0(x);
  }
  return {dx, dh, isLSTM ? dc : empty0(x), dwih, dwhh, dbih, dbhh, norms};
}

}  // namespace rnnlab
