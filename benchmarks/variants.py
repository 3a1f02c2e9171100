#!/usr/bin/env python3
"""Recurrent regularisation benchmark: the forward+backward time of rnnlab.LSTM with each regularisation option,
next to the plain rnnlab.LSTM and next to the same regularised LSTM written as a Python loop over nn.LSTMCell.

Variants (rnnlab.layers has the equations): weight drop 0.5 (DropConnect on W_hh), locked dropout 0.4 on the
input and the output (one mask per sequence and feature), recurrent dropout 0.25 (one mask per sequence on the
h_{t-1} that enters W_hh), zoneout 0.1 on h and c (fresh Bernoulli draws per step and unit), and all of them at
once. Each rnnlab variant is one layer call (the fast engine, masks drawn per call); each loop variant is the
naive way, autograd over T calls of nn.LSTMCell with the same masks drawn the same way (the weight-dropped loop
calls torch._VF.lstm_cell, which is what nn.LSTMCell.forward calls, with W_hh ⊙ M).

Printed per (H, B) point, T = 64, input = hidden, one layer, float32, training mode: the median time of one
forward+backward for each, and two ratios per variant — its time over the plain rnnlab.LSTM's (1.0x: the option
costs nothing extra) and the loop's time over rnnlab's (the speed-up over the naive loop), each the median of
per-round ratios with their range.
Everything at a point is timed round-robin in one process after a warm-up (benchmarks/engine.py's habits, the same
malloc re-exec: tuned thresholds unless --default-malloc). Nothing here asserts a time.

    python benchmarks/variants.py                        # H x B in 256x16, 256x64, 512x16, 512x64
    python benchmarks/variants.py --points 256x16 --threads 1 --repeats 3
"""
from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import sys
import time

import engine  # benchmarks/engine.py: malloc re-exec, round-robin timing, load measurement, tables

POINTS = [(256, 16), (256, 64), (512, 16), (512, 64)]
# p of each option: AWD-LSTM's weight drop; the locked and recurrent rates in AWD-LSTM's range; a zoneout rate
# Krueger et al.'s range covers. The cost of an option hardly depends on p.
VARIANTS = {
    "weight drop": {"weight_drop": 0.5},
    "locked in+out": {"input_dropout": 0.4, "output_dropout": 0.4},
    "recurrent": {"recurrent_dropout": 0.25},
    "zoneout h,c": {"zoneout": 0.1},
    "all": {"weight_drop": 0.5, "input_dropout": 0.4, "output_dropout": 0.4, "recurrent_dropout": 0.25,
            "zoneout": 0.1},
}


def parse_args(argv):
    p = engine._Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=engine.parse_points, default=POINTS, metavar="HxB,...",
                   help="(hidden size, batch) points (default: 256x16,256x64,512x16,512x64)")
    p.add_argument("--threads", type=engine.positive_int, default=None, metavar="N",
                   help="torch.set_num_threads(N) (default: torch's choice)")
    p.add_argument("--repeats", type=engine.positive_int, default=5, metavar="R", help="timed rounds (default: 5)")
    p.add_argument("--seq-len", type=engine.positive_int, default=64, metavar="T", help="sequence length (default: 64)")
    p.add_argument("--min-time", type=float, default=0.1, metavar="S",
                   help="seconds one timed sample lasts at least (default: 0.1)")
    p.add_argument("--backend", choices=("auto", "cpp", "python"), default=None,
                   help="rnnlab's engine backend (sets RNNLAB_BACKEND; default: as the environment says)")
    p.add_argument("--default-malloc", action="store_true", help="glibc's default malloc thresholds")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    return p.parse_args(argv)


def rnnlab_step(module, x, grad_out):
    """One training step's forward+backward of a whole-sequence layer (the input's gradient too)."""
    params = list(module.parameters())

    def step():
        for q in params:
            q.grad = None
        x.grad = None
        out, _ = module(x)
        out.backward(grad_out)

    return step


