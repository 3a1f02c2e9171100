#!/usr/bin/env python3
"""Cell-variant benchmark: the forward+backward time of rnnlab.LayerNormLSTM, rnnlab.DilatedRNN('lstm') and
rnnlab.SkipRNN('lstm'), each next to the plain rnnlab.LSTM of the same depth and next to the same variant written
as a naive Python loop (autograd over T per-step calls).

The pairs (each variant's plain baseline and its Python loop):

- LayerNormLSTM (1 layer)            vs rnnlab.LSTM (1 layer)  and a loop of per-step LN-LSTM math (W_ih, W_hh
                                        GEMMs, F.layer_norm per gate block and on c_t) — nn.LSTMCell has no LN;
- DilatedRNN('lstm', (1, 2, 4, 8))  vs rnnlab.LSTM(num_layers=4) and a loop over 4 nn.LSTMCell, layer l reading
                                        h_{t-d_l};
- SkipRNN('lstm') (1 layer)          vs rnnlab.LSTM (1 layer)  and a loop over nn.LSTMCell with the update gate
                                        and round()'s straight-through estimator.

Each loop gets the rnnlab module's weights, and a note is printed if their outputs differ by more than 1e-4.
Printed per (H, B) point, T = 64, input = hidden, float32, training mode: the median time of one forward+backward
(``out, _ = m(x); out.backward(g)``, the input's gradient included) and two ratios per variant — its time over the
plain layer's (1.0x: the variant costs nothing extra) and the loop's time over the variant's (the speed-up over
the naive loop), each the median of per-round ratios with their range. Everything at a point is timed round-robin
in one process after a warm-up (benchmarks/engine.py's habits and its malloc re-exec: tuned thresholds unless
--default-malloc). On a shared machine use --threads 1 (see benchmarks/README.md). Nothing here asserts a time.

    python benchmarks/variant_cells.py                     # H x B in 256x16, 256x64, 512x16, 512x64
    python benchmarks/variant_cells.py --points 256x16 --threads 1 --repeats 3
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
DILATIONS = (1, 2, 4, 8)  # Chang et al.'s exponentially growing dilations, 4 layers
EPS = 1e-5  # the LN epsilon of rnnlab.LayerNormLSTM


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = engine._Parser(description=__doc__.split("\n\n")[0],
                       epilog=__doc__.split("Nothing here asserts a time.")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=engine.parse_points, default=POINTS, metavar="HxB,...",
                   help="the (hidden size, batch) points, e.g. 256x16,512x64 (default: "
                        + ",".join(f"{h}x{b}" for h, b in POINTS) + ")")
    p.add_argument("--threads", type=engine.positive_int, default=None, metavar="N",
                   help="torch.set_num_threads(N) (default: torch's choice, one per core)")
    p.add_argument("--repeats", type=engine.positive_int, default=5, metavar="R",
                   help="timed rounds per point (default: 5)")
    p.add_argument("--seq-len", type=engine.positive_int, default=64, metavar="T", help="sequence length (default: 64)")
    p.add_argument("--min-time", type=float, default=0.1, metavar="S",
                   help="seconds one timed sample lasts at least, repeating the call (default: 0.1)")
    p.add_argument("--backend", choices=("auto", "cpp", "python"), default=None,
                   help="rnnlab's engine backend (sets RNNLAB_BACKEND; default: as the environment says)")
    p.add_argument("--default-malloc", action="store_true",
                   help="measure under glibc's default malloc thresholds instead of the tuned ones")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# The naive loops: autograd over T steps, weights copied from the rnnlab module they are timed against.
# ---------------------------------------------------------------------------------------------------------------

def _ln_blocks(y, blocks, g, b):
    import torch.nn.functional as F

    H = y.shape[-1] // blocks
    return F.layer_norm(y.view(y.shape[0], blocks, H), (H,), eps=EPS).reshape(y.shape) * g + b


def ln_lstm_loop(m):
    """LN-LSTM (Ba et al. 2016, as rnnlab.LayerNormLSTM) step by step; returns forward(x) -> (out, None)."""
    import torch

    p = {n[:-3]: t for n, t in m.named_parameters()}  # names without "_l0"

    def forward(x):
        T, B, _ = x.shape
        H = p["weight_hh"].shape[1]
        h = c = x.new_zeros(B, H)
        outs = []
        for t in range(T):
            a = _ln_blocks(x[t] @ p["weight_ih"].t(), 4, p["ln_ih_weight"], p["ln_ih_bias"]) + \
                _ln_blocks(h @ p["weight_hh"].t(), 4, p["ln_hh_weight"], p["ln_hh_bias"])
            i, f, g, o = a.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(_ln_blocks(c, 1, p["ln_c_weight"], p["ln_c_bias"]))
            outs.append(h)
        return torch.stack(outs), None

    return forward


def _cell_like(layer, layer_idx=0):
    """An nn.LSTMCell holding an rnnlab/torch LSTM layer's weights."""
    from torch import nn

    s = f"_l{layer_idx}"
    w_ih = getattr(layer, "weight_ih" + s)
    cell = nn.LSTMCell(w_ih.shape[1], w_ih.shape[0] // 4)
    cell.load_state_dict({k: getattr(layer, k + s).detach().clone()
                          for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    return cell


def dilated_loop(m):
    """Dilated LSTM stack (as rnnlab.DilatedRNN): layer l steps h_t = LSTMCell(x_t, h_{t-d_l})."""
    import torch

    cells = [_cell_like(layer) for layer in m.layers]
    params = [p for c in cells for p in c.parameters()]

    def forward(x):
        T, B, _ = x.shape
        inp = list(x.unbind(0))
        for cell, d in zip(cells, m.dilations):
            zero = x.new_zeros(B, cell.hidden_size)
            states, outs = [], []
            for t in range(T):
                prev = states[t - d] if t >= d else (zero, zero)
                h, c = cell(inp[t], prev)
                states.append((h, c))
                outs.append(h)
            inp = outs
        return torch.stack(inp), None

    forward.params = params
    return forward


def skip_loop(m):
    """Skip LSTM (Campos et al. 2018, as rnnlab.SkipRNN): nn.LSTMCell + update gate, round() straight through."""
    import torch

    cell = _cell_like(m)
    w_p, b_p = m.update_weight_l0.detach().clone(), m.update_bias_l0.detach().clone()
    w_p.requires_grad_()
    b_p.requires_grad_()

    def forward(x):
        T, B, _ = x.shape
        h = c = x.new_zeros(B, cell.hidden_size)
        ut = x.new_ones(B, 1)
        outs = []
        for t in range(T):
            u = ut + (torch.round(ut) - ut).detach()
            hc, cc = cell(x[t], (h, c))
            h, c = u * hc + (1 - u) * h, u * cc + (1 - u) * c
            delta = torch.sigmoid(c @ w_p.t() + b_p)
            ut = u * delta + (1 - u) * (ut + torch.minimum(delta, 1 - ut))
            outs.append(h)
        return torch.stack(outs), None

    forward.params = list(cell.parameters()) + [w_p, b_p]
    return forward


def loop_step(forward, params, x, grad_out):
    def step():
        for p in params:
            p.grad = None
        x.grad = None
        out, _ = forward(x)
        out.backward(grad_out)

    return step


def build_point(H: int, B: int, T: int):
    """name -> step, and notes (loops whose outputs differ from the module's)."""
    import torch

    import rnnlab

    x = torch.randn(T, B, H, requires_grad=True)
    grad_out = torch.randn(T, B, H)
    steps, notes = {}, []
    lstm1, lstm4 = rnnlab.LSTM(H, H), rnnlab.LSTM(H, H, num_layers=len(DILATIONS))
    ln = rnnlab.LayerNormLSTM(H, H)
    dil = rnnlab.DilatedRNN("lstm", H, H, dilations=DILATIONS)
    skip = rnnlab.SkipRNN("lstm", H, H, update_bias=0.0)  # σ(0 + W_p c) ≈ 1/2: it skips about every other step
    loops = {"LayerNormLSTM": (ln, ln_lstm_loop(ln), list(ln.parameters())),
             "DilatedRNN": (dil, dilated_loop(dil), None), "SkipRNN": (skip, skip_loop(skip), None)}
    steps["LSTM x1"] = engine.layer_step(lstm1, x, grad_out)
    steps["LSTM x1 loop"] = engine.cell_loop_step(_cell_like(lstm1), x, grad_out)  # the plain engine's own ratio
    steps["LSTM x4"] = engine.layer_step(lstm4, x, grad_out)
    for name, (module, loop, params) in loops.items():
        steps[name] = engine.layer_step(module, x, grad_out)
        steps[name + " loop"] = loop_step(loop, params if params is not None else loop.params, x, grad_out)
        with torch.no_grad():
            diff = (module(x)[0] - loop(x)[0]).abs().max().item()
        if not diff < 1e-4:
            notes.append(f"H={H} B={B}: the {name} loop's output differs from rnnlab's by {diff:.2e} (max abs)")
    with torch.no_grad():
        skip(x)
    notes.append(f"H={H} B={B}: SkipRNN updated at {100 * skip.updates.mean().item():.0f}% of the steps")
    return steps, notes


BASELINE = {"LayerNormLSTM": "LSTM x1", "DilatedRNN": "LSTM x4", "SkipRNN": "LSTM x1"}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    engine.ensure_malloc(args, argv)
    import os

    if args.backend is not None:
        if args.backend == "auto":
            os.environ.pop("RNNLAB_BACKEND", None)
        else:
            os.environ["RNNLAB_BACKEND"] = args.backend
    import torch

    import rnnlab

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        backend = rnnlab.backend_name()
    except (ValueError, RuntimeError) as exc:
        raise engine.UsageError(" ".join(str(exc).split())) from exc
    torch.manual_seed(0)
    T, md = args.seq_len, args.markdown
    header = (f"rnnlab cell-variant benchmark, {datetime.date.today()}: torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {engine.cpu_description()}, malloc {engine.malloc_mode()}, "
              f"rnnlab backend {backend}; forward+backward, T={T}, input=hidden, float32, "
              f"median of {args.repeats} interleaved rounds")
    print(("_" + header + "_") if md else header, flush=True)
    load = engine.OtherLoad()
    rows, all_notes = [], []
    for H, B in args.points:
        t0 = time.perf_counter()
        gc.collect()
        steps, notes = build_point(H, B, T)
        all_notes += notes
        samples = engine.time_round_robin(steps, args.repeats, args.min_time)
        ms = {n: 1e3 * statistics.median(s) for n, s in samples.items()}
        rows.append([str(H), str(B), "LSTM (plain)", f"{ms['LSTM x1']:.1f}", "-", "-", f"{ms['LSTM x1 loop']:.1f}",
                     engine.paired_ratio(samples, "LSTM x1", "LSTM x1 loop")])
        for name, base in BASELINE.items():
            rows.append([str(H), str(B), name, f"{ms[name]:.1f}", f"{ms[base]:.1f} ({base})",
                         engine.paired_ratio(samples, base, name), f"{ms[name + ' loop']:.1f}",
                         engine.paired_ratio(samples, name, name + " loop")])
        engine.log(f"H={H:4d} B={B:3d}: {time.perf_counter() - t0:5.1f} s  "
                   + "  ".join(f"{n} {v:.1f} ms" for n, v in ms.items()))
        del steps
    print()
    print(engine.render(["H", "B", "variant", "ms", "plain ms", "variant / plain time (range)", "loop ms",
                         "loop / variant time (range)"], rows, md))
    print("\nms: median time of one forward+backward. 'variant / plain': the variant's time over the plain rnnlab "
          "layer's of the same depth; 'loop / variant': the naive Python loop's time over the "
          "variant's; each the median of per-round ratios, their range in brackets. The 'LSTM "
          "(plain)' row is rnnlab.LSTM against the plain nn.LSTMCell loop: the bound the variants' loop ratios "
          "inherit.")
    share = load.share()
    if share is not None:
        all_notes.append(f"other processes used {100 * share:.0f}% of the CPUs during this run"
                         + (" — the machine was busy: the numbers are unreliable, ratios less so" if share > 0.1
                            else ""))
    for note in all_notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except engine.UsageError as exc:
        print(f"variant_cells.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("variant_cells.py: interrupted", file=sys.stderr)
        sys.exit(130)
