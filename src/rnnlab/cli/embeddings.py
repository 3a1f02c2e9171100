"""``--embeddings FILE`` and ``--freeze-embeddings``: start a model's word embedding from pretrained vectors (GloVe,
word2vec / fastText text, optionally .gz; the reader is ``rnnlab.data.vectors``), shared by ``rnnlab train classify``
and ``rnnlab train tag``.

A command builds its vocabulary with ``vocabulary(o, given, build)`` (a word rarer than ``--min-count`` is kept
when the file has a vector for it) before building its model (the vectors fix ``--emb``), ``load(embedding, rows, o, pad_id)`` on the new model, and ``freeze(embedding, o)`` on every run,
resumed ones included (a resumed run keeps its options; its weights are already in the checkpoint, so the file is
not read again).
"""
from __future__ import annotations

import argparse

from torch import nn

from ..data.text import DataError
from ..data.vectors import PretrainedRows, load_into, read_vectors
from .options import UsageError

DEFAULTS = {
    "embeddings": None,  # none: the embedding is trained from scratch
    # Fine-tune the vectors: Kim (2014, "non-static") and Tai et al. (2015) found tuned vectors better than fixed
    # ones on sentence classification; fixed ones help when the training set covers few of the test words.
    "freeze_embeddings": False,
}
FLAGS = tuple(DEFAULTS)


def add_flags(g: argparse._ArgumentGroup) -> None:
    """The two flags, in a command's "model" group."""
    g.add_argument("--embeddings", metavar="FILE", help="start the word embedding from pretrained vectors: a GloVe "
                   "or word2vec/fastText text file ('word v_1 ... v_E' per line; .gz too). Sets --emb to their "
                   "dimension; training words rarer than --min-count still get a row when the file has them; words "
                   "the file lacks keep a random start (default: none, trained from scratch)")
    g.add_argument("--freeze-embeddings", action="store_true", default=None, help="keep the pretrained vectors "
                   "fixed instead of fine-tuning them (default: fine-tune)")


def read(o: dict, words: list[str], given: dict) -> PretrainedRows | None:
    """The rows of ``words`` in ``o["embeddings"]`` (None without the flag); sets ``o["emb"]`` to their dimension.
    A UsageError (one line) for a bad file, an --emb that contradicts it, or --freeze-embeddings alone."""
    path = o.get("embeddings")
    if not path:
        if o.get("freeze_embeddings"):
            raise UsageError("--freeze-embeddings keeps pretrained vectors fixed, and no --embeddings FILE was given; "
                             "add --embeddings FILE or drop --freeze-embeddings")
        return None
    try:
        rows = read_vectors(path, words)
    except DataError as exc:
        raise UsageError(f"--embeddings {exc}") from None
    if "emb" in given and given["emb"] != rows.dim:
        raise UsageError(f"--emb {given['emb']} contradicts --embeddings {path}, whose vectors have {rows.dim} "
                         f"dimensions; drop --emb (it follows the vectors) or give --emb {rows.dim}")
    o["emb"] = rows.dim
    return rows


def vocabulary(o: dict, given: dict, build):
    """(vocabulary, its rows or None) for a new run: ``build(min_count, keep)`` builds the command's vocabulary from
    its training data. With --embeddings the vectors of every training word are read once, and a word rarer than
    --min-count is kept when the file has a vector for it: it needs no training examples to get a useful row."""
    if not o.get("embeddings"):
        read(o, [], given)  # only checks that --freeze-embeddings has vectors to freeze
        return build(o["min_count"], frozenset()), None
    words = build(1, frozenset()).words.itos  # every training word
    rows = read(o, words, given)  # (V_all, E); sets o["emb"]
    vocab = build(o["min_count"], {w for w, f in zip(words, rows.found.tolist()) if f})
    return vocab, rows.reindex(words, vocab.words.itos)  # (V, E)


def load(embedding: nn.Embedding, rows: PretrainedRows | None, o: dict, pad_id: int) -> str:
    """Copy the found rows into ``embedding`` (never the padding row); the line to print ('' without vectors)."""
    if rows is None:
        return ""
    n = load_into(embedding, rows, skip=(pad_id,))
    words = embedding.num_embeddings - 1  # the padding row is not a word
    return (f"embeddings: {o['embeddings']}: {n:,} of {words:,} vocabulary words found ({100 * n / max(words, 1):.1f}%)"
            f", {rows.dim} dimensions, {'fixed' if o.get('freeze_embeddings') else 'fine-tuned'}; the rest start "
            "random")


def freeze(embedding: nn.Embedding, o: dict) -> None:
    """With --freeze-embeddings, the embedding gets no gradient (the optimizer then leaves it as it is)."""
    if o.get("freeze_embeddings"):
        embedding.weight.requires_grad_(False)
