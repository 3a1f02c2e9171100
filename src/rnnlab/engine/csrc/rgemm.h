// Small-M GEMM for the recurrent step (float32):
//   C[m, n] (=, or +=) sum_k A[m, k] * B[k, n],   m < M (the batch rows, small)
// with B pre-packed once per call into column blocks of NB columns, each block
// a contiguous (K x NB) row-major panel (zero padded past the last column).
// Register tile: MR rows x NB columns (AVX-512: 6 x 64, else 6 x 16); the
// vector width follows the ISA the extension is compiled for (AVX-512: 16
// lanes, else 8).  K is processed in chunks of KC (default 256) so the
// KC x NB sub-panel of B is reused from L1/L2 by every row tile.
//
// Why not MKL here: on AMD CPUs MKL runs its AVX2 code path (~half the
// AVX-512 throughput), and per-call overhead matters at small M.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>

namespace rnnlab {
namespace rg {

#if defined(__AVX512F__)
constexpr int VW = 16;   // lanes
constexpr int NP = 4;    // vectors per tile row   (tile 6 x 64: 24 zmm acc;
constexpr int MRMAX = 6; // 5-8% faster than 4 x 64 on Zen 5, 8 x 64 spills)
typedef float vfl __attribute__((vector_size(64)));
#else
constexpr int VW = 8;
constexpr int NP = 2;    // tile 6 x 16: 12 ymm accumulators (BLIS-like)
constexpr int MRMAX = 6;
typedef float vfl __attribute__((vector_size(32)));
#endif
constexpr int NB = NP * VW;   // columns per packed block

inline int64_t nblocks(int64_t ncols) { return (ncols + NB - 1) / NB; }
inline int64_t packed_size(int64_t K, int64_t ncols) {
  return nblocks(ncols) * K * NB;
}

static inline vfl vload(const float* p) {
  vfl v;
  std::memcpy(&v, p, sizeof(vfl));
  return v;
}
static inline void vstore(float* p, vfl v) { std::memcpy(p, &v, sizeof(vfl)); }
static inline vfl vbc(float a) { return vfl{} + a; }

// Fast packs.  pack_t: B[k][n] = row(n)[k] (B^T rows contiguous, e.g. the
// forward's W_hh rows): transposed in 16-wide k tiles so reads and writes
// both stay within a few cache lines.  pack_k: B[k][n] = krow(k)[n] (rows of
// B contiguous, e.g. the backward's W_hh columns): one memcpy per k and block.
template <typename R>
inline void pack_t(int64_t K, int64_t ncols, float* dst, R&& row) {
  const int64_t nb = nblocks(ncols);
  for (int64_t jb = 0; jb < nb; ++jb) {
    float* blk = dst + jb * K * NB;
    const int64_t c0 = jb * NB;
    const int cw = (int)std::min<int64_t>(NB, ncols - c0);
    const float* rp[NB];
    for (int c = 0; c < cw; ++c) rp[c] = row(c0 + c);
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
      const int64_t k1 = std::min<int64_t>(K, k0 + 16);
      for (int c = 0; c < cw; ++c) {
        const float* r = rp[c];
        for (int64_t k = k0; k < k1; ++k) blk[k * NB + c] = r[k];
      }
      if (cw < NB)
        for (int64_t k = k0; k < k1; ++k)
          std::memset(blk + k * NB + cw, 0, sizeof(float) * (NB - cw));
    }
  }
}
template <typename R>
inline void pack_k(int64_t K, int64_t ncols, float* dst, R&& krow) {
  const int64_t nb = nblocks(ncols);
  for (int64_t jb = 0; jb < nb; ++jb) {
    float* blk = dst + jb * K * NB;
    const int64_t c0 = jb * NB;
    const int cw = (int)std::min<int64_t>(NB, ncols - c0);
    for (int64_t k = 0; k < K; ++k) {
      std::memcpy(blk + k * NB, krow(k) + c0, sizeof(float) * cw);
      if (cw < NB) std::memset(blk + k * NB + cw, 0, sizeof(float) * (NB - cw));
    }
  }
}

template <int MR, bool ACC>
static inline void tile(int64_t K, const float* __restrict A, int64_t lda,
                        const float* __restrict Bb, float* __restrict C,
                        int64_t ldc, int cw) {
  vfl c[MR][NP];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NP; ++j) c[r][j] = vbc(0.f);
  const float* a[MR];
  for (int r = 0; r < MR; ++r) a[r] = A + r * lda;
  for (int64_t k = 0; k < K; ++k) {
    vfl b[NP];
    for (int j = 0; j < NP; ++j) b[j] = vload(Bb + k * NB + j * VW);
    for (int r = 0; r < MR; ++r) {
      vfl av = vbc(a[r][k]);
      for (int j = 0; j < NP; ++j) c[r][j] += av * b[j];
    }
  }
  if (cw == NB) {
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NP; ++j) {
        float* cp = C + r * ldc + j * VW;
        vfl v = c[r][j];
        if (ACC) v += vload(cp);
        vstore(cp, v);
      }
  } else {
    for (int r = 0; r < MR; ++r) {
      float tmp[NB];
      for (int j = 0; j < NP; ++j) vstore(tmp + j * VW, c[r][j]);
      float* cp = C + r * ldc;
      if (ACC)
        for (int n = 0; n < cw; ++n) cp[n] += tmp[n];
      else
        for (int n = 0; n < cw; ++n) cp[n] = tmp[n];
    }
  }
}

