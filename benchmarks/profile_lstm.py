#!/usr/bin/env python3
"""Where the time of one LSTM training step goes: rnnlab.LSTM's forward and backward split into the phases of its
time loop, measured inside the loop (rnnlab.engine.timing, csrc/prof.h), next to torch.nn.LSTM's forward and
backward.

One layer, T steps, batch B, input I = hidden H. Per step, each of the loop's threads (P of them, each owning H/P
hidden units and their 4 gate columns) runs:

    forward   fwd_input      x_t @ W_ih^T for its gate columns (fused), or: one (T*B, I) @ (I, 4H) GEMM before the
                             loop, on all threads, charged to thread 0
              fwd_recurrent  h_{t-1} (B, H) @ W_hh^T (H, 4H/P)
              fwd_gates      gate math, c_t, h_t of its units
              fwd_wait       the step's barrier (waiting for the slowest thread)
    backward  bwd_gates      dL/dgates_t, dc_{t-1} of its units (+ bias gradient, + the rows dW needs)
              bwd_wait       the barrier
              bwd_recurrent  dh_{t-1} (B, H/P) = dgates_t (B, 4H) @ W_hh[:, its units]
              bwd_weights    dW rows of its units += dgates_t^T [x_t | h_{t-1}] (fused), or: the dW GEMMs after each
                             chunk of steps, on all threads, charged to thread 0
              bwd_input      dx_t (fused, its columns), or: the dx GEMM after each chunk, charged to thread 0
    pack                     packing the weights into per-thread panels, once per call

Which input-side work is fused into the loop depends on H, B and the L2 cache (csrc/loop.h, fuse_input); the table
says which ran. "µs/step" is per thread (thread 0 / thread 1 / ...); "GF/s" counts the phase's products (2*m*n*k)
over the slowest thread's time, so it is the whole machine's rate; "share" is the slowest thread's time over the
sum of those. The ms columns come from interleaved rounds with the timers off; the phase table from separate rounds
with them on (they cost ~20 ns a phase: nothing at these sizes).

    python benchmarks/profile_lstm.py                    # H x B in 128x64, 256x64, 512x64, 1024x64
    python benchmarks/profile_lstm.py --points 512x16 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import engine  # benchmarks/engine.py: malloc re-exec, round-robin timing, CPU description

PHASES = ["fwd_input", "fwd_recurrent", "fwd_gates", "fwd_wait", "bwd_gates", "bwd_wait", "bwd_recurrent",
          "bwd_weights", "bwd_input", "pack"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=engine.parse_points, default=[(128, 64), (256, 64), (512, 64), (1024, 64)],
                   metavar="HxB,...", help="points to profile (default: 128x64,256x64,512x64,1024x64)")
    p.add_argument("--seq-len", type=engine.positive_int, default=64, metavar="T", help="time steps (default: 64)")
    p.add_argument("--threads", type=engine.positive_int, default=None, metavar="N",
                   help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=engine.positive_int, default=7, metavar="R", help="rounds (default: 7)")
    p.add_argument("--min-time", type=float, default=0.2, metavar="S", help="seconds per sample (default: 0.2)")
    p.add_argument("--default-malloc", action="store_true", help="glibc's default malloc thresholds")
    return p.parse_args(argv)


def phase_flops(H: int, B: int) -> dict[str, float]:
    """Products each phase computes per step (I = H, 4 gates), summed over threads."""
    G = 4 * H
    return {"fwd_input": 2.0 * B * H * G, "fwd_recurrent": 2.0 * B * H * G, "bwd_recurrent": 2.0 * B * G * H,
            "bwd_weights": 2.0 * G * B * 2 * H, "bwd_input": 2.0 * B * G * H}


def main(argv) -> int:
    args = parse_args(argv)
    engine.ensure_malloc(argparse.Namespace(default_malloc=args.default_malloc), argv)
    import torch
    from torch import nn

    import rnnlab
    from rnnlab.engine.timing import phase_timers

    if args.threads:
        torch.set_num_threads(args.threads)
    if rnnlab.backend_name() != "cpp":
        print("profile_lstm.py times the C++ engine's loop; it is not available here", file=sys.stderr)
        return 1
    T = args.seq_len
    P = torch.get_num_threads()
    print(f"_LSTM step profile: torch {torch.__version__}, {P} threads, {engine.cpu_description()}, "
          f"malloc {engine.malloc_mode()}, T={T}, input=hidden, RNNLAB_FUSE={os.environ.get('RNNLAB_FUSE', 'auto')}, "
          f"medians of {args.repeats} rounds_\n")
    for H, B in args.points:
        engine.log(f"H={H} B={B} ...")
        ref = nn.LSTM(H, H)
        mine = rnnlab.LSTM(H, H)
        mine.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, H, requires_grad=True)
        grad_out = torch.randn(T, B, H)

        def forward(module):
            def step():
                module(x)  # grad enabled: each keeps what its backward needs, as in training
            return step

        steps = {"nn fwd": forward(ref), "nn fwd+bwd": engine.layer_step(ref, x, grad_out),
                 "rnnlab fwd": forward(mine), "rnnlab fwd+bwd": engine.layer_step(mine, x, grad_out)}
        med = {k: statistics.median(v) for k, v in engine.time_round_robin(steps, args.repeats, args.min_time).items()}
        train = steps["rnnlab fwd+bwd"]
        rounds = []
        for _ in range(args.repeats):
            with phase_timers(P) as timers:
                train()
            rounds.append(timers.seconds)
        threads = mine_threads(H, B, T)
        per_step = {ph: [statistics.median(r[ph][p] for r in rounds) / T * 1e6 for p in range(threads)]
                    for ph in PHASES}
        slowest = {ph: max(v) for ph, v in per_step.items()}
        total = sum(slowest.values())
        flops = phase_flops(H, B)
        nn_f, nn_b = med["nn fwd"], med["nn fwd+bwd"] - med["nn fwd"]
        my_f, my_b = med["rnnlab fwd"], med["rnnlab fwd+bwd"] - med["rnnlab fwd"]
        print(f"**H = {H}, B = {B}** ({threads} loop threads): forward {my_f * 1e3:.1f} ms (torch.nn.LSTM "
              f"{nn_f * 1e3:.1f}), backward {my_b * 1e3:.1f} ms ({nn_b * 1e3:.1f}), forward+backward "
              f"{(nn_f + nn_b) / (my_f + my_b):.2f}x torch.nn.LSTM's speed\n")
        print("| phase | µs/step (" + " / ".join(f"thread {p}" for p in range(threads)) + ") | share | GF/s |")
        print("|---|---:|---:|---:|")
        for ph in PHASES:
            gf = f"{flops[ph] / (slowest[ph] * 1e-6) / 1e9:.0f}" if ph in flops and slowest[ph] > 0 else ""
            print(f"| {ph} | {' / '.join(f'{v:.1f}' for v in per_step[ph])} | {100 * slowest[ph] / total:.0f}% | {gf} |")
        print(flush=True)
    print("Phases that ran outside the loop (the unfused input side) show on thread 0 only, at the whole machine's "
          "rate. The slowest threads' times add up to a little more than a step's wall time (they are not all on "
          "the same thread).")
    return 0


def mine_threads(H: int, B: int, T: int) -> int:
    """Threads the C++ loop runs with at this point (csrc/loop.h, choose_threads)."""
    from rnnlab.engine import _cpp

    return int(_cpp.load().num_threads_for(4, H, B * T, T))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
