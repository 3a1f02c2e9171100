"""Pretrained word vectors from a text file: GloVe (``word v_1 ... v_E`` per line), word2vec / fastText ``.vec``
(the same after a ``count dim`` header line), optionally gzip-compressed (``.gz``).

Only the rows of words in the model's vocabulary are kept, so a 2-GB GloVe file costs one pass over it and a
(V, E) matrix, not the whole file in memory. A word the file lacks keeps the model's own random initialisation;
a word whose exact form is missing but whose lowercase form is present takes that row (GloVe 6B is lowercase; a
cased vocabulary still finds "The" under "the"), an exact match always winning over a lowercase one.

Hand-written rather than gensim's ``KeyedVectors.load_word2vec_format``: the format is one line per word, and
gensim would add a scipy-sized dependency for these few lines.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .text import DataError


@dataclass
class PretrainedRows:
    """``vectors`` (V, E) float32, ``found`` (V,) bool: which vocabulary rows the file gave, and the file's
    dimension ``dim``."""

    vectors: Tensor
    found: Tensor
    dim: int

    def reindex(self, words: list[str], new_words: list[str]) -> "PretrainedRows":
        """The rows for ``new_words`` of rows read for ``words`` (a word not among ``words``: not found)."""
        index = {w: i for i, w in enumerate(words)}
        take = torch.tensor([index.get(w, -1) for w in new_words], dtype=torch.long)  # (V',)
        known = take >= 0  # (V',)
        vectors = torch.zeros(len(new_words), self.dim)  # (V', E)
        vectors[known] = self.vectors[take[known]]
        found = torch.zeros(len(new_words), dtype=torch.bool)  # (V',)
        found[known] = self.found[take[known]]
        return PretrainedRows(vectors, found, self.dim)


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_vectors(path: str | Path, words: list[str]) -> PretrainedRows:
    """The rows of ``words`` (the vocabulary, index = id) found in the vectors file ``path``.

    Raises DataError (file, line) for a file that is not a vectors file: a line whose numbers do not parse, or
    whose count differs from the first vector's; a file with no vector at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such vectors file; give a GloVe or word2vec text file (.txt, .vec, or .gz)")
    index: dict[str, int] = {}
    lower: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        index.setdefault(w, i)
        lower.setdefault(w.lower(), []).append(i)
    dim = None
    rows: dict[int, list[float]] = {}
    exact: set[int] = set()
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])  # word2vec/fastText header "count dim"
                continue
            if len(parts) < 2:
                if not line.strip():
                    continue
                raise DataError(f"{path}: line {n}: expected 'word v_1 ... v_E' (space-separated); got "
                                f"{line.strip()[:40]!r}. Is this a GloVe / word2vec text file?")
            if dim is None:
                dim = len(parts) - 1
            elif len(parts) - 1 < dim:
                raise DataError(f"{path}: line {n}: {len(parts) - 1} numbers, but the first vector has {dim}; every "
                                "line must have the same dimension")
            # The last dim fields are the vector; more fields before them are a word with spaces in it (GloVe 840B
            # has a few such lines).
            word, parts = " ".join(parts[:-dim]), parts[-dim - 1:]
            targets = [(index[word], True)] if word in index else []  # (vocabulary id, exact match)
            if word == word.lower():  # a lowercase file word also fills cased vocabulary words without their own row
                targets += [(i, False) for i in lower.get(word, ()) if i != index.get(word) and i not in exact]
            if not targets:
                continue
            try:
                vec = [float(v) for v in parts[1:]]
            except ValueError:
                raise DataError(f"{path}: line {n}: a value of {word!r} is not a number; expected 'word v_1 ... "
                                f"v_{dim}'") from None
            for i, is_exact in targets:
                rows[i] = vec
                if is_exact:
                    exact.add(i)
    if dim is None:
        raise DataError(f"{path}: no vectors in the file; expected lines 'word v_1 ... v_E'")
    vectors = torch.zeros(len(words), dim)  # (V, E)
    found = torch.zeros(len(words), dtype=torch.bool)  # (V,)
    for i, vec in rows.items():
        vectors[i] = torch.tensor(vec)
        found[i] = True
    return PretrainedRows(vectors, found, dim)


def load_into(embedding: torch.nn.Embedding, rows: PretrainedRows, *, skip: tuple[int, ...] = ()) -> int:
    """Copy the found rows into ``embedding.weight`` (other rows keep their initialisation); ``skip`` ids (e.g.
    padding) are never written. Returns the number of rows copied. The sizes must agree."""
    V, E = embedding.weight.shape
    if rows.dim != E:
        raise ValueError(f"the vectors have {rows.dim} dimensions but the embedding has {E}; build the model with "
                         f"emb={rows.dim}")
    if rows.vectors.shape[0] != V:
        raise ValueError(f"the vectors cover {rows.vectors.shape[0]} words but the embedding has {V} rows; read "
                         "them with the model's own vocabulary")
    mask = rows.found.clone()  # (V,)
    for i in skip:
        mask[i] = False
    with torch.no_grad():
        embedding.weight[mask] = rows.vectors[mask].to(embedding.weight)  # (n, E)
    return int(mask.sum())