def loop_step(cell, x, grad_out, opts: dict):
    """The same variant, naively: a Python loop over nn.LSTMCell under autograd, masks drawn as the layer does."""
    import torch

    params = list(cell.parameters())
    T, B, I = x.shape
    H = cell.hidden_size
    p_w, p_in, p_out = opts.get("weight_drop", 0), opts.get("input_dropout", 0), opts.get("output_dropout", 0)
    p_rec, p_z = opts.get("recurrent_dropout", 0), opts.get("zoneout", 0)

    def keep(shape, p):
        return x.new_empty(shape).bernoulli_(1 - p).div_(1 - p)

    def step():
        for q in params:
            q.grad = None
        x.grad = None
        inp = x * keep((B, I), p_in) if p_in else x  # (T, B, I): one mask per sequence and feature
        w_hh = cell.weight_hh * keep(cell.weight_hh.shape, p_w) if p_w else None  # (4H, H)
        m = keep((B, H), p_rec) if p_rec else None  # (B, H)
        h, c = x.new_zeros(B, H), x.new_zeros(B, H)
        outs = []
        for t in range(T):
            h_in = h * m if m is not None else h  # LSTMCell reads h only through W_hh
            if w_hh is None:
                h_new, c_new = cell(inp[t], (h_in, c))
            else:
                h_new, c_new = torch._VF.lstm_cell(inp[t], (h_in, c), cell.weight_ih, w_hh, cell.bias_ih,
                                                   cell.bias_hh)
            if p_z:  # zoneout: fresh d per step and unit, for h and for c
                d_h, d_c = x.new_empty(B, H).bernoulli_(p_z), x.new_empty(B, H).bernoulli_(p_z)
                h_new = d_h * h + (1 - d_h) * h_new
                c_new = d_c * c + (1 - d_c) * c_new
            h, c = h_new, c_new
            outs.append(h)
        out = torch.stack(outs)  # (T, B, H)
        if p_out:
            out = out * keep((B, H), p_out)
        out.backward(grad_out)

    return step


def main(argv) -> int:
    args = parse_args(argv)
    engine.ensure_malloc(args, argv)
    import os

    if args.backend is not None:
        if args.backend == "auto":
            os.environ.pop("RNNLAB_BACKEND", None)
        else:
            os.environ["RNNLAB_BACKEND"] = args.backend

    import torch
    from torch import nn

    import rnnlab

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        backend = rnnlab.backend_name()
    except (ValueError, RuntimeError) as exc:
        raise engine.UsageError(" ".join(str(exc).split())) from exc
    T = args.seq_len
    header = (f"rnnlab regularisation benchmark, {datetime.date.today()}: torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {engine.cpu_description()}, malloc {engine.malloc_mode()}, "
              f"rnnlab backend {backend}; LSTM forward+backward, T={T}, input=hidden, 1 layer, float32, training "
              f"mode, median of {args.repeats} interleaved rounds")
    print(("_" + header + "_") if args.markdown else header, flush=True)

    load = engine.OtherLoad()
    rows = []
    for H, B in args.points:
        t0 = time.perf_counter()
        gc.collect()
        torch.manual_seed(0)
        x = torch.randn(T, B, H, requires_grad=True)
        grad_out = torch.randn(T, B, H)
        steps = {"plain": rnnlab_step(rnnlab.LSTM(H, H), x, grad_out),
                 "loop plain": loop_step(nn.LSTMCell(H, H), x, grad_out, {})}
        for name, opts in VARIANTS.items():
            steps[name] = rnnlab_step(rnnlab.LSTM(H, H, **opts), x, grad_out)
            steps[f"loop {name}"] = loop_step(nn.LSTMCell(H, H), x, grad_out, opts)
        samples = engine.time_round_robin(steps, args.repeats, args.min_time)
        ms = {n: 1e3 * statistics.median(s) for n, s in samples.items()}
        rows.append([str(H), str(B), "plain", f"{ms['plain']:.1f}", "1.00x", f"{ms['loop plain']:.1f}",
                     engine.paired_ratio(samples, "plain", "loop plain")])
        for name in VARIANTS:
            rows.append([str(H), str(B), name, f"{ms[name]:.1f}", engine.paired_ratio(samples, "plain", name),
                         f"{ms['loop ' + name]:.1f}", engine.paired_ratio(samples, name, f"loop {name}")])
        engine.log(f"H={H:4d} B={B:3d}: {time.perf_counter() - t0:5.1f} s")
        del steps, samples

    print()
    print(("### " if args.markdown else "") + "rnnlab.LSTM with each regularisation option: ms per forward+backward")
    print(engine.render(["H", "B", "variant", "rnnlab ms", "/ plain rnnlab (range)", "LSTMCell loop ms",
                         "loop / rnnlab (range)"], rows, args.markdown))
    print("\nratios: median of the per-round time ratios, their range over the rounds in brackets. 'variant / plain': "
          "what the option costs over the plain layer; 'loop / rnnlab': the speed-up over the naive loop.")
    share = load.share()
    if share is not None:
        print(f"note: other processes used {100 * share:.0f}% of the {os.cpu_count()} CPUs during this run"
              + (" — the machine was busy: the numbers, ratios included, are unreliable" if share > 0.1 else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except engine.UsageError as exc:
        print(f"variants.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("variants.py: interrupted", file=sys.stderr)
        sys.exit(130)
