"""Sequence-to-sequence as a trainer task: the loss of one batch (teacher forcing, optional scheduled sampling),
evaluation (token accuracy, exact match, exact match by source-length bucket), decoding text, and reading a trained
model back from its checkpoint.

    trainer = Trainer(model, Seq2SeqTask(model), SymbolTask("reverse"), valid, options, out_dir=...)
    evaluate_seq2seq(model, valid)     # {"loss", "token_accuracy", "exact_match", "by_length", ...}

Batches are ``rnnlab.data.seq2seq.Seq2SeqBatch``es. The task is stateless (every pair starts from its own source),
so resuming a run needs nothing but the data position (and the RNG, which the trainer restores, for scheduled
sampling's coins).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.seq2seq import Seq2SeqVocab, encode_pairs, make_batch
from ..data.synthetic import IGNORE
from ..models.seq2seq import build_seq2seq
from .checkpoint import CheckpointError, load_checkpoint
from .compat import check_kind, check_vocab_fits

DEFAULT_BUCKET = 10  # source lengths 0-9, 10-19, ...: five buckets over the default lengths 5-50


def _device(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


class Seq2SeqTask:
    """Cross-entropy of the target tokens y_1 ... y_n <eos> under teacher forcing, averaged over the batch's target
    tokens (padding ignored). ``sampling_prob`` > 0: scheduled sampling in training (Bengio et al. 2015), with a
    fixed probability; evaluation always feeds the true tokens."""

    def __init__(self, model: nn.Module, device: torch.device | str | None = None, sampling_prob: float = 0.0) -> None:
        self.model = model
        self.device = _device(model, device)
        if isinstance(sampling_prob, bool) or not isinstance(sampling_prob, (int, float)) or \
                not 0 <= sampling_prob <= 1:
            raise ValueError(f"sampling_prob must be a number in [0, 1] (the probability of feeding the model's own "
                             f"previous token); got {sampling_prob!r}")
        self.sampling_prob = float(sampling_prob)

    def logits(self, batch):
        p = self.sampling_prob if self.model.training else 0.0
        return self.model(batch.src.to(self.device), batch.src_lengths, batch.tgt_in.to(self.device),
                          sampling_prob=p)  # (B, T, V)

    def step(self, batch, state):
        logits = self.logits(batch)  # (B, T, V)
        gold = batch.tgt_out.to(self.device)  # (B, T)
        n = int((gold != IGNORE).sum())
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")  # over the B*T positions
        return loss / max(n, 1), n, state

    def metrics(self, loss: float) -> dict:
        return {"loss": loss}


def _bucket_name(lo: int, hi: int) -> str:
    return f"{lo}-{hi}" if lo != hi else f"{lo}"


@torch.no_grad()
def evaluate_seq2seq(model: nn.Module, data, *, beam: int = 1, length_penalty: float = 1.0,
                     max_len: int | None = None, bucket_width: int = DEFAULT_BUCKET,
                     device: torch.device | str | None = None) -> dict:
    """Over all batches of ``data`` (epoch 0), in eval mode:

    - ``loss``: mean cross-entropy per target token (teacher forcing);
    - ``token_accuracy``: share of target tokens (with <eos>) whose argmax under teacher forcing is right;
    - ``exact_match``: share of sequences whose decoded output (greedy, or beam search with ``beam`` > 1) equals
      the target exactly, <eos> included;
    - ``by_length``: exact match per bucket of source lengths [k*w, k*w + w - 1] that occurs, as
      ``{"lengths": "40-49", "n": ..., "exact_match": ...}``; ``n`` sequences, ``tokens`` target tokens.
    """
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise ValueError(f"beam must be an integer >= 1 (1: greedy decoding); got {beam!r}")
    if isinstance(bucket_width, bool) or not isinstance(bucket_width, int) or bucket_width < 1:
        raise ValueError(f"bucket_width must be an integer >= 1; got {bucket_width!r}")
    device = _device(model, device)
    task = Seq2SeqTask(model, device)
    was = model.training
    model.eval()
    loss_sum, right, tokens, exact, n = 0.0, 0, 0, 0, 0
    buckets: dict[int, list] = {}  # bucket start -> [exact, count, shortest, longest]
    try:
        for batch in (data.batches(0) if hasattr(data, "batches") else data):
            logits = task.logits(batch)  # (B, T, V)
            gold = batch.tgt_out.to(device)  # (B, T)
            keep = gold != IGNORE  # (B, T)
            loss_sum += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1),
                                              ignore_index=IGNORE, reduction="sum"))
            right += int(((logits.argmax(-1) == gold) & keep).sum())
            tokens += int(keep.sum())
            src = batch.src.to(device)
            decoded = (model.greedy(src, batch.src_lengths, max_len) if beam == 1 else
                       model.beam_search(src, batch.src_lengths, beam, length_penalty, max_len))
            for b, d in enumerate(decoded):
                want = gold[b, keep[b]].tolist()  # y_1 ... y_n <eos>
                ok = d.finished and d.ids + [model.eos_id] == want
                exact += ok
                n += 1
                length = int(batch.src_lengths[b])
                k = (length // bucket_width) * bucket_width
                bk = buckets.setdefault(k, [0, 0, length, length])
                bk[0] += ok
                bk[1] += 1
                bk[2], bk[3] = min(bk[2], length), max(bk[3], length)
    finally:
        model.train(was)
    if n == 0:
        raise ValueError("evaluation data has no batches")
    return {"loss": loss_sum / tokens, "token_accuracy": right / tokens, "exact_match": exact / n, "n": n,
            "tokens": tokens, "decoding": "greedy" if beam == 1 else f"beam {beam}",
            "by_length": [{"lengths": _bucket_name(lo, hi), "n": count, "exact_match": ok / count}
                          for _, (ok, count, lo, hi) in sorted(buckets.items())]}


@torch.no_grad()
def translate(model: nn.Module, vocab: Seq2SeqVocab, sources: list[str], *, beam: int = 1,
              length_penalty: float = 1.0, max_len: int | None = None, batch_size: int = 64,
              device: torch.device | str | None = None) -> list:
    """The decoded ``Decoded`` (ids, finished, score, attention) of each source text, in the given order; decode
    the ids with ``vocab.decode_target``. Sources are batched by length (greedy) or searched one by one (beam)."""
    from ..data.seq2seq import Pair

    device = _device(model, device)
    encoded = encode_pairs([Pair(s, None, i + 1) for i, s in enumerate(sources)], vocab)
    for i, e in enumerate(encoded):
        if not e.words:
            raise ValueError(f"source {i + 1} is empty; every line needs something to translate")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].words))
    out: list = [None] * len(encoded)
    for k in range(0, len(order), batch_size):
        index = order[k:k + batch_size]
        batch = make_batch([encoded[i].words for i in index], [None] * len(index))
        src = batch.src.to(device)
        decoded = (model.greedy(src, batch.src_lengths, max_len) if beam == 1 else
                   model.beam_search(src, batch.src_lengths, beam, length_penalty, max_len))
        for i, d in zip(index, decoded):
            out[i] = d
    return out


def seq2seq_sizes(vocab: Seq2SeqVocab) -> list[tuple[str, int, str]]:
    """What ``check_vocab_fits`` compares for an encoder-decoder: source and target vocabularies."""
    return [("source vocabulary", len(vocab.src), "src_vocab"), ("target vocabulary", len(vocab.tgt), "tgt_vocab")]


def load_seq2seq(path: str | Path, prefer: str = "best", device: str | torch.device = "cpu"):
    """(model in eval mode, vocab, checkpoint) from a checkpoint or run directory written by ``rnnlab train
    seq2seq`` (or a Trainer whose meta holds ``vocab`` = ``Seq2SeqVocab.to_json()``)."""
    ckpt = load_checkpoint(path, prefer)
    config = check_kind(ckpt.path, ckpt.meta, ("seq2seq",), "an encoder-decoder (seq2seq) model",
                        "rnnlab train seq2seq")
    vocab_json = ckpt.meta["vocab"]
    try:
        model = build_seq2seq(config)
        vocab = Seq2SeqVocab.from_json(vocab_json)
    except ValueError as exc:
        raise CheckpointError(f"{ckpt.path / 'checkpoint.json'}: {exc}; the checkpoint is damaged: use another "
                              "one (the run's best/ or last/) or retrain") from None
    check_vocab_fits(ckpt.path, config, seq2seq_sizes(vocab))
    ckpt.load_model(model)
    return model.to(device).eval(), vocab, ckpt