// M == 1 (GEMV): NBLK column blocks at once for enough independent FMA chains.
template <int NBLK, bool ACC>
static inline void tile_m1(int64_t K, const float* __restrict A,
                           const float* __restrict Bb, float* __restrict C) {
  vfl c[NBLK][NP];
  for (int q = 0; q < NBLK; ++q)
    for (int j = 0; j < NP; ++j) c[q][j] = vbc(0.f);
  const int64_t bstride = K * NB;
  for (int64_t k = 0; k < K; ++k) {
    vfl av = vbc(A[k]);
    for (int q = 0; q < NBLK; ++q)
      for (int j = 0; j < NP; ++j)
        c[q][j] += av * vload(Bb + q * bstride + k * NB + j * VW);
  }
  for (int q = 0; q < NBLK; ++q)
    for (int j = 0; j < NP; ++j) {
      float* cp = C + q * NB + j * VW;
      vfl v = c[q][j];
      if (ACC) v += vload(cp);
      vstore(cp, v);
    }
}

template <bool ACC>
static inline void tile_any(int64_t mr, int64_t K, const float* A, int64_t lda,
                            const float* Bb, float* C, int64_t ldc, int cw) {
  if (mr == MRMAX)
    tile<MRMAX, ACC>(K, A, lda, Bb, C, ldc, cw);
  else if (mr == 5)
    tile<(MRMAX > 5 ? 5 : 1), ACC>(K, A, lda, Bb, C, ldc, cw);
  else if (mr == 4)
    tile<(MRMAX > 4 ? 4 : 1), ACC>(K, A, lda, Bb, C, ldc, cw);
  else if (mr == 3)
    tile<3, ACC>(K, A, lda, Bb, C, ldc, cw);
  else if (mr == 2)
    tile<2, ACC>(K, A, lda, Bb, C, ldc, cw);
  else
    tile<1, ACC>(K, A, lda, Bb, C, ldc, cw);
}

inline int64_t kc_block() {
  static const int64_t v = [] {
    const char* e = std::getenv("RNNLAB_RG_KC");
    int64_t x = e ? std::atoll(e) : 256;
    return x > 0 ? x : 256;
  }();
  return v;
}

template <bool ACC>
inline void run_t(int64_t M, int64_t ncols, int64_t K, const float* A,
                  int64_t lda, const float* Bp, float* C, int64_t ldc) {
  const int64_t nb = nblocks(ncols);
  if (M == 1) {
    constexpr int Q = 8 / NP;  // 8 accumulators
    int64_t jb = 0;
    for (; jb + Q <= nb && (jb + Q) * NB <= ncols; jb += Q)
      tile_m1<Q, ACC>(K, A, Bp + jb * K * NB, C + jb * NB);
    for (; jb < nb; ++jb)
      tile<1, ACC>(K, A, lda, Bp + jb * K * NB, C + jb * NB, ldc,
                   (int)std::min<int64_t>(NB, ncols - jb * NB));
    return;
  }
  // Per column block (a K x NB panel, streamed from L2/L3 once), K in
  // chunks of KC: the KC x NB sub-panel stays in L1 while every MR-row tile of
  // A passes over it, accumulating into C (so a panel larger than L2, e.g.
  // K = 4H in the backward, is not re-read from L3 for every row tile).
  const int64_t KC = kc_block();
  for (int64_t jb = 0; jb < nb; ++jb) {
    const float* Bb = Bp + jb * K * NB;
    const int cw = (int)std::min<int64_t>(NB, ncols - jb * NB);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kl = std::min<int64_t>(KC, K - k0);
      const bool acc = ACC || k0 > 0;
      for (int64_t m = 0; m < M; m += MRMAX) {
        const float* Am = A + m * lda + k0;
        float* Cb = C + m * ldc + jb * NB;
        const int64_t mr = std::min<int64_t>(MRMAX, M - m);
        const float* Bk = Bb + k0 * NB;
        if (acc)
          tile_any<true>(mr, kl, Am, lda, Bk, Cb, ldc, cw);
        else
          tile_any<false>(mr, kl, Am, lda, Bk, Cb, ldc, cw);
      }
    }
  }
}

