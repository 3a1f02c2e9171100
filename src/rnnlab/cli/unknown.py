"""Input outside a model's vocabulary, said rather than swallowed: what ``translate``, ``predict``, ``eval`` and
``generate --prompt`` share.

``count_unknown`` counts the tokens (characters or words) of the input that the vocabulary lacks; ``unknown_note``
writes the note naming how many and which (the most frequent few, with ``repr`` so a space or a tab is visible) when
the vocabulary has ``<unk>`` to read them as, and raises a UsageError (one line, exit code 2) when it has none;
``say`` prints the note as one line ``rnnlab: note: ...`` on stderr (nothing when every token is known). A command
checks before it encodes, and says the note once the input has passed its other checks, so an error stays the one
line on stderr. A literal ``<unk>`` in the input is in the vocabulary, so it is not counted.
"""
from __future__ import annotations

from collections import Counter
from typing import Container, Iterable, Sequence

from ..data import token_cache
from .options import UsageError

SHOWN = 5  # the most frequent unknown tokens a message names
LONGEST = 24  # a longer token (a URL, a run of symbols) is cut to this many characters in a message


def count_unknown(known: Container[str], sequences: Iterable[Sequence[str]]) -> tuple[Counter, int]:
    """(Counter of the tokens not in ``known``, the number of tokens read) over ``sequences`` of tokens.
    ``known``: anything that answers ``in`` — a ``SymbolVocab``, or a ``Vocab``'s ``stoi``."""
    unknown: Counter = Counter()
    total = 0
    for seq in sequences:
        total += len(seq)
        unknown.update(t for t in seq if t not in known)
    return unknown, total


def describe_tokens(unknown: Counter, shown: int = SHOWN) -> str:
    """``' ' ×3, 'z' ×1`` — the most frequent ``shown`` tokens (ties in first-seen order), then how many others."""
    parts = []
    for tok, n in unknown.most_common(shown):
        text = repr(tok if len(tok) <= LONGEST else tok[:LONGEST - 1] + "…")
        if len(tok) == 1 and not tok.isascii():  # a code point tells apart look-alikes (é and e + U+0301 ...)
            text += f" U+{ord(tok):04X}"
        parts.append(f"{text} ×{n:,}")
    rest = len(unknown) - shown
    return ", ".join(parts) + (f" and {rest:,} other{'s' if rest > 1 else ''}" if rest > 0 else "")


def unknown_note(unknown: Counter, total: int, *, unit: str, where: str, has_unk: bool, fix: str,
                 whose: str = "the model's vocabulary") -> str:
    """'' when ``unknown`` is empty. Else the note that says how many tokens were read as ``<unk>`` and which; or,
    when the vocabulary has no ``<unk>`` (they cannot be read at all), a UsageError naming them and ``fix``.

    ``unit``: what a token is, plural ('characters', 'words'); ``where``: the input ('--file in.txt', '--prompt',
    'stdin'); ``whose``: the vocabulary ('the model's vocabulary', 'the vocabulary of runs/a/best')."""
    n = sum(unknown.values())
    if not n:
        return ""
    one = unit[:-1] if unit.endswith("s") else unit
    what = (f"{n:,} of {total:,} {unit if total != 1 else one} in {where} {'is' if n == 1 else 'are'} not in "
            f"{whose} ({describe_tokens(unknown)})")
    if not has_unk:
        raise UsageError(f"{what}, which has no <unk> token to read {'it' if n == 1 else 'them'} as; {fix}")
    return f"{what}; {'it was' if n == 1 else 'they were'} read as <unk>"


def say(note: str) -> None:
    """Print ``note`` (when not empty) on stderr as one line ``rnnlab: note: ...``."""
    if note:
        token_cache.say(note)


def check_input(known: Container[str], sequences: Iterable[Sequence[str]], *, unit: str, where: str, has_unk: bool,
                fix: str, whose: str = "the model's vocabulary") -> str:
    """``count_unknown`` then ``unknown_note``: the note to ``say`` once the input has passed its other checks (''
    when every token is known); a UsageError when some are unknown and the vocabulary has no <unk>."""
    unknown, total = count_unknown(known, sequences)
    return unknown_note(unknown, total, unit=unit, where=where, has_unk=has_unk, fix=fix, whose=whose)


def check_lm_text(vocab, text: str, where: str) -> str:
    """``check_input`` for a language model's ``Vocab`` (``rnnlab eval`` and ``generate --prompt``): its characters
    or words. A character vocabulary has <unk> only when its validation / test text had characters the training text
    lacked; a word vocabulary always has it (an unknown word is a note). Byte-level BPE reads any text: nothing to
    check."""
    if vocab.level == "bpe":
        return ""
    unknown, total = count_unknown(vocab.stoi, [text] if vocab.level == "char" else [text.split()])
    return lm_unknown_note(vocab, unknown, total, where)


def lm_unknown_note(vocab, unknown: Counter, total: int, where: str) -> str:
    """``check_lm_text``'s note (or UsageError) from counts already made: the token cache counts while it encodes."""
    if vocab.level == "bpe":
        return ""
    unit = "characters" if vocab.level == "char" else "words"
    return unknown_note(unknown, total, unit=unit, where=where, has_unk=vocab.unk_id is not None,
                        fix=f"remove or replace these {unit}, or retrain with them in the training text (or in "
                            "a --valid / --test text: that gives a character vocabulary <unk>)")
