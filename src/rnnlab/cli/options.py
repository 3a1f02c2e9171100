"""Argument types that reject nonsense values with a message naming the value and the rule.

argparse reports a failed type as ``argument --steps: <message>``; ``main`` shortens that to ``--steps: <message>``,
so each message here says what was given and what is allowed: ``got 0; must be an integer >= 1``.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable


class UsageError(Exception):
    """A mistake by the user (a bad flag, a bad value, a missing file): reported as one line, exit code 2."""


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (hi=None: no upper bound)."""
    rule = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; must be {rule}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"got {value}; must be {rule}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def float_range(lo: float, hi: float | None = None, *, lo_open: bool = True) -> Callable[[str], float]:
    """A finite float > lo (or >= lo when lo_open is False), and <= hi when given."""
    rule = f"a number {'>' if lo_open else '>='} {lo:g}" + ("" if hi is None else f" and <= {hi:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; must be {rule}") from None
        too_low = value <= lo if lo_open else value < lo
        if not math.isfinite(value) or too_low or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"got {text}; must be {rule}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
positive_float = float_range(0.0)


def clip_words(text: str, limit: int = 120) -> str:
    """``text`` on one line, cut at a word boundary with an ellipsis when it is longer than ``limit`` characters."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 2].rsplit(" ", 1)[0]  # room for " …"
    return cut.rstrip(" ,;:.(") + " …"


def usable_device(name: str, flag: str = "--device"):
    """``torch.device(name)``, checked to work here; a UsageError naming the flag, the value and the fix otherwise
    (a name torch does not know, or a device this machine lacks)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{flag} {name!r}: not a torch device name; give e.g. {flag} cpu (or cuda, cuda:1, mps)") \
            from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise UsageError(f"{flag} {name}: not usable on this machine ({clip_words(exc)}); use {flag} cpu") from None
    return device


def resume_error(checkpoint, exc: Exception | str) -> UsageError:
    """A UsageError for a checkpoint given to --resume whose checkpoint.json does not rebuild the run (a model config
    or vocabulary that is missing, malformed, or does not fit the weights)."""
    msg, path = " ".join(str(exc).split()), str(checkpoint.path)
    if msg.startswith(path):  # a CheckpointError names the checkpoint already
        msg = msg[len(path):].lstrip(": ")
    fix = "" if "retrain" in msg else "; the checkpoint is damaged or not this command's: resume another one or retrain"
    return UsageError(f"--resume {path}: {msg}{fix}")
