#!/usr/bin/env python3
"""The adding problem at a long T: a dilated RNN (rnnlab.DilatedRNN) against a plain tanh RNN (rnnlab.RNN), each
trained for at most a wall-clock budget, reporting the test MSE (always predicting 1 scores 1/6 ≈ 0.167; "solved"
means < 0.04).

The task (rnnlab.data.synthetic.Adding): T pairs (value ~ U(0, 1), marker), exactly two markers, one in each half;
the target is the sum of the two marked values, read off the last step's output through a linear layer. A plain tanh
RNN has to carry the first value through up to T steps of tanh(W h) and stays on the 0.167 plateau; a dilated RNN
with dilations 1, 4, 16, 64 reaches any step within a dozen recurrent steps (Chang et al. 2017).

    python benchmarks/adding_dilated.py                          # T = 400, GRU cells, at most 120 s per model
    python benchmarks/adding_dilated.py --cell rnn_tanh --max-seconds 60 --models dilated

Both models see the same batches (Adding's seeded stream), Adam, gradient norm clipped to 1. Nothing here asserts
a result: it is a measurement, bounded by --max-seconds per model.
"""
from __future__ import annotations

import argparse
import sys
import time

from engine import positive_int  # benchmarks/engine.py: nothing runs at import


def dilation_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be comma-separated positive integers, e.g. 1,2,4,8")
    return values


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--length", type=positive_int, default=400, help="sequence length T (default: 400)")
    p.add_argument("--cell", default="gru", choices=("lstm", "gru", "rnn_tanh", "rnn_relu"),
                   help="the dilated RNN's cell (default: gru)")
    p.add_argument("--dilations", type=dilation_list, default=(1, 4, 16, 64),
                   help="one per layer (default: 1,4,16,64: any step reaches the end within ~10 steps)")
    p.add_argument("--hidden", type=positive_int, default=32, help="hidden units per layer (default: 32)")
    p.add_argument("--tanh-hidden", type=positive_int, default=128,
                   help="hidden units of the plain tanh RNN (default: 128)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="default: 32")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate (default: 3e-3)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="training budget per model (default: 120)")
    p.add_argument("--eval-every", type=positive_int, default=100, help="steps between test evaluations (default: 100)")
    p.add_argument("--test-size", type=positive_int, default=500, help="test sequences (default: 500)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default: 1, a shared machine)")
    p.add_argument("--models", default="dilated,tanh", help="which to train: dilated, tanh or both (default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",")]
    bad = [m for m in args.models if m not in ("dilated", "tanh")]
    if bad or not args.models:
        p.error(f"--models takes dilated and/or tanh, comma-separated; got {','.join(bad) or 'nothing'}")
    return args


def build(kind, args):
    import torch
    from torch import nn

    import rnnlab

    class Regressor(nn.Module):
        def __init__(self, rnn, width):
            super().__init__()
            self.rnn, self.head = rnn, nn.Linear(width, 1)

        def forward(self, x):  # x (B, T, 2)
            out, _ = self.rnn(x)  # (B, T, H)
            return self.head(out[:, -1])  # (B, 1)

    torch.manual_seed(args.seed)
    if kind == "dilated":
        rnn = rnnlab.DilatedRNN(args.cell, 2, args.hidden, dilations=args.dilations, batch_first=True)
        return Regressor(rnn, args.hidden), f"DilatedRNN({args.cell!r}, H={args.hidden}, dilations={args.dilations})"
    rnn = rnnlab.RNN(2, args.tanh_hidden, nonlinearity="tanh", batch_first=True)
    return Regressor(rnn, args.tanh_hidden), f"RNN(tanh, H={args.tanh_hidden})"


def train(kind, args) -> dict:
    import torch

    from rnnlab.data.synthetic import Adding

    model, name = build(kind, args)
    data = Adding(args.batch_size, 1000, length=args.length, seed=args.seed)
    test = Adding(args.test_size, 1, length=args.length, seed=args.seed, split="test").batch()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters, T = {args.length}, budget {args.max_seconds:.0f} s", flush=True)

    def test_mse() -> float:
        model.eval()
        with torch.no_grad():
            mse = torch.nn.functional.mse_loss(model(test.x), test.y).item()
        model.train()
        return mse

    t0, step, best, solved_at = time.perf_counter(), 0, float("inf"), None
    while time.perf_counter() - t0 < args.max_seconds:
        batch = data.batch(step // 1000, step % 1000)
        loss = torch.nn.functional.mse_loss(model(batch.x), batch.y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.eval_every == 0:
            mse = test_mse()
            best = min(best, mse)
            elapsed = time.perf_counter() - t0
            print(f"  step {step:5d}  {elapsed:6.1f} s  train MSE {loss.item():.4f}  test MSE {mse:.4f}", flush=True)
            if mse < 0.04 and solved_at is None:
                solved_at = (step, elapsed)
                break
    final = test_mse()
    return {"name": name, "steps": step, "seconds": time.perf_counter() - t0, "test_mse": final,
            "best": min(best, final), "solved_at": solved_at}


def main(argv) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = [train(kind, args) for kind in args.models]
    print(f"\nadding problem, T = {args.length} (always predicting 1: MSE 0.167; solved: < 0.04)")
    for r in results:
        verdict = (f"solved at step {r['solved_at'][0]} ({r['solved_at'][1]:.0f} s)" if r["solved_at"]
                   else "not solved within the budget")
        print(f"  {r['name']}: test MSE {r['test_mse']:.4f} (best {r['best']:.4f}) after {r['steps']} steps, "
              f"{r['seconds']:.0f} s — {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
