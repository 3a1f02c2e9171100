#!/usr/bin/env python3
"""A/B of one engine environment setting: forward+backward of an rnnlab layer with the variable set to each value in
turn, call by call in one process (the order flips every round), with the loop's phase timers on
(rnnlab.engine.timing). The engine reads these variables on every call, so nothing is rebuilt between values.

Prints the median wall time per value, the per-round ratio of the first value's time to the last's, and each phase's
median µs per step and thread. T = 64, input = hidden, float32, tuned malloc unless --default-malloc (engine.py's
habits). Nothing here asserts a time.

    python benchmarks/env_ab.py --var RNNLAB_DW_SPLIT --values 1,0 --points 512x64,256x16
    python benchmarks/env_ab.py --cell gru --var RNNLAB_FUSE --values 0,forward --points 256x16 --rounds 10
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import engine  # benchmarks/engine.py: malloc re-exec, point parsing

CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--var", required=True, help="the environment variable, e.g. RNNLAB_DW_SPLIT")
    p.add_argument("--values", required=True, help="comma-separated values to compare, e.g. 1,0")
    p.add_argument("--points", type=engine.parse_points, default=[(512, 64)], metavar="HxB,...",
                   help="(hidden size, batch) points (default: 512x64)")
    p.add_argument("--cell", choices=sorted(CELLS), default="lstm", help="layer (default: lstm)")
    p.add_argument("--rounds", type=engine.positive_int, default=8, metavar="R", help="rounds (default: 8)")
    p.add_argument("--seq-len", type=engine.positive_int, default=64, metavar="T", help="time steps (default: 64)")
    p.add_argument("--default-malloc", action="store_true", help="glibc's default malloc thresholds")
    args = p.parse_args(argv)
    args.values = [v.strip() for v in args.values.split(",")]
    if len(args.values) < 2 or any(v == "" for v in args.values):
        p.error(f"--values takes two or more comma-separated values; got {','.join(args.values)!r}")
    return args


def main(argv) -> int:
    args = parse_args(argv)
    engine.ensure_malloc(argparse.Namespace(default_malloc=args.default_malloc), argv)
    import torch

    import rnnlab
    from rnnlab.engine.timing import phase_timers

    if rnnlab.backend_name() != "cpp":
        print("env_ab.py compares settings of the C++ engine, which is not available here", file=sys.stderr)
        return 1
    T, P, vals = args.seq_len, torch.get_num_threads(), args.values
    print(f"_{args.var} A/B: {CELLS[args.cell]}, torch {torch.__version__}, {P} threads, {engine.cpu_description()}, "
          f"malloc {engine.malloc_mode()}, T={T}, input=hidden, {args.rounds} rounds_\n")
    old = os.environ.get(args.var)
    try:
        for H, B in args.points:
            layer = getattr(rnnlab, CELLS[args.cell])(H, H)
            x = torch.randn(T, B, H, requires_grad=True)

            def step():
                out, _ = layer(x)
                out.sum().backward()

            wall = {v: [] for v in vals}
            phases = {v: [] for v in vals}
            for r in range(args.rounds + 1):  # round 0 warms up every value
                for v in (vals if r % 2 == 0 else vals[::-1]):
                    os.environ[args.var] = v
                    with phase_timers(P) as timers:
                        t0 = time.perf_counter()
                        step()
                        dt = time.perf_counter() - t0
                    if r > 0:
                        wall[v].append(dt)
                        phases[v].append(timers.seconds)
            print(f"**H = {H}, B = {B}**: median ms " +
                  ", ".join(f"{v}: {statistics.median(wall[v]) * 1e3:.2f}" for v in vals))
            ratios = [a / b for a, b in zip(wall[vals[0]], wall[vals[-1]])]
            print(f"per-round time {vals[0]} / {vals[-1]}: " + " ".join(f"{q:.3f}" for q in ratios) + "\n")
            print("| phase (µs/step, per thread) | " + " | ".join(f"{args.var}={v}" for v in vals) + " |")
            print("|---|" + "---:|" * len(vals))
            for name in phases[vals[0]][0]:
                cells = []
                for v in vals:
                    per = [statistics.median(rd[name][p] for rd in phases[v]) / T * 1e6 for p in range(P)]
                    cells.append(" / ".join(f"{u:.1f}" for u in per))
                print(f"| {name} | " + " | ".join(cells) + " |")
            print(flush=True)
    finally:
        if old is None:
            os.environ.pop(args.var, None)
        else:
            os.environ[args.var] = old
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
