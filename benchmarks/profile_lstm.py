#!/usr/bin/env python3
"""Where the time of one LSTM training step goes: rnnlab.LSTM's forward and backward split into the big GEMMs it
issues outside the time loop and the time loop itself, next to torch.nn.LSTM's forward and backward.

rnnlab's C++ engine does, for one layer of T steps and batch B (N = T*B rows, input size I, hidden H):

    forward   input projection  X (N, I) @ W_ih^T (I, 4H)            one GEMM
              time loop         T x [ h (B, H) @ W_hh^T (H, 4H) + gate math ]
    backward  time loop         T x [ gate derivatives + dG (B, 4H) @ W_hh (4H, H) ]
              dX                dG (N, 4H) @ W_ih (4H, I)              one GEMM
              dW                dG^T (4H, N) @ [X | H_prev] (N, I+H)   one GEMM

The three big GEMMs are timed alone at the same shapes (torch.mm into a preallocated output), interleaved with the
layers in the same rounds; the time loops are what is left: forward loop = forward - input projection, backward
loop = backward - dX - dW. "GF/s" counts 2*m*n*k per GEMM, and 2*B*H*4H per step for each loop. Every number is a
median over interleaved rounds, so they can be compared within one run (see benchmarks/README.md).

    python benchmarks/profile_lstm.py                    # H x B in 512x64, 256x64, 128x64, 512x16
    python benchmarks/profile_lstm.py --points 1024x64 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import sys

import engine  # benchmarks/engine.py: malloc re-exec, round-robin timing, CPU description


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=engine.parse_points, default=[(512, 64), (256, 64), (128, 64), (512, 16)],
                   metavar="HxB,...", help="points to profile (default: 512x64,256x64,128x64,512x16)")
    p.add_argument("--seq-len", type=engine.positive_int, default=64, metavar="T", help="time steps (default: 64)")
    p.add_argument("--threads", type=engine.positive_int, default=None, metavar="N",
                   help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=engine.positive_int, default=7, metavar="R", help="rounds (default: 7)")
    p.add_argument("--min-time", type=float, default=0.2, metavar="S", help="seconds per sample (default: 0.2)")
    p.add_argument("--default-malloc", action="store_true", help="glibc's default malloc thresholds")
    return p.parse_args(argv)


def steps_for(H: int, B: int, T: int):
    import torch
    from torch import nn

    import rnnlab

    N, I, G = T * B, H, 4 * H
    ref = nn.LSTM(I, H)
    mine = rnnlab.LSTM(I, H)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    grad_out = torch.randn(T, B, H)

    def forward(module):
        def step():
            module(x)  # with grad enabled: each keeps what its backward needs, as in training
        return step

    X, W_ih = torch.randn(N, I), torch.randn(G, I)
    dG, XH = torch.randn(N, G), torch.randn(N, I + H)
    out_proj, out_dx, out_dw = torch.empty(N, G), torch.empty(N, I), torch.empty(G, I + H)
    steps = {
        "nn.LSTM fwd": forward(ref),
        "nn.LSTM fwd+bwd": engine.layer_step(ref, x, grad_out),
        "rnnlab fwd": forward(mine),
        "rnnlab fwd+bwd": engine.layer_step(mine, x, grad_out),
        "GEMM input projection": lambda: torch.mm(X, W_ih.t(), out=out_proj),
        "GEMM dX": lambda: torch.mm(dG, W_ih, out=out_dx),
        "GEMM dW": lambda: torch.mm(dG.t(), XH, out=out_dw),
    }
    flops = {"GEMM input projection": 2.0 * N * I * G, "GEMM dX": 2.0 * N * G * I, "GEMM dW": 2.0 * G * N * (I + H),
             "loop": 2.0 * T * B * H * G}
    return steps, flops


def main(argv) -> int:
    args = parse_args(argv)
    engine.ensure_malloc(argparse.Namespace(default_malloc=args.default_malloc), argv)
    import torch

    import rnnlab

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"_LSTM step profile: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{engine.cpu_description()}, malloc {engine.malloc_mode()}, rnnlab backend {rnnlab.backend_name()}, "
          f"T={args.seq_len}, input=hidden, median of {args.repeats} interleaved rounds_\n")
    print("| H | B | nn.LSTM fwd | nn.LSTM bwd | rnnlab fwd | = in-proj GEMM | + fwd loop (GF/s) | rnnlab bwd "
          "| = bwd loop (GF/s) | + dX GEMM | + dW GEMM | big GEMMs GF/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for H, B in args.points:
        steps, flops = steps_for(H, B, args.seq_len)
        engine.log(f"H={H} B={B} ...")
        samples = engine.time_round_robin(steps, args.repeats, args.min_time)
        med = {k: statistics.median(v) for k, v in samples.items()}
        nn_f, nn_b = med["nn.LSTM fwd"], med["nn.LSTM fwd+bwd"] - med["nn.LSTM fwd"]
        my_f, my_b = med["rnnlab fwd"], med["rnnlab fwd+bwd"] - med["rnnlab fwd"]
        proj, dx, dw = med["GEMM input projection"], med["GEMM dX"], med["GEMM dW"]
        loop_f, loop_b = my_f - proj, my_b - dx - dw
        big = (flops["GEMM input projection"] + flops["GEMM dX"] + flops["GEMM dW"]) / (proj + dx + dw) / 1e9

        def ms(s):
            return f"{s * 1e3:.2f}"

        def gf(s):
            return f"{flops['loop'] / s / 1e9:.0f}" if s > 0 else "n/a"

        print(f"| {H} | {B} | {ms(nn_f)} | {ms(nn_b)} | {ms(my_f)} | {ms(proj)} | {ms(loop_f)} ({gf(loop_f)}) | "
              f"{ms(my_b)} | {ms(loop_b)} ({gf(loop_b)}) | {ms(dx)} | {ms(dw)} | {big:.0f} |", flush=True)
    print("\nms per call. rnnlab fwd = input projection + forward time loop; rnnlab bwd = backward time loop + dX + "
          "dW (the loops are the remainders). The loops' GF/s count only their recurrent products (2*B*H*4H per "
          "step); the gate math is inside their time.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
