// Phase timers of the time loop (benchmarks/profile_lstm.py).
//
// Off by default.  On (set_enabled(true)), every thread of the loop adds the
// wall time of each phase of each step to its own row of one table: where a
// step's time goes -- the recurrent GEMM, the gate math, the wait at the
// barrier -- measured inside the loop rather than guessed from what is left
// once big GEMMs timed alone are subtracted (that guess misled on a machine
// whose absolute speed drifts 2-3x within one process).  A phase's time is
// the time since the previous lap of the same thread (steady_clock, ~20 ns a
// read); off, each lap is one predictable branch.  Row 0 also receives the
// work done outside the parallel region (the big one-shot GEMMs).
#pragma once

#include <atomic>
#include <chrono>
#include <cstring>

namespace rnnlab {
namespace prof {

enum Phase : int {
  kPack,          // packing the weights into per-thread panels (both passes)
  kFwdInput,      // forward: input projection (one big GEMM, or x_t @ W_ih^T per step when fused)
  kFwdRecurrent,  // forward: h_{t-1} @ W_hh^T, the thread's gate columns
  kFwdGates,      // forward: gate math, c_t, h_t of the thread's units (and the regularisers)
  kFwdWait,       // forward: waiting at the step's barrier
  kBwdGates,      // backward: dL/dgates_t, dc_{t-1} of the thread's units (and the probe, db)
  kBwdWait,       // backward: waiting at the step's barrier
  kBwdRecurrent,  // backward: dh_{t-1} = dgates_t @ W_hh, the thread's units
  kBwdWeights,    // backward: dW (fused: per step, own rows; else the big GEMMs after each chunk)
  kBwdInput,      // backward: dx (fused: per step, own columns; else one big GEMM after each chunk)
  kPhases
};

inline const char* const kNames[kPhases] = {
    "pack",     "fwd_input", "fwd_recurrent", "fwd_gates",   "fwd_wait",
    "bwd_gates", "bwd_wait", "bwd_recurrent", "bwd_weights", "bwd_input"};

constexpr int kMaxThreads = 64;

struct alignas(64) Row {  // one per thread, on its own cache lines
  double sec[kPhases];
};

inline std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> v{false};
  return v;
}
inline Row* table() {
  static Row t[kMaxThreads];
  return t;
}
inline void set_enabled(bool on) { enabled_flag().store(on, std::memory_order_relaxed); }
inline bool enabled() { return enabled_flag().load(std::memory_order_relaxed); }
inline void reset() { std::memset(static_cast<void*>(table()), 0, sizeof(Row) * kMaxThreads); }

// Timer of thread p: lap(ph) charges the time since the last lap (or since
// construction) to phase ph.
class Timer {
 public:
  explicit Timer(int p) : on_(enabled() && p >= 0 && p < kMaxThreads), row_(on_ ? table() + p : nullptr) {
    if (on_) t_ = Clock::now();
  }
  inline void lap(Phase ph) {
    if (!on_) return;
    const auto n = Clock::now();
    row_->sec[ph] += std::chrono::duration<double>(n - t_).count();
    t_ = n;
  }
 private:
  using Clock = std::chrono::steady_clock;
  bool on_;
  Row* row_;
  Clock::time_point t_;
};

}  // namespace prof
}  // namespace rnnlab
