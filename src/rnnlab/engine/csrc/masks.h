// Random masks for the recurrent regularisers (dropout, weight drop, zoneout):
//   out[i] = value if u_i < p else 0,   u_i uniform on [0, 1) with 2^-32 steps
// u_i from SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable
// pseudorandom number generators"; the output function of Java's
// SplittableRandom): z_k = mix(seed + (k+1) * golden), each 64-bit output
// giving two 32-bit uniforms (elements 2k and 2k+1).  Counter-based, so any
// slice of the tensor is computed independently: at::parallel_for over
// chunks, and the same (seed, size) gives the same mask for any thread count.
// torch's bernoulli_ costs ~10 ns per element here (a Mersenne Twister draw
// and a double compare); this ~0.5 (AVX-512) to ~1.5, which keeps a zoneout mask of
// (T*B, H) per layer direction cheap next to the time loop.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

namespace rnnlab {

inline uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Pairs [k0, k1): elements 2k, 2k+1 from the k-th output.  Branch-free, so
// the compiler vectorises it (AVX-512: ~0.4 ns per element).
template <typename T>
inline void bernoulli_pairs(T* __restrict out, int64_t k0, int64_t k1,
                            uint64_t thr, T value, uint64_t seed) {
  for (int64_t k = k0; k < k1; ++k) {
    const uint64_t z = splitmix64(seed + uint64_t(k + 1) * 0x9E3779B97F4A7C15ULL);
    out[2 * k] = (z & 0xFFFFFFFFULL) < thr ? value : T(0);
    out[2 * k + 1] = (z >> 32) < thr ? value : T(0);
  }
}

template <typename T>
inline void bernoulli_fill_impl(T* out, int64_t n, uint64_t thr, T value,
                                uint64_t seed) {
  const int64_t pairs = n / 2;
  at::parallel_for(0, pairs, 1 << 15, [=](int64_t b, int64_t e) {
    bernoulli_pairs<T>(out, b, e, thr, value, seed);
  });
  if (n % 2) {  // the last element: the low half of output number `pairs`
    const uint64_t z = splitmix64(seed + uint64_t(pairs + 1) * 0x9E3779B97F4A7C15ULL);
    out[n - 1] = (z & 0xFFFFFFFFULL) < thr ? value : T(0);
  }
}

// Fills `out` (contiguous CPU float32/float64) in place; p in [0, 1].
inline void bernoulli_fill(at::Tensor out, double p, double value, int64_t seed) {
  TORCH_CHECK(out.device().is_cpu() && out.is_contiguous(),
              "rnnlab: bernoulli_fill needs a contiguous CPU tensor");
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "rnnlab: bernoulli_fill p must be in [0, 1]; got ", p);
  // P(u < thr / 2^32) = thr / 2^32 = p up to 2^-32
  const uint64_t thr = p >= 1.0 ? (uint64_t(1) << 32) : uint64_t(p * 4294967296.0);
  const int64_t n = out.numel();
  if (out.scalar_type() == at::kFloat)
    bernoulli_fill_impl<float>(out.data_ptr<float>(), n, thr, float(value), uint64_t(seed));
  else if (out.scalar_type() == at::kDouble)
    bernoulli_fill_impl<double>(out.data_ptr<double>(), n, thr, value, uint64_t(seed));
  else
    TORCH_CHECK(false, "rnnlab: bernoulli_fill supports float32 and float64, got ", out.scalar_type());
}

}  // namespace rnnlab
