"""``rnnlab generate CHECKPOINT``: text from a trained language model — sampling (temperature, top-k, top-p),
greedy decoding or beam search — continuing a prompt."""
from __future__ import annotations

import argparse

import torch

from ..data.text import DataError
from ..generate import generate
from ..train.checkpoint import CheckpointError
from ..train.lm import load_lm
from .options import UsageError, float_range, int_range, positive_float, usable_device
from .unknown import check_lm_text, say

EPILOG = """\
examples:
  rnnlab generate runs/demo --prompt "def "                     sample 200 tokens, temperature 1
  rnnlab generate runs/demo --prompt "class " --temperature 0.7 --top-p 0.9 --samples 3
  rnnlab generate runs/ptb --prompt "the company said" --top-k 40 --max-tokens 30
  rnnlab generate runs/ptb --prompt "the company said" --beam 8 --max-tokens 20
  rnnlab generate runs/demo --greedy --max-tokens 100
"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    p = subparsers.add_parser("generate", parents=parents, help="generate text with a trained LM",
                              description=__doc__.split("\n\n")[0].replace("``", "'"), epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint directory, or a run directory (its best/ "
                   "is used, else last/)")
    p.add_argument("--prompt", default="", metavar="TEXT", help="text to continue (default: start after a line end)")
    p.add_argument("--max-tokens", type=int_range(1, 1_000_000), default=200, metavar="N",
                   help="tokens to generate (default: %(default)s)")
    p.add_argument("--temperature", type=positive_float, default=None, metavar="T",
                   help="sampling temperature; < 1 is more conservative (default: 1)")
    p.add_argument("--top-k", type=int_range(1), default=None, metavar="K", help="sample among the K most likely "
                   "tokens only")
    p.add_argument("--top-p", type=float_range(0.0, 1.0), default=None, metavar="P", help="nucleus sampling: among "
                   "the most likely tokens whose probability adds up to P")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--beam", type=int_range(1, 10_000), default=None, metavar="W", help="beam search with W beams")
    p.add_argument("--length-penalty", type=float_range(0.0, lo_open=False), default=None, metavar="A",
                   help="beam search: rank beams by log-probability / length^A (default: 1; matters with --stop)")
    p.add_argument("--stop", default=None, metavar="TOKEN", help="end a text once this token is produced, e.g. "
                   "'<eos>' (word models) or a character")
    p.add_argument("--samples", type=int_range(1, 1000), default=1, metavar="N", help="how many texts "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int_range(0), default=0, metavar="S", help="sampling seed (default: %(default)s)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default: %(default)s)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    sampling = [f for f, v in (("--temperature", args.temperature), ("--top-k", args.top_k),
                               ("--top-p", args.top_p)) if v is not None]
    if args.greedy and args.beam is not None:
        raise UsageError("--greedy and --beam are two different searches; keep one (--beam 1 is greedy)")
    if (args.greedy or args.beam is not None) and sampling:
        raise UsageError(f"{', '.join(sampling)} shape sampling, but {'--greedy' if args.greedy else '--beam'} "
                         "does not sample; drop one")
    if args.length_penalty is not None and args.beam is None:
        raise UsageError("--length-penalty ranks beams; it needs --beam W")
    strategy = "beam" if args.beam is not None else ("greedy" if args.greedy else "sample")
    if strategy != "sample" and args.samples > 1:
        raise UsageError(f"--samples {args.samples}: {strategy} search gives one answer; sample to get several")
    device = usable_device(args.device)
    try:
        model, vocab, _ = load_lm(args.checkpoint, prefer="best", device=device)
    except CheckpointError as exc:
        raise UsageError(f"CHECKPOINT {exc}") from None
    note = check_lm_text(vocab, args.prompt, "--prompt")
    kwargs = {"stop": args.stop}
    if strategy == "sample":
        kwargs.update(temperature=args.temperature or 1.0, top_k=args.top_k, top_p=args.top_p,
                      generator=torch.Generator().manual_seed(args.seed))
    elif strategy == "beam":
        kwargs.update(beam_width=args.beam,
                      length_penalty=args.length_penalty if args.length_penalty is not None else 1.0)
    for i in range(args.samples):
        try:
            text = generate(model, vocab, args.prompt, args.max_tokens, strategy, **kwargs)
        except DataError as exc:
            raise UsageError(f"--prompt {exc}" if "prompt" in str(exc) else str(exc)) from None
        if i == 0:
            say(note)  # once generation has started: a bad --stop is still the one error line
        if args.samples > 1:
            print(f"--- sample {i + 1} ---")
        print(args.prompt + text)
    return 0
