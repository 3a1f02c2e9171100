#!/usr/bin/env python3
"""What diagnostics during training cost: the same char-level LSTM LM trained for the same number of steps with and
without ``TrainingDiagnostics`` (``--diagnose-every``) at the default interval, interleaved.

The model: rnnlab's RecurrentLM, 2 x LSTM(256), embedding 256 — the shape of 'rnnlab train lm --layers 2' — on
characters, batches of 32 x 64 steps (train lm's defaults), Adam, clip norm 1. The text: --text, else
../shared/data/tinyshakespeare/input.txt next to the repository when present, else the Python standard library's
source (``rnnlab.data.text.stdlib_corpus``: available everywhere).

Each repetition trains twice from the same initial weights on the same batches — once with the callback, once
without, the order alternating between repetitions — after one short warm-up fit of each (the C++ engine's build,
oneDNN's first calls). The time of ``Trainer.fit()`` (no checkpoints: out_dir None) is compared:

- **overhead**: the median over repetitions of (time with) / (time without) - 1, with the range; the fit includes
  the record at step 1 as well as those at every multiple of --every, as a real run's first steps do;
- **per record**: the median wall time the callback itself reports per record (``seconds``: the spectra of every
  W_hh, the gate replay, the probe's bookkeeping), and that as a share of --every steps at the measured step time —
  the steady-state cost, less noisy than the difference of two fits on a shared machine.

    python benchmarks/diagnose_overhead.py                       # 200 steps x 3 repetitions (~10 min on 1 core)
    python benchmarks/diagnose_overhead.py --quick               # 60 steps, every 20, 2 repetitions: a smoke run
    python benchmarks/diagnose_overhead.py --steps 300 --reps 5 --threads 2 --device cuda

Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rnnlab.data.text import LMStream, Vocab, read_text, stdlib_corpus  # noqa: E402
from rnnlab.diagnose.during import DEFAULT_EVERY, TrainingDiagnostics  # noqa: E402
from rnnlab.engine import backend_name  # noqa: E402
from rnnlab.models.lm import RecurrentLM  # noqa: E402
from rnnlab.train.lm import LMTask  # noqa: E402
from rnnlab.train.trainer import Trainer, TrainOptions  # noqa: E402

SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


class Kept(TrainingDiagnostics):
    """The callback, keeping its records in memory (the benchmark's trainer has no metrics file)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.records = []

    def after_step(self, trainer, info):
        rec = super().after_step(trainer, info)
        if rec is not None:
            self.records.append(rec)
        return rec


def text_of(args) -> tuple[str, str]:
    if args.text:
        return read_text(args.text), args.text
    if SHAKESPEARE.is_file():
        return read_text(SHAKESPEARE), str(SHAKESPEARE)
    return stdlib_corpus(1_200_000), "the Python standard library's source (1.2 MB)"


def fit(init: dict, vocab_size: int, data, args, device, with_diagnostics: bool, steps: int):
    """(seconds of Trainer.fit(), the callback or None)."""
    model = RecurrentLM(vocab_size, cell="lstm", layers=args.layers, hidden=args.hidden).to(device)
    model.load_state_dict(init)
    cb = Kept(model, every=args.every) if with_diagnostics else None
    options = TrainOptions(epochs=1_000_000, max_steps=steps, quiet=True, clip_norm=1.0, log_every=args.every,
                           seed=0)
    trainer = Trainer(model, LMTask(model, char_level=True, device=device), data, None, options,
                      print_fn=lambda s: None, callbacks=[cb] if cb else [])
    t0 = time.perf_counter()
    trainer.fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, cb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="training steps per fit (default: %(default)s)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default: %(default)s)")
    p.add_argument("--every", type=int, default=DEFAULT_EVERY, help="the diagnostics interval (default: the "
                   "callback's default, %(default)s)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bptt", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--text", default=None, help="training text (default: tinyshakespeare if present, else the "
                   "standard library's source)")
    p.add_argument("--quick", action="store_true", help="60 steps, --every 20, 2 repetitions")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.every, args.reps = 60, 20, 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    text, source = text_of(args)
    vocab = Vocab.build(text, "char")
    tokens = torch.tensor(vocab.encode(text), dtype=torch.long)
    data = LMStream(tokens, args.batch_size, args.bptt)
    torch.manual_seed(0)
    init = copy.deepcopy(RecurrentLM(len(vocab), cell="lstm", layers=args.layers, hidden=args.hidden).state_dict())
    print(f"# char LSTM LM {args.layers} x {args.hidden} on {source}: vocabulary {len(vocab)}, batches "
          f"{args.batch_size} x {args.bptt}; {args.steps} steps per fit, diagnostics every {args.every}; device "
          f"{device}, {args.threads} thread(s), engine {backend_name(device)}; torch {torch.__version__}",
          flush=True)
    for mode in (False, True):  # warm-up
        fit(init, len(vocab), data, args, device, mode, 3)
    times = {False: [], True: []}
    per_record, step_s = [], []
    for r in range(args.reps):
        for mode in ((False, True) if r % 2 == 0 else (True, False)):
            s, cb = fit(init, len(vocab), data, args, device, mode, args.steps)
            times[mode].append(s)
            if cb is not None:
                per_record += [rec["seconds"] for rec in cb.records]
                n = len(cb.records)
            else:
                step_s.append(s / args.steps)
            print(f"  rep {r + 1}: {'with   ' if mode else 'without'} diagnostics {s:7.2f} s"
                  + (f" ({n} records)" if mode else ""), file=sys.stderr, flush=True)
    ratios = [on / off for on, off in zip(times[True], times[False])]
    med = statistics.median(ratios)
    rec_s, step = statistics.median(per_record), statistics.median(step_s)
    print(f"step time without diagnostics: {1000 * step:.1f} ms (median)")
    print(f"fit time, with / without: median {med:.4f} over {args.reps} interleaved pairs "
          f"[{min(ratios):.4f}, {max(ratios):.4f}]")
    print(f"per record: {1000 * rec_s:.1f} ms (median of {len(per_record)}) = "
          f"{100 * rec_s / (args.every * step):.2f}% of {args.every} steps")
    print(f"diagnostics every {args.every} steps: {100 * (med - 1):+.1f}% time (whole fits of {args.steps} steps, "
          f"records at step 1 and every {args.every}); steady state {100 * rec_s / (args.every * step):+.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
