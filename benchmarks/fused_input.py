#!/usr/bin/env python3
"""The fused input side of the C++ engine, on and off: forward+backward of rnnlab.LSTM / rnnlab.GRU with
RNNLAB_FUSE set per call, against torch.nn.LSTM / GRU, measured interleaved in one process.

RNNLAB_FUSE (read by the engine on every call): 0 = both sides unfused (the input projection, dx and dW as big
GEMMs outside the time loop); forward = x_t @ W_ih^T inside the forward loop only; backward = dx_t and the dW
update inside the backward loop only (LSTM; the GRU has no fused backward); 1 = both; auto = unset, the engine's
own choice (csrc/loop.h, fuse_input). Each column is rnnlab's throughput over torch.nn's: the median of per-round
ratios, with their range. T = 64, input = hidden, float32, tuned malloc unless --default-malloc (benchmarks/engine.py's
habits). Nothing here asserts a time.

    python benchmarks/fused_input.py                         # LSTM and GRU at 128x16,256x16,128x64,256x64,512x64
    python benchmarks/fused_input.py --cells gru --points 256x16,512x16 --repeats 8
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import engine  # benchmarks/engine.py: malloc re-exec, round-robin timing, tables

POINTS = [(128, 16), (256, 16), (128, 64), (256, 64), (512, 64)]
SETTINGS = {"LSTM": ["0", "forward", "backward", "1", "auto"], "GRU": ["0", "forward", "auto"]}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=engine.parse_points, default=POINTS, metavar="HxB,...",
                   help="(hidden size, batch) points (default: 128x16,256x16,128x64,256x64,512x64)")
    p.add_argument("--cells", default="lstm,gru", help="lstm, gru or both (default: lstm,gru)")
    p.add_argument("--threads", type=engine.positive_int, default=None, metavar="N", help="torch threads")
    p.add_argument("--repeats", type=engine.positive_int, default=8, metavar="R", help="rounds (default: 8)")
    p.add_argument("--min-time", type=float, default=0.1, metavar="S", help="seconds per sample (default: 0.1)")
    p.add_argument("--markdown", action="store_true", help="markdown tables")
    p.add_argument("--default-malloc", action="store_true", help="glibc's default malloc thresholds")
    args = p.parse_args(argv)
    cells = [c.strip().upper() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in cells if c not in SETTINGS]
    if bad or not cells:
        p.error(f"--cells takes lstm, gru or lstm,gru; got {args.cells!r}")
    args.cells = cells
    return args


def with_fuse(step, value):
    def run():
        if value == "auto":
            os.environ.pop("RNNLAB_FUSE", None)
        else:
            os.environ["RNNLAB_FUSE"] = value
        step()
    return run


def main(argv) -> int:
    args = parse_args(argv)
    engine.ensure_malloc(args, argv)
    import torch
    from torch import nn

    import rnnlab

    if args.threads:
        torch.set_num_threads(args.threads)
    saved = os.environ.get("RNNLAB_FUSE")
    print(f"_rnnlab fused input side, {datetime.date.today()}: torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {engine.cpu_description()}, malloc {engine.malloc_mode()}, rnnlab backend "
          f"{rnnlab.backend_name()}; forward+backward, T=64, input=hidden, median of {args.repeats} interleaved "
          f"rounds_\n")
    for cell in args.cells:
        settings = SETTINGS[cell]
        rows = []
        for H, B in args.points:
            engine.log(f"{cell} {H}x{B} ...")
            torch.manual_seed(0)
            ref = getattr(nn, cell)(H, H)
            mine = getattr(rnnlab, cell)(H, H)
            mine.load_state_dict(ref.state_dict())
            x = torch.randn(64, B, H, requires_grad=True)
            g = torch.randn(64, B, H)
            steps = {"nn": engine.layer_step(ref, x, g)}
            for v in settings:
                steps[v] = with_fuse(engine.layer_step(mine, x, g), v)
            samples = engine.time_round_robin(steps, args.repeats, args.min_time)
            rows.append([str(H), str(B)] + [engine.paired_ratio(samples, v, "nn") for v in settings])
        print(f"### {cell}: rnnlab / torch.nn by RNNLAB_FUSE")
        print(engine.render(["H", "B"] + [f"FUSE={v}" for v in settings], rows, args.markdown))
        print()
    if saved is None:
        os.environ.pop("RNNLAB_FUSE", None)
    else:
        os.environ["RNNLAB_FUSE"] = saved
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