// C (M x ncols, ldc) = / += A (M x K, lda) @ B (packed).
inline void run(int64_t M, int64_t ncols, int64_t K, const float* A,
                int64_t lda, const float* Bp, float* C, int64_t ldc,
                bool accumulate) {
  if (M <= 0 || ncols <= 0) return;
  if (accumulate)
    run_t<true>(M, ncols, K, A, lda, Bp, C, ldc);
  else
    run_t<false>(M, ncols, K, A, lda, Bp, C, ldc);
}

// ------------------------------------------------------------------------
// C[m, n] += sum_k At[k, m] * Bm[k, n]: A given transposed (row k of At holds
// column k of A, so the MR broadcasts of one k are adjacent floats) and B
// row-major, unpacked (its rows are read in place, NB columns at a time).
// The fused backward's dW update: At = dG_t (the step's batch rows x one
// gate's units), Bm = x_t or h_{t-1} rows; K (the batch) is small, so packing
// B would cost as much as the product.
template <int MR>
static inline void tile_tn(int64_t K, const float* __restrict At, int64_t lda,
                           const float* __restrict Bb, int64_t ldb,
                           float* __restrict C, int64_t ldc, int cw) {
  vfl c[MR][NP];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NP; ++j) c[r][j] = vbc(0.f);
  for (int64_t k = 0; k < K; ++k) {
    vfl b[NP];
    for (int j = 0; j < NP; ++j) b[j] = vload(Bb + k * ldb + j * VW);
    const float* a = At + k * lda;
    for (int r = 0; r < MR; ++r) {
      vfl av = vbc(a[r]);
      for (int j = 0; j < NP; ++j) c[r][j] += av * b[j];
    }
  }
  if (cw == NB) {
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NP; ++j) {
        float* cp = C + r * ldc + j * VW;
        vstore(cp, vload(cp) + c[r][j]);
      }
  } else {
    for (int r = 0; r < MR; ++r) {
      float tmp[NB];
      for (int j = 0; j < NP; ++j) vstore(tmp + j * VW, c[r][j]);
      float* cp = C + r * ldc;
      for (int n = 0; n < cw; ++n) cp[n] += tmp[n];
    }
  }
}

static inline void tile_tn_any(int64_t mr, int64_t K, const float* At, int64_t lda,
                               const float* Bb, int64_t ldb, float* C, int64_t ldc, int cw) {
  if (mr == MRMAX)
    tile_tn<MRMAX>(K, At, lda, Bb, ldb, C, ldc, cw);
  else if (mr == 5)
    tile_tn<(MRMAX > 5 ? 5 : 1)>(K, At, lda, Bb, ldb, C, ldc, cw);
  else if (mr == 4)
    tile_tn<(MRMAX > 4 ? 4 : 1)>(K, At, lda, Bb, ldb, C, ldc, cw);
  else if (mr == 3)
    tile_tn<3>(K, At, lda, Bb, ldb, C, ldc, cw);
  else if (mr == 2)
    tile_tn<2>(K, At, lda, Bb, ldb, C, ldc, cw);
  else
    tile_tn<1>(K, At, lda, Bb, ldb, C, ldc, cw);
}

// C (M x n, ldc) += At^T (M x K) @ Bm (K x n, ldb).
inline void run_tn(int64_t M, int64_t n, int64_t K, const float* At, int64_t lda,
                   const float* Bm, int64_t ldb, float* C, int64_t ldc) {
  if (M <= 0 || n <= 0 || K <= 0) return;
  const int64_t KC = kc_block();
  thread_local std::vector<float> tail;  // the last, narrower column block, zero padded
  for (int64_t c0 = 0; c0 < n; c0 += NB) {
    const int cw = (int)std::min<int64_t>(NB, n - c0);
    const float* Bb = Bm + c0;
    int64_t lb = ldb;
    if (cw < NB) {
      tail.assign(size_t(K) * NB, 0.f);
      for (int64_t k = 0; k < K; ++k)
        std::memcpy(tail.data() + k * NB, Bm + k * ldb + c0, sizeof(float) * cw);
      Bb = tail.data();
      lb = NB;
    }
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kl = std::min<int64_t>(KC, K - k0);
      for (int64_t m = 0; m < M; m += MRMAX)
        tile_tn_any(std::min<int64_t>(MRMAX, M - m), kl, At + k0 * lda + m, lda,
                    Bb + k0 * lb, lb, C + m * ldc + c0, ldc, cw);
    }
  }
}

}  // namespace rg
}  // namespace rnnlab
