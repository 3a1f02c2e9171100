"""``rnnlab demo``: a 20-second check of the engine, with no data to download.

A quick look at the engine, not the main demo: it writes nothing, and it shows which backend runs and the gradient
through time. The main job (data, model, trainer, checkpoints, evaluation, samples) is ``rnnlab train lm
--stdlib-demo``, which ``make demo`` runs.

Trains a small ``rnnlab.LSTM`` on the parity task, generated on the fly: each example is a string of 0/1 bits of
length 2..12 and its label is the parity of the bits (1 when the count of ones is odd). The label depends on every
bit, so the gradient has to travel back through time to the first step. Prints loss and accuracy as it trains, then
which engine backend ran, accuracy per length on fresh strings, and the gradient-through-time norms
||dL/dh_t|| of the last training batch read with ``rnnlab.probe``.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import rnnlab
from rnnlab.engine import backend_name

from .options import UsageError, float_range, int_range, positive_float

DESCRIPTION = __doc__.split("\n\n", 1)[1].replace("``", "'")

EPILOG = """\
examples:
  rnnlab demo                           ~20 s of training with the defaults
  rnnlab demo --seconds 60 --hidden 128 longer, wider
  rnnlab demo --steps 300               exactly 300 steps, whatever the time
  rnnlab demo --layers 2 --max-len 20   two layers, longer strings
  rnnlab demo --backend python          the pure-PyTorch engine instead of the C++ one
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        parents=parents,
        help="a 20-second engine check: a small LSTM on the parity task and its gradient-through-time probe "
             "(the main demo is 'rnnlab train lm --stdlib-demo')",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float_range(0.0, 3600.0), default=20.0, metavar="S",
                   help="training time budget in seconds (default: %(default)g); ignored when --steps is given")
    p.add_argument("--steps", type=int_range(1, 1_000_000), default=None, metavar="N",
                   help="train exactly N steps instead of for --seconds")
    p.add_argument("--hidden", type=int_range(1, 4096), default=64, metavar="H",
                   help="LSTM hidden size (default: %(default)s)")
    p.add_argument("--layers", type=int_range(1, 8), default=1, metavar="L",
                   help="stacked LSTM layers (default: %(default)s)")
    p.add_argument("--batch", type=int_range(1, 4096), default=64, metavar="B",
                   help="strings per training batch (default: %(default)s)")
    p.add_argument("--min-len", type=int_range(1, 1000), default=2, metavar="N",
                   help="shortest bit string (default: %(default)s)")
    p.add_argument("--max-len", type=int_range(1, 1000), default=12, metavar="N",
                   help="longest bit string (default: %(default)s)")
    p.add_argument("--lr", type=float_range(0.0, 10.0), default=3e-3, metavar="LR",
                   help="Adam learning rate (default: %(default)g)")
    p.add_argument("--seed", type=int_range(0), default=0, help="random seed (default: %(default)s)")
    p.add_argument("--threads", type=int_range(1, 1024), default=1, metavar="N",
                   help="torch CPU threads (default: %(default)s; a model this small gains nothing from more, and "
                        "on a busy machine extra threads slow it down several times)")
    p.add_argument("--backend", choices=("auto", "cpp", "python"), default=None,
                   help="engine backend; 'auto' uses the C++ one when it builds (default: $RNNLAB_BACKEND, else auto)")
    p.add_argument("--log-every", type=positive_float, default=None, metavar="S",
                   help="seconds between progress lines (default: 2; with --steps, every tenth of the run)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.min_len > args.max_len:
        raise UsageError(f"--min-len {args.min_len} is larger than --max-len {args.max_len}; "
                         "the shortest string must not be longer than the longest")
    if args.backend is not None:
        # The engine reads RNNLAB_BACKEND at every call, so setting it here is enough.
        if args.backend == "auto":
            os.environ.pop("RNNLAB_BACKEND", None)
        else:
            os.environ["RNNLAB_BACKEND"] = args.backend

    try:
        backend = backend_name()
    except (ValueError, RuntimeError) as exc:  # a bad RNNLAB_BACKEND, or a forced backend that cannot run
        raise UsageError(" ".join(str(exc).split())) from exc
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    model = ParityNet(rnnlab.LSTM, args.hidden, args.layers)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    n_params = sum(p.numel() for p in model.parameters())
    budget = f"{args.steps} steps" if args.steps is not None else f"{args.seconds:g} s"
    print(f"parity of 0/1 strings, lengths {args.min_len}-{args.max_len}: rnnlab.LSTM(2, {args.hidden}, "
          f"num_layers={args.layers}) + linear head, {n_params:,} parameters, batch {args.batch}, Adam lr {args.lr:g}, "
          f"{budget}, backend {backend}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}",
          flush=True)

    log_steps = max(1, args.steps // 10) if args.steps is not None and args.log_every is None else None
    log_seconds = args.log_every if args.log_every is not None else 2.0
    start = last_log = time.perf_counter()
    step, seen, run_loss, run_correct = 0, 0, 0.0, 0
    p = None
    while True:
        elapsed = time.perf_counter() - start
        last = (step + 1 == args.steps) if args.steps is not None else elapsed >= args.seconds
        x, lengths, y = parity_batch(args.batch, args.min_len, args.max_len, gen)
        opt.zero_grad(set_to_none=True)
        if last:  # read the gradient through time off this batch's backward pass
            with rnnlab.probe(model) as p:
                logits = model(x, lengths)
                loss = loss_fn(logits, y)
                loss.backward()
        else:
            logits = model(x, lengths)
            loss = loss_fn(logits, y)
            loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += len(y)
        run_loss += loss.item() * len(y)
        run_correct += int((logits.argmax(1) == y).sum())
        now = time.perf_counter()
        due = step % log_steps == 0 if log_steps else now - last_log >= log_seconds
        if due or last:
            print(f"step {step:6d}  {now - start:6.1f} s  loss {run_loss / seen:.4f}  "
                  f"accuracy {100.0 * run_correct / seen:5.1f}%  (mean over the last {seen} strings)", flush=True)
            seen, run_loss, run_correct, last_log = 0, 0.0, 0, now
        if last:
            break
    train_s = time.perf_counter() - start
    ran = backend_name()
    print(f"\ntrained {step} steps in {train_s:.1f} s ({step / train_s:.1f} steps/s); engine backend that ran: {ran}"
          + (" (forced by RNNLAB_BACKEND)" if os.environ.get("RNNLAB_BACKEND") else ""))

    print("\naccuracy on 512 fresh strings of each length:")
    with torch.no_grad():
        cells = []
        for n in range(args.min_len, args.max_len + 1):
            x, lengths, y = parity_batch(512, n, n, gen)
            acc = (model(x, lengths).argmax(1) == y).float().mean().item()
            cells.append(f"{n}: {100 * acc:.0f}%")
    print("  " + "  ".join(cells))

    print_probe(p)
    return 0


class ParityNet(nn.Module):
    """One-hot bits -> LSTM -> linear head on the output at each string's last bit."""

    def __init__(self, lstm_cls, hidden: int, layers: int):
        super().__init__()
        self.lstm = lstm_cls(2, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (B, T, H)
        # Padding comes after each string and the LSTM runs forward, so out[b, len_b - 1] never saw padding.
        last = out[torch.arange(x.shape[0]), lengths - 1]  # (B, H)
        return self.head(last)  # (B, 2)


def parity_batch(batch: int, min_len: int, max_len: int, gen):
    """x: (B, T, 2) one-hot bits, zero after each string's end; lengths: (B,); y: (B,) parity of each string."""
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=gen)
    T = int(lengths.max())
    valid = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
    bits = torch.randint(0, 2, (batch, T), generator=gen) * valid
    y = bits.sum(1) % 2
    x = nn.functional.one_hot(bits, 2).float() * valid[..., None]  # (B, T, 2)
    return x, lengths, y


def print_probe(p) -> None:
    norms = p.grad_norms if p is not None else {}
    if not norms:
        print("\nthe probe recorded nothing (no rnnlab layer ran under it)")
        return
    keys = sorted(norms)
    print("\ngradient through time of the last batch, ||dL/dh_t|| (rnnlab.probe; norm over batch and units;")
    print("the loss reads each string at its last bit, so late steps also get gradient straight from the head):")
    names = [f"{name} layer {layer}" + (" reverse" if direction else "") for name, layer, direction in keys]
    width = max(12, *(len(n) for n in names))
    print("   t  " + "  ".join(f"{n:>{width}}" for n in names))
    T = max(len(norms[k]) for k in keys)
    for t in range(T):
        row = []
        for k in keys:
            v = norms[k]
            row.append(f"{float(v[t]):>{width}.3e}" if t < len(v) else " " * width)
        print(f"{t:4d}  " + "  ".join(row))
    for k, name in zip(keys, names):
        v = norms[k].float()
        if len(v) > 1 and float(v[-1]) > 0:
            ratio = float(v[0] / v[-1])
            trend = "shrinks" if ratio < 1 else "does not shrink"
            print(f"{name}: ||dL/dh_0|| / ||dL/dh_{len(v) - 1}|| = {ratio:.3g} "
                  f"(the gradient {trend} on its way back through time)")
