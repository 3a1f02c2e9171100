// Shared helpers of the rnnlab C++ time loop: vector math, BLAS calls.
//
// Vector math: float32 uses GCC vector extensions (16 lanes with AVX-512, else
// 8 lanes; AVX2+FMA when compiled with -mavx2 -mfma, SSE otherwise) with Cephes-style
// exp/tanh polynomials (~2 ulp).  float64 uses scalar std::exp / std::tanh so
// that it stays exact to ~1e-15 relative.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace rnnlab {

// ---------------------------------------------------------------- BLAS ---
// MKL (bundled in libtorch_cpu) exports the Fortran LP64 BLAS symbols.  We call
// them directly: no ATen dispatch per step.  Called inside our own OpenMP
// region, MKL runs single-threaded (we also force that with
// mkl_set_num_threads_local in each worker).
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
            const int* k, const float* alpha, const float* a, const int* lda,
            const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n,
            const int* k, const double* alpha, const double* a, const int* lda,
            const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
// C API (mkl_service.h maps mkl_set_num_threads_local to this; the lower-case
// exported symbol is the Fortran variant taking a pointer).
int MKL_Set_Num_Threads_Local(int nt);
}

// Column-major GEMM: C(m x n) = alpha * op(A) * op(B) + beta * C.
inline void gemm_cm(char ta, char tb, int64_t m, int64_t n, int64_t k,
                    float alpha, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  int mi = (int)m, ni = (int)n, ki = (int)k, la = (int)lda, lb = (int)ldb,
      lc = (int)ldc;
  sgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, a, &la, b, &lb, &beta, c, &lc);
}
inline void gemm_cm(char ta, char tb, int64_t m, int64_t n, int64_t k,
                    double alpha, const double* a, int64_t lda, const double* b,
                    int64_t ldb, double beta, double* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  int mi = (int)m, ni = (int)n, ki = (int)k, la = (int)lda, lb = (int)ldb,
      lc = (int)ldc;
  dgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, a, &la, b, &lb, &beta, c, &lc);
}

// ---------------------------------------------------------- vector math ---
// float lanes: 16 (zmm) when compiled for AVX-512, else 8 (ymm / 2 x xmm).
#if defined(__AVX512F__)
constexpr int kVF = 16;
#else
constexpr int kVF = 8;
#endif
typedef float vf8 __attribute__((vector_size(4 * kVF)));
typedef int32_t vi8 __attribute__((vector_size(4 * kVF)));

template <typename T>
struct VT;

template <>
struct VT<float> {
  using V = vf8;
  static constexpr int W = kVF;
  static inline V bc(float c) { return V{} + c; }
  static inline V load(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static inline void store(float* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  static inline V loadn(const float* p, int n) {
    V v = bc(0.f);
    std::memcpy(&v, p, sizeof(float) * n);
    return v;
  }
  static inline void storen(float* p, V v, int n) {
    std::memcpy(p, &v, sizeof(float) * n);
  }
  // NaN in a gives NaN (a comparison with NaN is false, so the ternary picks a): a NaN entering the loop must
  // reach the output as it does through torch.nn, or the trainer cannot see the poisoned batch.
  static inline V vmin(V a, V b) { return b < a ? b : a; }
  static inline V vmax(V a, V b) { return b > a ? b : a; }
  // exp(x), x clamped to [-87.3, 88.37]; Cephes expf polynomial.
  static inline V exp(V x) {
    x = vmin(x, bc(88.3762626647949f));
    x = vmax(x, bc(-87.336544750553f));
    const V magic = bc(12582912.0f);  // 1.5 * 2^23: round to nearest
    V t = x * 1.44269504088896341f + magic;
    V n = t - magic;
    V r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    V p = bc(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    V y = p * (r * r) + r + 1.0f;
    vi8 e = ((vi8)t - (vi8)magic + 127) << 23;
    return y * (V)e;
  }
  static inline V sigmoid(V x) { return 1.0f / (1.0f + exp(-x)); }
  static inline V tanh(V x) {
    // small |x|: odd polynomial (Cephes tanhf); else 1 - 2/(exp(2|x|)+1)
    V ax = vmax(x, -x);
    V z = x * x;
    V p = bc(-5.70498872745E-3f);
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    V small = p * z * x + x;
    V e = exp(2.0f * ax);
    V big = 1.0f - 2.0f / (e + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big;
  }
  static inline V relu(V x) { return vmax(x, bc(0.f)); }
  static inline V relu_grad(V y, V g) { return y > 0.0f ? g : bc(0.f); }
  static inline float hsum(V v) {
    float s = 0;
    for (int i = 0; i < W; ++i) s += v[i];
    return s;
  }
};

template <>
struct VT<double> {
  using V = double;
  static constexpr int W = 1;
  static inline V bc(double c) { return c; }
  static inline V load(const double* p) { return *p; }
  static inline void store(double* p, V v) { *p = v; }
  static inline V loadn(const double* p, int) { return *p; }
  static inline void storen(double* p, V v, int) { *p = v; }
  static inline V exp(V x) { return std::exp(x); }
  static inline V sigmoid(V x) { return 1.0 / (1.0 + std::exp(-x)); }
  static inline V tanh(V x) { return std::tanh(x); }
  static inline V relu(V x) { return x < 0.0 ? 0.0 : x; }  // NaN stays NaN, as in torch.relu
  static inline V relu_grad(V y, V g) { return y > 0.0 ? g : 0.0; }
  static inline double hsum(V v) { return v; }
};

// Iterate u = 0..n-1 in chunks of VT<T>::W; f(u, w) with w == W except for
// the tail.  The cell code uses L(p) / S(p, v) helpers bound to the width.
template <typename T, typename F>
inline void for_chunks(int64_t n, F&& f) {
  constexpr int W = VT<T>::W;
  int64_t u = 0;
  for (; u + W <= n; u += W) f(u, W);
  if (u < n) f(u, (int)(n - u));
}

template <typename T>
struct Lanes {
  using Tr = VT<T>;
  using V = typename Tr::V;
  int w;
  inline V ld(const T* p) const {
    return w == Tr::W ? Tr::load(p) : Tr::loadn(p, w);
  }
  inline void st(T* p, V v) const {
    if (w == Tr::W)
      Tr::store(p, v);
    else
      Tr::storen(p, v, w);
  }
};

}  // namespace rnnlab
