// Shared helpers of the rnnlab C++ time loop: vector math, BLAS calls.
//
// Vector math: float32 uses GCC vector extensions (16 lanes with AVX-512, else
// 8 lanes; AVX2+FMA when compiled with -mavx2 -mfma, SSE otherwise) with a
// Cephes-style exp polynomial (~2 ulp) and a rational tanh (~6 ulp, see
// VT<float>::tanh).  float64 uses scalar std::exp / std::tanh so that it stays
// exact to ~1e-15 relative.
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
  // tanh(x) = x P(x^2) / Q(x^2) on x clamped to [-9, 9] (beyond, tanh rounds to +-1 in float32), P of degree
  // 5 and Q of degree 3 in x^2: a rational fit of tanh(x)/x on [0, 9], least squares on the relative error with
  // Lawson reweighting (benchmarks/fit_tanh.py fits and checks them).
  // Max relative error 3.6e-7 on 2M evenly spaced points of [-10, 10] through the engine, with FMA
  // (tests/test_cpp_backend.py asserts <= 5e-7; without FMA, 4.2e-7). A refit with fit_tanh.py may print other
  // coefficients of the same accuracy (the least squares runs on numpy's BLAS, whose kernel depends on the CPU),
  // at half the instructions of the exp-based form used before: no exp, no select of two forms.
  // Exact at 0 and -0; NaN stays NaN (vmin/vmax).
  static inline V tanh(V x) {
    x = vmin(x, bc(9.0f));
    x = vmax(x, bc(-9.0f));
    const V z = x * x;
    V p = bc(1.96919321127087e-11f);
    p = p * z - 1.3379535701574241e-08f;
    p = p * z + 9.477577805228066e-06f;
    p = p * z + 2.9445134568959475e-03f;
    p = p * z + 1.2941578030586243e-01f;
    p = p * z + 1.0f;
    V q = bc(2.313412696821615e-04f);
    q = q * z + 2.3861175402998924e-02f;
    q = q * z + 4.627489149570465e-01f;
    q = q * z + 1.0f;
    return x * p / q;
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
